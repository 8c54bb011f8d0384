"""JSON API: bulk-job progress (the live progress bar) and FHIR R4 export. Same ownership rules as the pages."""

from flask import Blueprint, g, jsonify, url_for

from portal import fhir, reports
from portal.extensions import blobs
from portal.jobs import batch_progress
from portal.models import db
from portal.report_pages import visible_batch, visible_report
from portal.security import login_required, record

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.get("/batches/<int:batch_id>")
@login_required
def batch(batch_id: int):
    found = visible_batch(batch_id)
    newest = reports.latest_reports([job.scan_id for job in found.jobs], g.user)  # only what this user may open
    progress = batch_progress(found)
    progress["jobs"] = [{
        "job": job.id, "scan": job.scan_id, "name": job.scan.name, "status": job.status,
        "attempts": job.attempts, "error": job.last_error if job.status in ("failed", "queued") else None,
        "report_url": url_for("reports.view", report_id=newest[job.scan_id].id)
        if job.scan_id in newest and job.status == "done" else None,
    } for job in found.jobs]
    return jsonify(progress)


@bp.get("/reports/<int:report_id>/fhir")
@login_required
def report_fhir(report_id: int):
    report = visible_report(report_id)
    record("report_downloaded", report, detail="fhir")
    db.session.commit()
    document = fhir.diagnostic_report(report, blobs.store)
    response = jsonify(document)
    response.mimetype = "application/fhir+json"
    return response
