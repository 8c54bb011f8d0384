"""The portal's feedback export as the platform side reads it (``radassist feedback export``, ``/admin/feedback.csv``):
one row per signed report version with the doctor's reading; the newest reading of each image is its label.

Monitoring scores the window's labelled calls with it (components/monitoring/labelled.py) and retraining learns from
it (components/retraining.py). The file may be local or on S3 (read through tf.io.gfile).
"""

import csv
import io


def newest_readings(rows) -> dict[str, dict]:
    """{image sha256: the newest signed reading of it} (by sign-off time, then report version)."""
    newest: dict[str, dict] = {}
    for row in rows:
        key = (row["signed_at"], int(row["report_version"]))
        digest = row["image_sha256"]
        if digest not in newest or key > newest[digest]["_key"]:
            newest[digest] = {**row, "_key": key}
    return {digest: {name: value for name, value in row.items() if name != "_key"} for digest, row in newest.items()}


def read_export(path: str) -> dict[str, dict]:
    """The newest reading per image of a feedback export; a missing file is an error (a wrong path must not look
    like a window nobody signed)."""
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "r") as handle:
        text = handle.read()
    reader = csv.DictReader(io.StringIO(text))
    missing = {"image_sha256", "signed_at", "report_version", "confirmed_class"} - set(reader.fieldnames or ())
    if missing:
        raise ValueError(f"{path} is not a RadAssist feedback export (no {', '.join(sorted(missing))} column)")
    return newest_readings(reader)
