"""Admin pages: doctors, the audit log, the models being served with usage figures, and their monitoring."""

import datetime as dt

import sqlalchemy as sa
from flask import Blueprint, Response, abort, current_app, flash, g, redirect, render_template, request, url_for

from portal import sessions
from portal.accounts import AccountError, create_from_form
from portal.models import AuditEvent, Job, Report, Role, Scan, ServiceStatus, User, db, utcnow
from portal.security import WeakPassword, record, role_required, unlock

bp = Blueprint("admin", __name__, url_prefix="/admin")
AUDIT_PAGE = 200


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
    locked = db.session.scalars(db.select(User).where(User.locked_until > utcnow()).order_by(User.email)).all()
    return render_template("admin/doctors.html", doctors=listed, locked=locked, new_user_title="Add a doctor")


@bp.post("/users/<int:user_id>/<any(unlock, disable, enable):action>")
@role_required(Role.ADMIN)
def account(user_id: int, action: str):
    """Unlocks an account locked by failed logins, or disables (every session ended) / enables it."""
    user = db.session.get(User, user_id)
    if user is None:
        abort(404)
    if action == "unlock":
        unlock(user)
    elif user.id == g.user.id:
        flash("You cannot disable your own account.", "error")
        return redirect(url_for("admin.doctors"))
    else:
        user.active = action == "enable"
        if not user.active:
            sessions.revoke_all(user)
    done = {"unlock": "unlocked", "disable": "disabled", "enable": "enabled"}[action]
    record(f"account_{done}", user)
    db.session.commit()
    flash(f"{user.email}: {done}.", "info")
    return redirect(url_for("admin.doctors"))


@bp.get("/audit")
@role_required(Role.ADMIN)
def audit():
    """The audit log, newest first, AUDIT_PAGE events a page (``before``: older than that event id), filtered by
    ``action`` when given."""
    query = db.select(AuditEvent).order_by(AuditEvent.id.desc()).limit(AUDIT_PAGE)
    before = request.args.get("before", type=int)
    action = request.args.get("action", "").strip()
    if before:
        query = query.where(AuditEvent.id < before)
    if action:
        query = query.where(AuditEvent.action == action)
    events = db.session.scalars(query).all()
    record("audit_viewed", detail=f"before={before} action={action}" if before or action else None)
    db.session.commit()
    older = events[-1].id if len(events) == AUDIT_PAGE else None
    return render_template("admin/audit.html", events=events, older=older, action=action)


@bp.get("/feedback.csv")
@role_required(Role.ADMIN)
def feedback_export():
    """Every signed reading as CSV for the platform team: scan and image ids, model, class and label; no names."""
    from portal import feedback

    records = feedback.rows()
    record("feedback_exported", detail=f"{len(records)} readings")
    db.session.commit()
    return Response(feedback.to_csv(records), mimetype="text/csv",
                    headers={"Content-Disposition": 'attachment; filename="radassist-feedback.csv"'})


STALE_STATUS = dt.timedelta(minutes=2)


def served_versions() -> tuple[list[dict], str | None, ServiceStatus | None]:
    """The models' versions as the report workers last saw them (each with its ``model``: the classifier's, then
    the segmenter's), a problem to show (or None), and that report."""
    row = db.session.get(ServiceStatus, ServiceStatus.MODEL_SERVER)
    if row is None:
        return [], "No report worker has reported on the model server yet.", None
    status = row.status
    problem = f"The model server did not answer: {status['error']}" if status.get("error") else None
    if utcnow() - row.updated_at > STALE_STATUS:
        problem = (f"No report worker has reported since {row.updated_at:%Y-%m-%d %H:%M} UTC (last: "
                   f"{row.reported_by}); reports may not be being written.")
    config = current_app.config
    versions = [{**version, "model": config["MODEL_NAME"]} for version in status.get("versions", [])]
    segmenter = status.get("segmenter")
    if segmenter:
        versions += [{**version, "model": segmenter["name"]} for version in segmenter["versions"]]
        if segmenter.get("error") and not problem:
            problem = (f"The segmentation model {segmenter['name']} did not answer: {segmenter['error']} "
                       "(reports are written without lesion outlines)")
    return versions, problem, row


