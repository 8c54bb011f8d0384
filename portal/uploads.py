"""Storing accepted uploads: blobs by content hash, one Scan row each, one analysis job each, one audit event."""

from flask import current_app, request

from portal.intake import AcceptedScan, RejectedFile, intake_stream
from portal.jobs import JobQueue, enqueue_scans, queue_from_url
from portal.models import Batch, Scan, User, db
from portal.security import record
from portal.storage import store_from_uri

MAX_NAME = 255
QUEUE_EVERY = 8  # scans stored before their jobs are queued


def blob_store():
    """The app's scan store, made once per process and configured location (an S3 client is not free)."""
    uri = current_app.config["SCAN_STORE"]
    cached = current_app.extensions.get("radassist_blob_store")
    if cached is None or cached[0] != uri:
        cached = current_app.extensions["radassist_blob_store"] = (uri, store_from_uri(uri))
    return cached[1]


def job_queue() -> JobQueue:
    """The app's queue, made once per process (a Redis connection pool, or the database)."""
    queue = current_app.extensions.get("radassist_queue")
    if queue is None:
        queue = current_app.extensions["radassist_queue"] = queue_from_url(current_app.config["JOB_QUEUE_URL"])
    return queue


def save_upload(patient: User, uploader: User, self_submitted: bool
                ) -> tuple[list[Scan], list[RejectedFile], Batch | None]:
    """Reads the request's ``scans`` files; stores the accepted ones and queues their analysis.

    Returns (scans, rejected files, the batch of analysis jobs or None when nothing was accepted).
    """
    files = [(f.filename or "unnamed", f.read()) for f in request.files.getlist("scans")]
    if not files:
        return [], [RejectedFile("(no file)", "choose at least one file")], None
    store, queue = blob_store(), job_queue()
    scans, rejected, waiting, batch = [], [], [], None
    for item in intake_stream(files):
        if isinstance(item, RejectedFile):
            rejected.append(item)
            continue
        scans.append(_save(store, item, patient, uploader, self_submitted))
        waiting.append(scans[-1])
        if len(waiting) == QUEUE_EVERY:  # workers start on the first scans while the rest are unpacked
            batch = enqueue_scans(waiting, uploader, patient, queue, batch)
            waiting = []
    if waiting:
        batch = enqueue_scans(waiting, uploader, patient, queue, batch)
    record("scans_uploaded", patient, detail=f"{len(scans)} accepted, {len(rejected)} rejected")
    db.session.commit()
    return scans, rejected, batch


def _save(store, item: AcceptedScan, patient: User, uploader: User, self_submitted: bool) -> Scan:
    scan = Scan(patient_id=patient.id, uploaded_by_id=uploader.id, name=item.name[:MAX_NAME], kind=item.kind,
                original_sha256=store.put(item.original), image_sha256=store.put(item.png), width=item.width,
                height=item.height, modality=item.modality, self_submitted=self_submitted)
    db.session.add(scan)
    db.session.flush()
    return scan
