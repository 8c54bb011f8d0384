"""Retraining on doctor-confirmed cases: the feedback export becomes a new data version (the base unchanged, the
confirmed cases added, a fixed share held back, copies of base images refused), and the promotion rule pushes a
candidate only when the Evaluator blessed it and it is no worse than the served model on the held-back cases."""

import hashlib
import json
import os

import pytest
from test_monitoring import darker_and_padded

from components import retraining
from portal.feedback import COLUMNS, to_csv

SAMPLE = os.path.join(os.path.dirname(__file__), "..", "data", "sample", "chest-ct")


def feedback_export(folder, cases: list[tuple[bytes, str]], extra_rows=()) -> tuple[str, str]:
    """A feedback export as `radassist feedback export --out labels.csv --images images/` writes it."""
    images = folder / "images"
    images.mkdir(parents=True)
    rows = []
    for number, (data, label) in enumerate(cases):
        digest = hashlib.sha256(data).hexdigest()
        (images / digest).write_bytes(data)
        rows.append({name: "" for name in COLUMNS} | {
            "report_id": number, "report_version": 1, "image_sha256": digest, "model_name": "radassist",
            "model_version": 1, "predicted_class": "normal", "confirmed_class": label,
            "doctor_agrees": str(label == "normal").lower(), "signed_at": f"2026-11-{1 + number % 28:02d}T10:00:00Z"})
    rows.extend(extra_rows)
    (folder / "labels.csv").write_text(to_csv(rows))
    return str(folder / "labels.csv"), str(images)


def shifted_test_cases() -> list[tuple[bytes, str]]:
    """The sample's test slices as another site exports them, labelled by their folders (what doctors confirm)."""
    cases = []
    for label in sorted(os.listdir(os.path.join(SAMPLE, "test"))):
        for name in sorted(os.listdir(os.path.join(SAMPLE, "test", label))):
            with open(os.path.join(SAMPLE, "test", label, name), "rb") as handle:
                cases.append((darker_and_padded(handle.read()), label))
    return cases


def test_the_export_becomes_a_data_version_with_a_stable_holdout(tmp_path):
    cases = shifted_test_cases()[:12]
    with open(os.path.join(SAMPLE, "train", "normal", sorted(os.listdir(os.path.join(SAMPLE, "train", "normal")))[0]),
              "rb") as handle:
        base_copy = handle.read()
    digest = hashlib.sha256(cases[0][0]).hexdigest()
    amended = {name: "" for name in COLUMNS} | {"report_id": 99, "report_version": 2, "image_sha256": digest,
                                                  "confirmed_class": "adenocarcinoma", "model_version": 1,
                                                  "signed_at": "2026-11-30T10:00:00Z"}
    labels, images = feedback_export(tmp_path / "export", cases + [(base_copy, "normal"), (b"\x89PNG", "normal"),
                                                                   (b"unsure", "not_assessable")], [amended])
    os.remove(os.path.join(images, hashlib.sha256(b"\x89PNG").hexdigest()))
    found, counts = retraining.read_confirmed(labels, images, SAMPLE)
    assert counts == {"readings": 15, "usable": 12, "not_a_class": 1, "in_base_data": 1, "image_missing": 1}
    assert next(c for c in found if c.sha256 == digest).label == "adenocarcinoma"  # the amended, newest reading
    training, held = retraining.split_holdout(found, 0.5)
    assert held and training and retraining.split_holdout(list(reversed(found)), 0.5)[1] == list(reversed(held))
    version = retraining.build_data_version(SAMPLE, training, held, str(tmp_path / "versions"))
    again = retraining.build_data_version(SAMPLE, training, held, str(tmp_path / "versions"))
    assert again.id == version.id and again.manifest == version.manifest
    for split in ("valid", "test"):  # the frozen splits are the base's own files
        assert sorted(os.listdir(os.path.join(version.root, split))) == sorted(os.listdir(os.path.join(SAMPLE, split)))
    confirmed = [name for folder in os.listdir(os.path.join(version.root, "train"))
                 if folder.endswith("_confirmed") for name in os.listdir(os.path.join(version.root, "train", folder))]
    assert len(confirmed) == len(training)
    assert retraining.holdout_images(version)[1] == sorted(case.label for case in held)
    with open(os.path.join(version.root, retraining.MANIFEST)) as handle:
        manifest = json.load(handle)
    assert manifest["id"] == version.id and manifest["base_counts"]["test"] == 40
    other = retraining.build_data_version(SAMPLE, training[1:], held, str(tmp_path / "versions"))
    assert other.id != version.id


@pytest.mark.parametrize("blessed, candidate, served, tolerance, pushed", [
    (False, 0.9, 0.5, 0.0, False),     # the Evaluator refused it on the official test
    (True, 0.6, 0.7, 0.0, False),      # worse on the held-back confirmed cases
    (True, 0.6, 0.7, 0.15, True),      # within the tolerance
    (True, 0.7, 0.7, 0.0, True),       # no worse
    (True, None, 0.7, 0.0, True),      # nothing held back
    (True, 0.6, None, 0.0, True),      # nothing served yet
])
def test_the_promotion_rule(blessed, candidate, served, tolerance, pushed):
    assert retraining.promotion(blessed, candidate, served, tolerance)[0] is pushed
