"""Report pages: view, findings, sign-off, amendments, PDF, overlay; and the bulk-upload progress page.

Every lookup goes through ``visible_report`` / ``visible_batch``: someone else's object is a 404, never a hint
that it exists. Patients see final reports, and the model's draft only for scans they submitted themselves.
"""

from urllib.parse import parse_qsl

from flask import Blueprint, Response, abort, flash, g, redirect, render_template, request, url_for

from portal import reports, segmentation, worklist
from portal.extensions import blobs, report_jobs
from portal.jobs import batch_progress, enqueue_scans, latest_jobs
from portal.models import Batch, JobStatus, Report, Role, Scan, db
from portal.reports import ReportError
from portal.scans import attachment, patient_pseudonym, sees_patient, visible_scan
from portal.security import login_required, record, role_required

bp = Blueprint("reports", __name__)


def visible_report(report_id: int) -> Report:
    report = db.session.get(Report, report_id)
    if report is None:
        abort(404)
    visible_scan(report.scan_id)
    if not report.visible_to(g.user):
        abort(404)  # a doctor's draft is not released to the patient
    return report


def visible_batch(batch_id: int) -> Batch:
    batch = db.session.get(Batch, batch_id)
    if batch is None:
        abort(404)
    if g.user.role == Role.PATIENT.value:
        if batch.created_by_id != g.user.id:  # their own uploads only, not the analyses their doctor runs
            abort(404)
    elif batch.created_by_id != g.user.id and not sees_patient(batch.patient):
        abort(404)
    return batch


@bp.get("/reports/<int:report_id>")
@login_required
def view(report_id: int):
    report = visible_report(report_id)
    record("report_viewed", report)
    db.session.commit()
    history = [r for r in reports.versions(report.scan_id) if r.visible_to(g.user)]
    newest = history[-1] if history else report
    segmented = report.segmentation
    lesion_table = reports.lesion_rows(segmented) if segmented and segmented.lesion_count else None
    other_scans, other_reports = [], {}
    if g.user.role == Role.DOCTOR.value:  # the same patient's other scans, to compare side by side
        other_scans = db.session.scalars(db.select(Scan).where(Scan.patient_id == report.scan.patient_id,
                                                               Scan.id != report.scan_id)
                                         .order_by(Scan.created_at.desc(), Scan.id.desc()).limit(12)).all()
        other_reports = reports.latest_reports([other.id for other in other_scans], g.user)
    return render_template("reports/view.html", report=report, scan=report.scan, history=history,
                           newest=newest, notice=reports.NOTICE, worklist_nav=_worklist_nav(report),
                           other_scans=other_scans, other_reports=other_reports,
                           not_analysed=reports.NOT_ANALYSED,
                           ood_explanation=reports.ood_explanation(report.ood_reason),
                           segmentation=segmented, lesion_table=lesion_table,
                           gradcam_caveat=reports.GRADCAM_CAVEAT)


def _worklist_nav(report: Report) -> dict | None:
    """For a report opened from the doctor's worklist (``?wl=<the worklist's query>``): its URL and the previous
    and next reports in that list's order, so a doctor reads through it from the report pages."""
    if g.user.role != Role.DOCTOR.value or "wl" not in request.args:
        return None
    query = request.args["wl"][:2000]
    filters = _worklist_filters(query)
    if filters is None:
        return None
    previous, following = worklist.neighbours(g.user, filters, report.scan_id)

    def link(report_id):
        return url_for("reports.view", report_id=report_id, wl=query) if report_id else None

    return {"query": query, "list": url_for("doctor.worklist_page") + (f"?{query}" if query else ""),
            "previous": link(previous), "next": link(following)}


def _report_picture(report_id: int, digest_of, action: str, mimetype: str) -> Response:
    """One of a report's pictures from the blob store (404 when the report has none), its viewing audited."""
    report = visible_report(report_id)
    digest = digest_of(report)
    if not digest:
        abort(404)
    record(action, report)
    db.session.commit()
    return Response(blobs.store.get(digest), mimetype=mimetype)


@bp.get("/reports/<int:report_id>/overlay.jpg")
@login_required
def overlay(report_id: int):
    return _report_picture(report_id, lambda report: report.overlay_sha256, "overlay_viewed", "image/jpeg")


@bp.get("/reports/<int:report_id>/outline.png")
@login_required
def outline(report_id: int):
    return _report_picture(report_id, lambda report: report.outline_sha256, "outline_viewed", "image/png")


@bp.get("/reports/<int:report_id>/lesion-mask.png")
@login_required
def lesion_mask(report_id: int):
    """The segmenter's lesion mask (255 = lesion, at the stored image's size): the viewer outlines it."""
    return _report_picture(report_id, lambda report: report.lesion_mask_sha256, "lesion_mask_viewed", "image/png")


@bp.get("/reports/<int:report_id>/segmentation.dcm")
@login_required
def dicom_segmentation(report_id: int):
    """The lesions as a DICOM Segmentation over the scan's DICOM (scans/<id>/scan.dcm): opens in OHIF or 3D
    Slicer beside it. 404 for non-DICOM scans and reports without segmentation; 409 when the source cannot carry one."""
    report = visible_report(report_id)
    result = report.segmentation
    if report.scan.kind != "dicom" or not report.lesion_mask_sha256 or result is None or not result.available:
        abort(404)
    try:
        content = segmentation.dicom_seg(blobs.store.get(report.scan.original_sha256),
                                         segmentation.read_mask(blobs.store.get(report.lesion_mask_sha256)),
                                         result, patient_pseudonym(report.scan))
    except segmentation.DicomSegUnavailable as error:
        flash(f"No DICOM segmentation for this scan: {error}", "error")
        return view(report_id=report.id), 409
    record("report_downloaded", report, detail="dicom-seg")
    db.session.commit()
    return attachment(content, "application/dicom", f"radassist-segmentation-{report.id}-v{report.version}.dcm")


