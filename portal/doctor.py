"""Doctor pages: their own patients only."""

from flask import Blueprint, abort, flash, g, jsonify, redirect, render_template, request, url_for

from portal import worklist
from portal.accounts import AccountError, create_from_form
from portal.extensions import limiter, new_account_limit, user_key
from portal.models import Role, Scan, User, db
from portal.reports import scan_table
from portal.security import WeakPassword, record, role_required
from portal.uploads import save_upload, upload_status

bp = Blueprint("doctor", __name__, url_prefix="/doctor")


def own_patient(patient_id: int) -> User:
    """The current doctor's patient, or 404 (never revealing that someone else's patient exists)."""
    patient = db.session.get(User, patient_id)
    if patient is None or patient.role != Role.PATIENT.value or patient.doctor_id != g.user.id:
        abort(404)
    return patient


@bp.route("/patients", methods=["GET", "POST"])
@role_required(Role.DOCTOR)
@limiter.limit(new_account_limit, methods=["POST"], key_func=user_key)
def patients():
    """The doctor's patients; POST adds one. Creating accounts is rate-limited per doctor and every refusal is
    audited: the form cannot be used to sweep for which emails have accounts."""
    if request.method == "POST":
        try:
            patient = create_from_form(request.form, Role.PATIENT, doctor=g.user)
        except (AccountError, WeakPassword) as error:
            db.session.rollback()
            record("account_creation_refused", detail=f"{request.form.get('email', '')[:254]!r}: {error}")
            db.session.commit()
            flash(str(error), "error")
        else:
            record("patient_created", patient)
            db.session.commit()
            return redirect(url_for("doctor.patient", patient_id=patient.id))
    listed = db.session.scalars(db.select(User).where(User.doctor_id == g.user.id).order_by(User.name)).all()
    return render_template("doctor/patients.html", patients=listed, new_user_title="Add a patient")


@bp.get("/patients/<int:patient_id>")
@role_required(Role.DOCTOR)
def patient(patient_id: int):
    found = own_patient(patient_id)
    record("patient_viewed", found)
    db.session.commit()
    scans = db.session.scalars(db.select(Scan).where(Scan.patient_id == found.id).order_by(Scan.id.desc())).all()
    return render_template("doctor/patient.html", patient=found, **scan_table(scans, g.user))


@bp.post("/patients/<int:patient_id>/scans")
@role_required(Role.DOCTOR)
def upload(patient_id: int):
    found = own_patient(patient_id)
    result = save_upload(found, g.user, self_submitted=False)
    return render_template("upload_result.html", patient=found, result=result,
                           back=url_for("doctor.patient", patient_id=found.id)), upload_status(result)


@bp.get("/worklist")
@role_required(Role.DOCTOR)
def worklist_page():
    """All the doctor's scans, what needs a human first; filters, order and page live in the URL."""
    try:
        filters = worklist.Filters.from_args(request.args)
    except worklist.FilterError as error:
        flash(f"Worklist filter not understood: {error}. Showing the whole worklist.", "error")
        return redirect(url_for("doctor.worklist_page"))
    if filters.patient_id:
        own_patient(filters.patient_id)
    if filters.batch_id:
        from portal.report_pages import visible_batch

        visible_batch(filters.batch_id)
    found = worklist.page(g.user, filters)
    patients_listed = db.session.scalars(db.select(User).where(User.doctor_id == g.user.id).order_by(User.name)).all()
    html = render_template("doctor/worklist.html", page=found, filters=filters, patients=patients_listed,
                           classes=worklist.classes(g.user), states=worklist.STATES, flags=worklist.FLAGS,
                           sorts=worklist.SORTS, page_sizes=worklist.PAGE_SIZES)
    # Audited after rendering: a commit expires the loaded rows, which the page would then read again one by one.
    record("worklist_viewed", detail=f"{filters.query_string() or 'default'}: {len(found.rows)} of {found.total}")
    db.session.commit()
    return html


@bp.get("/worklist/rows")
@role_required(Role.DOCTOR)
def worklist_rows():
    """Live updates: the rows of the given scans (``?scan=1&scan=2``, at most 100), rendered as on the page."""
    scan_ids = [int(value) for value in request.args.getlist("scan")[:100] if value.isdigit()]
    context = request.args.get("worklist", "")
    rows = worklist.rows(g.user, scan_ids)
    template = "doctor/_worklist_row.html"
    return jsonify({"rows": [{"scan": row.scan.id, "settled": row.settled,
                              "html": render_template(template, row=row, worklist_query=context)}
                             for row in rows]})
