"""Factories for portal tests: rows as the worker and sign-off write them, without a model server (CTFd's gen_*)."""

import datetime as dt
import io
import json

from PIL import Image

from components.features import CLASS_NAMES
from portal.extensions import blobs
from portal.models import Batch, Job, Report, Scan, User, db
from portal.reports import render_pdf
from portal.segmentation import LesionMeasurement, SegmentationResult

CLASSES = CLASS_NAMES  # the pipeline's models' classes: three cancers, then "normal"


def _png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (256, 256), value).save(buffer, format="PNG")
    return buffer.getvalue()


def gen_scan(app, patient_email: str, name: str, *, cancer: float | None = None, in_domain: bool = True,
             uncertain: bool = False, signed: bool = False, amended: bool = False, job: str = "done",
             lesion_mm: float | None = None, uploaded: dt.datetime | None = None, batch: int | None = None) -> int:
    """A scan of the patient with ``patient_email`` as the worker leaves it: ``cancer`` None means no report yet
    (its job ``job``: queued, running or failed). Returns the scan id."""
    with app.app_context():
        patient = db.session.scalar(db.select(User).where(User.email == patient_email))
        digest = blobs.store.put(_png(40 + len(name) % 200))
        scan = Scan(patient_id=patient.id, uploaded_by_id=patient.doctor_id, name=name, kind="png",
                    original_sha256=digest, image_sha256=digest, width=256, height=256,
                    created_at=uploaded or dt.datetime(2026, 11, 1, 12, 0))
        db.session.add(scan)
        db.session.flush()
        if batch is None:
            found = Batch(created_by_id=patient.doctor_id, patient_id=patient.id)
            db.session.add(found)
            db.session.flush()
            batch = found.id
        db.session.add(Job(batch_id=batch, scan_id=scan.id, status="done" if cancer is not None else job,
                           last_error="model server unavailable" if job == "failed" else None))
        if cancer is not None:
            probabilities = dict(zip(CLASSES, (cancer * 0.7, cancer * 0.2, cancer * 0.1, 1 - cancer), strict=True))
            segmentation = None
            if lesion_mm is not None:
                segmentation = SegmentationResult(
                    model_name="radassist-seg", model_version=1, threshold=0.5, lesion_count=1,
                    pixel_spacing_mm=(0.7, 0.7),
                    lesions=(LesionMeasurement(number=1, area_px=50, long_axis_px=lesion_mm / 0.7,
                                               short_axis_px=5, long_axis_angle=0, centroid=(10, 10),
                                               box=(5, 5, 15, 15), mean_probability=0.8, max_probability=0.9,
                                               long_axis_mm=lesion_mm, short_axis_mm=3.5, area_mm2=24.5),))
            values = dict(predicted_class=max(probabilities, key=probabilities.get),
                          probabilities_json=json.dumps(probabilities), uncertain=uncertain, in_domain=in_domain,
                          overlay_sha256=digest, model_name="radassist", model_version=1,
                          cancer_probability=cancer, lesion_count=1 if lesion_mm is not None else 0,
                          segmentation_json=segmentation.to_json() if segmentation else None)
            doctor = db.session.get(User, patient.doctor_id)
            final = signed or amended
            report = Report(scan=scan, version=1, status="final" if final else "draft", created_at=scan.created_at,
                            signed_by=doctor if final else None,
                            signed_at=dt.datetime(2026, 11, 2) if final else None, **values)
            if final:  # a signed report has its PDF (rendered before the row exists: a final row never changes)
                report.pdf_sha256 = blobs.store.put(render_pdf(report, blobs.store))
            db.session.add(report)
            if amended:
                db.session.flush()
                db.session.add(Report(scan_id=scan.id, version=2, supersedes_id=report.id, status="final",
                                      signed_by_id=doctor.id, signed_at=dt.datetime(2026, 11, 3),
                                      amendment_reason="typo", **values))
        db.session.commit()
        return scan.id