@bp.get("/models")
@role_required(Role.ADMIN)
def models():
    config = current_app.config
    versions, server_error, reported = served_versions()
    week_ago = utcnow() - dt.timedelta(days=7)
    count = lambda query: db.session.scalar(query) or 0  # noqa: E731
    usage = {
        "doctors": count(sa.select(sa.func.count()).select_from(User).where(User.role == Role.DOCTOR.value)),
        "patients": count(sa.select(sa.func.count()).select_from(User).where(User.role == Role.PATIENT.value)),
        "scans": count(sa.select(sa.func.count()).select_from(Scan)),
        "scans_last_7_days": count(sa.select(sa.func.count()).select_from(Scan).where(Scan.created_at >= week_ago)),
        "reports_final": count(sa.select(sa.func.count()).select_from(Report).where(Report.status == "final")),
        "reports_draft": count(sa.select(sa.func.count()).select_from(Report).where(Report.status == "draft")),
        "reports_uncertain": count(sa.select(sa.func.count()).select_from(Report).where(Report.uncertain)),
        "reports_out_of_domain": count(sa.select(sa.func.count()).select_from(Report)
                                       .where(Report.in_domain.is_(False))),
    }
    jobs = dict(db.session.execute(sa.select(Job.status, sa.func.count()).group_by(Job.status)).all())
    by_model = db.session.execute(
        sa.select(Report.model_name, Report.model_version, sa.func.count(), sa.func.max(Report.created_at),
                  sa.func.sum(sa.case((Report.in_domain.is_(False), 1), else_=0)),
                  sa.func.sum(sa.case((Report.uncertain & Report.in_domain.is_not(False), 1), else_=0)))
        .where(Report.version == 1).group_by(Report.model_name, Report.model_version)
        .order_by(Report.model_version.desc())).all()
    record("models_viewed")
    db.session.commit()
    return render_template("admin/models.html", model_name=config["MODEL_NAME"], versions=versions,
                           server_error=server_error, reported=reported, usage=usage, jobs=jobs,
                           by_model=by_model)


@bp.get("/monitoring")
@role_required(Role.ADMIN)
def monitoring():
    """The monitoring pipeline's windows for a model: drift per feature group against its threshold, OOD and review
    shares, confidence, class mix and the doctors' agreement, each point linking to that window's report."""
    from portal import monitoring as published

    config = current_app.config
    models = [config["MODEL_NAME"]]
    model = request.args.get("model", config["MODEL_NAME"])
    if model not in models:
        abort(404)
    root = config["MONITORING_DIR"]
    summaries = published.window_summaries(root, model)
    links = [url_for("admin.monitoring_report", model=model, label=s["window"]["label"]) for s in summaries]
    agreements = published.agreement(summaries, model)
    charts, legends = published.charts(summaries, agreements, links) if summaries else ({}, {})
    record("monitoring_viewed")
    db.session.commit()
    return render_template("admin/monitoring.html", model=model, root=root, summaries=summaries, links=links,
                           agreements=agreements, charts=charts, legends=legends,
                           labelled=[published.labelled_accuracy(s) for s in summaries])


@bp.get("/monitoring/<model>/<label>")
@bp.get("/monitoring/<model>/<label>/<page>")
@role_required(Role.ADMIN)
def monitoring_report(model: str, label: str, page: str = "report"):
    """One window's page: its drift report (TFDV's measurements and each feature's distribution against the
    baseline) or ``evaluation`` (TFMA's slicing metrics over the calls doctors labelled)."""
    from flask import send_file

    from portal import monitoring as published

    path = published.report_path(current_app.config["MONITORING_DIR"], model, label, page)
    if path is None:
        abort(404)
    g.csp_sandbox = True  # a generated page: no scripts, forms or same-origin rights even if one slipped in
    return send_file(path, mimetype="text/html", max_age=0)
