"""Admin pages: doctors and the audit log."""

from flask import Blueprint, flash, redirect, render_template, request, url_for

from portal.accounts import AccountError, create_from_form
from portal.models import AuditEvent, Role, User, db
from portal.security import WeakPassword, record, role_required

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.route("/doctors", methods=["GET", "POST"])
@role_required(Role.ADMIN)
def doctors():
    if request.method == "POST":
        try:
            doctor = create_from_form(request.form, Role.DOCTOR)
        except (AccountError, WeakPassword) as error:
            db.session.rollback()
            flash(str(error), "error")
        else:
            record("doctor_created", doctor)
            db.session.commit()
            flash(f"Doctor {doctor.email} created.", "info")
            return redirect(url_for("admin.doctors"))
    listed = db.session.scalars(db.select(User).where(User.role == Role.DOCTOR.value).order_by(User.name)).all()
    return render_template("admin/doctors.html", doctors=listed, new_user_title="Add a doctor")


@bp.get("/audit")
@role_required(Role.ADMIN)
def audit():
    events = db.session.scalars(db.select(AuditEvent).order_by(AuditEvent.id.desc()).limit(500)).all()
    record("audit_viewed")
    db.session.commit()
    return render_template("admin/audit.html", events=events)
