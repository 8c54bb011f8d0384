"""Doctors' sign-off readings as labels (issue 14): every signed report version with the model's answer and the
class its doctor confirmed, without names or patient identifiers, for the platform team's monitoring and
retraining (``radassist feedback export``, ``/admin/feedback.csv``)."""

import csv
import io
import json
import os

from portal.models import Report, ReportStatus, Scan, db

COLUMNS = ("report_id", "report_version", "scan_id", "image_sha256", "original_sha256", "scan_kind", "source",
           "scanner", "model_name",
           "model_version", "predicted_class", "in_domain", "uncertain", "cancer_probability", "confirmed_class",
           "doctor_agrees", "signed_at")


def labelled_reports():
    """Signed report versions that carry a doctor's reading, oldest first."""
    return db.session.execute(
        db.select(Report, Scan).join(Scan, Report.scan_id == Scan.id)
        .where(Report.status == ReportStatus.FINAL.value, Report.confirmed_class.is_not(None))
        .order_by(Report.signed_at, Report.id)).all()


def scanner(scan) -> str:
    """The scan's scanner as its DICOM names it (manufacturer and model; "" for PNG/JPEG): a slice, not a person."""
    acquisition = json.loads(scan.acquisition_json) if scan.acquisition_json else {}
    return " ".join(acquisition[key] for key in ("Manufacturer", "ManufacturerModelName") if acquisition.get(key))


def rows() -> list[dict]:
    def flag(value):
        return "" if value is None else str(bool(value)).lower()

    return [{"report_id": report.id, "report_version": report.version, "scan_id": scan.id,
             "image_sha256": scan.image_sha256, "original_sha256": scan.original_sha256, "scan_kind": scan.kind,
             "source": scan.source, "scanner": scanner(scan),
             "model_name": report.model_name, "model_version": report.model_version,
             "predicted_class": report.predicted_class, "in_domain": flag(report.in_domain),
             "uncertain": flag(report.uncertain),
             "cancer_probability": "" if report.cancer_probability is None else f"{report.cancer_probability:.6f}",
             "confirmed_class": report.confirmed_class, "doctor_agrees": flag(report.doctor_agrees),
             "signed_at": report.signed_at.isoformat(timespec="seconds") + "Z"}
            for report, scan in labelled_reports()]


def to_csv(records: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


def export_images(records: list[dict], store, folder: str) -> int:
    """Writes the image the model saw for each reading to ``folder/<image_sha256>`` (what ``radassist retrain``
    takes beside the CSV: de-identified pixels only); returns how many were written."""
    os.makedirs(folder, exist_ok=True)
    written = 0
    for digest in sorted({record["image_sha256"] for record in records}):
        path = os.path.join(folder, digest)
        if not os.path.exists(path):
            with open(path + ".partial", "wb") as handle:
                handle.write(store.get(digest))
            os.replace(path + ".partial", path)
        written += 1
    return written