@bp.get("/reports/<int:report_id>/report.pdf")
@login_required
def pdf(report_id: int):
    report = visible_report(report_id)
    record("report_downloaded", report, detail="pdf")
    db.session.commit()
    return attachment(blobs.store.get(report.pdf_sha256), "application/pdf",
                      f"radassist-report-{report.id}-v{report.version}.pdf")


def _worklist_next(report: Report) -> int | None:
    """The report after ``report`` in the worklist the form came from (its ``wl`` field), or None."""
    filters = _worklist_filters(request.form["wl"][:2000]) if "wl" in request.form else None
    return worklist.neighbours(g.user, filters, report.scan_id)[1] if filters else None


def _worklist_filters(query: str) -> worklist.Filters | None:
    """The worklist filters of a ``wl`` query string; None when it cannot be read (the page then has no nav)."""
    try:
        return worklist.Filters.from_args(dict(parse_qsl(query)))
    except worklist.FilterError:
        return None


def _doctor_action(report_id: int, action, then_next: bool = False):
    """Runs ``action(report)`` and shows the result (the report it returns, else this one). From a worklist the
    doctor stays in it; with ``then_next`` (sign-off) they go on to the report that came next before the action
    (signing moves a report down the list)."""
    report = visible_report(report_id)
    following = _worklist_next(report) if then_next else None
    try:
        result = action(report)
    except ReportError as error:
        db.session.rollback()
        flash(str(error), "error")
        return view(report_id=report.id), 409  # the page itself, with the reason: a 409 redirect is not followed
    db.session.commit()
    back_to = {"wl": request.form["wl"][:2000]} if "wl" in request.form else {}  # still reading through a worklist
    return redirect(url_for("reports.view", report_id=following or (result or report).id, **back_to))


@bp.post("/reports/<int:report_id>/findings")
@role_required(Role.DOCTOR)
def findings(report_id: int):
    def save(report):
        reports.update_findings(report, request.form.get("findings", ""), g.user, blobs.store)
        record("report_edited", report, detail=f"findings, version {report.version}")
        flash("Findings saved.", "info")

    return _doctor_action(report_id, save)


@bp.post("/reports/<int:report_id>/sign")
@role_required(Role.DOCTOR)
def sign(report_id: int):
    def sign_off(report):
        if "findings" in request.form:
            reports.update_findings(report, request.form["findings"], g.user, blobs.store)
        reports.sign_off(report, g.user, blobs.store, request.form.get("assessment", ""),
                         request.form.get("confirmed_class", ""))
        record("report_signed", report, detail=f"version {report.version}; model {report.predicted_class}, "
               f"confirmed {report.confirmed_class}, agrees {report.doctor_agrees}")
        flash(f"Report {report.id} version {report.version} ({report.scan.name}) signed off. It can no longer be "
              "changed.", "info")

    return _doctor_action(report_id, sign_off, then_next=True)


@bp.post("/reports/<int:report_id>/amend")
@role_required(Role.DOCTOR)
def amend(report_id: int):
    def amend_report(report):
        amendment = reports.amend(report, g.user, request.form.get("reason", ""), blobs.store)
        record("report_amended", amendment, detail=f"amends report {report.id} (version {report.version})")
        flash(f"Version {amendment.version} created as a draft; sign it off when it is ready.", "info")
        return amendment

    return _doctor_action(report_id, amend_report)


@bp.post("/scans/<int:scan_id>/analyse")
@role_required(Role.DOCTOR, Role.PATIENT)
def analyse_again(scan_id: int):
    """Queues a new analysis of a scan whose last job failed for good. The patient may ask for their own
    submissions; their doctor for any of the patient's scans."""
    scan = visible_scan(scan_id)
    if g.user.role == Role.PATIENT.value and not scan.self_submitted:
        abort(404)
    last = latest_jobs([scan.id]).get(scan.id)
    if last is not None and last.status in (JobStatus.QUEUED.value, JobStatus.RUNNING.value):
        flash("This scan is already being analysed.", "info")
    elif reports.latest_reports([scan.id]):
        flash("This scan already has a report.", "info")
    else:
        batch = enqueue_scans([scan], g.user, scan.patient, report_jobs.queue)
        record("analysis_requeued", scan, detail=f"batch {batch.id}")
        db.session.commit()
        return redirect(url_for("reports.batch", batch_id=batch.id))
    if g.user.role == Role.PATIENT.value:
        return redirect(url_for("patient.home"))
    return redirect(url_for("doctor.patient", patient_id=scan.patient_id))


@bp.get("/batches/<int:batch_id>")
@login_required
def batch(batch_id: int):
    found = visible_batch(batch_id)
    newest = reports.latest_reports([job.scan_id for job in found.jobs], g.user)
    record("batch_viewed", found)
    db.session.commit()
    return render_template("reports/batch.html", batch=found, progress=batch_progress(found), newest=newest)
