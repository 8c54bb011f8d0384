"""What only the portal knows about a model call, beside the model server's request log (serving/prediction_log.py):
per analysed scan, the image's sha256 (the model server logged those very bytes, so the two join on it), the scan's
source and upload time, the DICOM acquisition (scanner, kernel, protocol) and the model's answer. No names, no
patient or DICOM identifiers. One JSON object per line, a file per worker and day, under
``RADASSIST_PREDICTION_CONTEXT_LOG`` (unset: nothing is written)."""

import datetime as dt
import json
import os

from portal.models import utcnow


def record(scan, image_sha256: str, prediction, segmentation) -> dict:
    segmented = None if isinstance(segmentation, str) or segmentation is None else segmentation
    return {
        "logged_at": utcnow().isoformat(timespec="seconds") + "Z",
        "image_sha256": image_sha256,
        "model_name": prediction.model_name, "model_version": prediction.model_version,
        "segmentation_model": f"{segmented.model_name}/{segmented.model_version}" if segmented else None,
        "scan_kind": scan.kind, "modality": scan.modality,
        "source": scan.source,
        "uploaded_at": scan.created_at.isoformat(timespec="seconds") + "Z",
        "acquisition": json.loads(scan.acquisition_json) if scan.acquisition_json else {},
        "width": scan.width, "height": scan.height,
        "predicted_class": prediction.class_name, "confidence": round(float(prediction.confidence), 6),
        "cancer_probability": prediction.cancer_probability, "in_domain": prediction.in_domain,
        "ood_reason": prediction.ood_reason or None,
        "lesion_count": int(segmented.lesion_count) if segmented else None,
    }


class ContextLog:
    """Appends records to ``<folder>/context-<worker>-<YYYY-MM-DD>.jsonl`` (each line flushed on its own)."""

    def __init__(self, folder: str, worker: str):
        self.folder, self.worker = folder, worker.replace(os.sep, "_")
        os.makedirs(folder, exist_ok=True)

    def path(self, day: dt.date) -> str:
        return os.path.join(self.folder, f"context-{self.worker}-{day.isoformat()}.jsonl")

    def write(self, entry: dict) -> None:
        with open(self.path(utcnow().date()), "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, sort_keys=True) + "\n")


def read(folder: str) -> list[dict]:
    """Every record under ``folder``, in file and line order."""
    entries = []
    for name in sorted(os.listdir(folder)):
        if name.startswith("context-") and name.endswith(".jsonl"):
            with open(os.path.join(folder, name), encoding="utf-8") as handle:
                entries.extend(json.loads(line) for line in handle if line.strip())
    return entries
