"""Patient pages: their own record only."""

from flask import Blueprint, g, render_template, url_for

from portal.models import Role, Scan, db
from portal.reports import scan_table
from portal.security import role_required
from portal.uploads import save_upload, upload_status

bp = Blueprint("patient", __name__, url_prefix="/me")


@bp.get("/")
@role_required(Role.PATIENT)
def home():
    scans = db.session.scalars(db.select(Scan).where(Scan.patient_id == g.user.id).order_by(Scan.id.desc())).all()
    return render_template("patient/home.html", patient=g.user, **scan_table(scans, g.user))


@bp.post("/scans")
@role_required(Role.PATIENT)
def upload():
    result = save_upload(g.user, g.user, self_submitted=True)
    return render_template("upload_result.html", patient=g.user, result=result, back=url_for("patient.home")), \
        upload_status(result)
