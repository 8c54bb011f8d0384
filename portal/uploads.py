"""Storing accepted uploads: blobs by content hash, one Scan row each, one analysis job each, one audit event."""

import dataclasses
import hashlib
import hmac
import json
import logging

import sqlalchemy as sa
from flask import current_app, request
from sqlalchemy import exc as sa_exc

from portal.extensions import blobs, report_jobs
from portal.intake import AcceptedScan, RejectedFile, intake_stream
from portal.jobs import enqueue_scans
from portal.models import Batch, Scan, User, db
from portal.security import record
from portal.storage import StorageUnavailable

log = logging.getLogger(__name__)

MAX_NAME = 255
QUEUE_EVERY = 8  # scans stored before their jobs are queued


@dataclasses.dataclass
class UploadResult:
    """What an upload did, truthfully: the scans saved (their jobs queued), files refused, and why it stopped early
    when storage or the database failed part-way (what ``scans`` lists was saved all the same)."""

    scans: list[Scan]
    rejected: list[RejectedFile]
    batch: Batch | None = None
    interrupted: str | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)


def upload_status(result: UploadResult) -> int:
    """200 when everything accepted was saved; 207 when storage failed part-way (some saved); 400 for none."""
    if result.interrupted:
        return 207
    return 200 if result.scans else 400


def patient_id_hash(patient_id: str) -> str:
    """A keyed hash of a DICOM PatientID: comparable between uploads, useless to anyone without the key."""
    key = (current_app.config.get("PHI_HASH_KEY") or current_app.config["SECRET_KEY"]).encode()
    return hmac.new(key, patient_id.encode(), hashlib.sha256).hexdigest()


def save_upload(patient: User, uploader: User, self_submitted: bool) -> UploadResult:
    """Reads the request's ``scans`` files; stores the accepted ones and queues their analysis.

    Scans are committed with their jobs every QUEUE_EVERY, so workers start while the rest is unpacked. When the
    blob store or the database fails part-way, the scans not yet committed are rolled back and their new blobs
    removed; the result says how many were saved, so nobody uploads those again. A file this patient already has
    is refused as a repeat.
    """
    files = [(f.filename or "unnamed", f.stream) for f in request.files.getlist("scans")]  # spooled, not read
    if not files:
        return UploadResult([], [RejectedFile("(no file)", "choose at least one file")])
    store, queue = blobs.store, report_jobs.queue
    result = UploadResult([], [])
    pending, new_blobs = [], []
    known_ids = set(db.session.scalars(sa.select(Scan.dicom_patient_hash).where(
        Scan.patient_id == patient.id, Scan.dicom_patient_hash.is_not(None))))
    try:
        for item in intake_stream(files):
            if isinstance(item, RejectedFile):
                result.rejected.append(item)
                continue
            repeat = _earlier_copy(patient, item, pending)
            if repeat is not None:
                result.rejected.append(RejectedFile(item.name, f"already uploaded for this patient ({repeat})"))
                continue
            pending.append(_save(store, item, patient, uploader, self_submitted, created=new_blobs))
            _check_patient_id(pending[-1], known_ids, result, patient)
            if len(pending) == QUEUE_EVERY:  # workers start on the first scans while the rest are unpacked
                result.batch = enqueue_scans(pending, uploader, patient, queue, result.batch)
                result.scans += pending
                pending, new_blobs = [], []
        if pending:
            result.batch = enqueue_scans(pending, uploader, patient, queue, result.batch)
            result.scans += pending
            pending, new_blobs = [], []
    except (StorageUnavailable, OSError, sa_exc.SQLAlchemyError) as error:
        db.session.rollback()
        log.error("upload for patient %d interrupted after %d scans: %s", patient.id, len(result.scans), error)
        _remove_unreferenced(store, new_blobs)
        where = "the database" if isinstance(error, sa_exc.SQLAlchemyError) else "scan storage"
        result.interrupted = (f"{where} stopped answering after {len(result.scans)} of the accepted files were "
                              "saved; upload the others again in a moment (files already saved are recognised)")
        if not result.scans:
            raise  # nothing was saved: the app's 503 page says so
    detail = f"{len(result.scans)} accepted, {len(result.rejected)} rejected"
    record("scans_uploaded", patient, detail=detail + (" (interrupted)" if result.interrupted else ""))
    for warning in result.warnings:
        record("dicom_patient_mismatch", patient, detail=warning)
    try:
        db.session.commit()
    except sa_exc.SQLAlchemyError:
        db.session.rollback()
        log.error("the audit event of an upload for patient %d was not written: %s", patient.id, detail)
        if not result.interrupted:
            raise
    return result


def _earlier_copy(patient: User, item: AcceptedScan, pending: list[Scan]) -> str | None:
    digest = item.sha256
    if any(scan.original_sha256 == digest for scan in pending):
        return "twice in this upload"
    earlier = db.session.scalar(sa.select(Scan).where(Scan.patient_id == patient.id, Scan.original_sha256 == digest)
                                .limit(1))
    return f"scan {earlier.id} of {earlier.created_at:%Y-%m-%d}" if earlier is not None else None


def _check_patient_id(scan: Scan, known: set[str], result: UploadResult, patient: User) -> None:
    """Warns (never refuses: IDs get merged) when a DICOM names another patient than this patient's earlier ones."""
    if scan.dicom_patient_hash is None:
        return
    if known and scan.dicom_patient_hash not in known:
        result.warnings.append(f"{scan.name}: its DICOM patient ID differs from earlier scans of {patient.name}. "
                               "Check that it belongs to this patient.")
    known.add(scan.dicom_patient_hash)


def _save(store, item: AcceptedScan, patient: User, uploader: User, self_submitted: bool,
          created: list[str] | None = None) -> Scan:
    """A Scan row for ``item`` (flushed, not committed); the digests of the blobs it creates are added to
    ``created`` as they are written, so a failure part-way can remove them."""
    created = [] if created is None else created

    def put(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        if not store.exists(digest):
            created.append(digest)
            store.put(data)
        return digest

    scan = Scan(patient_id=patient.id, uploaded_by_id=uploader.id, name=item.name[:MAX_NAME], kind=item.kind,
                original_sha256=put(item.original), image_sha256=put(item.png), width=item.width,
                height=item.height, modality=item.modality, self_submitted=self_submitted,
                deidentified=True if item.kind == "dicom" else None,
                dicom_patient_hash=patient_id_hash(item.source_patient_id) if item.source_patient_id else None,
                pixel_spacing_row_mm=item.pixel_spacing_mm[0] if item.pixel_spacing_mm else None,
                pixel_spacing_column_mm=item.pixel_spacing_mm[1] if item.pixel_spacing_mm else None,
                acquisition_json=json.dumps(item.acquisition, sort_keys=True) if item.acquisition else None)
    db.session.add(scan)
    db.session.flush()
    return scan


def _remove_unreferenced(store, digests: list[str]) -> None:
    """Deletes blobs a failed upload created, unless a committed row refers to them (the same file, meanwhile)."""
    for digest in digests:
        try:
            referenced = db.session.scalar(sa.select(Scan.id).where(
                (Scan.original_sha256 == digest) | (Scan.image_sha256 == digest)).limit(1))
            if referenced is None:
                store.delete(digest)
        except (StorageUnavailable, OSError, sa_exc.SQLAlchemyError) as error:
            db.session.rollback()
            log.warning("blob %s of a failed upload was not removed: %s", digest, error)
