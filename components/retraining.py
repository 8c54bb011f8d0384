"""Retraining on doctor-confirmed cases (issue 14, part 5): the new data version and the promotion rule.

- ``read_confirmed``: the portal's feedback export (``radassist feedback export --out labels.csv --images DIR``):
  the newest signed reading of each image whose confirmed class is a model class ("not assessable" teaches
  nothing), and only images not already in the base data (a confirmed copy of a test image would leak it).
- ``split_holdout``: a fixed share of the confirmed cases is held back from training, chosen by each image's hash,
  so a case held back once stays held back in every later round.
- ``build_data_version``: ``<versions>/<id>/`` = the base data (linked, unchanged: the frozen official test split
  included) + the confirmed training cases in ``train/<class>_confirmed/`` + ``holdout/<class>/``; the id hashes
  the base's file list and the confirmed cases, and ``DATA_VERSION.json`` says what is in it.
- ``promotion``: a candidate the pipeline's Evaluator blessed on the official test (against the last blessed model)
  is pushed only if it is also no worse than the served model on the held-back cases.
"""

import csv
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import shutil

from components import features, feedback

log = logging.getLogger(__name__)

MANIFEST = "DATA_VERSION.json"
HOLDOUT_SPLIT = "holdout"
CONFIRMED_SUFFIX = "_confirmed"
DATA_VERSION_INFO = os.path.join("assets.extra", "radassist_data_version.json")  # in every promoted model


@dataclasses.dataclass(frozen=True)
class ConfirmedCase:
    sha256: str
    label: str         # a class name
    path: str          # the image file (the bytes the model saw)


def _sha256(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def base_files(base_root: str) -> dict[str, list[str]]:
    """The base data's image files per split (``<split>/<class folder>/<file>``)."""
    from components.ct_example_gen import split_files

    return {split: [os.path.relpath(path, base_root) for path in split_files(base_root, [split])]
            for split in features.SPLITS}


def read_confirmed(labels_csv: str, images_dir: str, base_root: str) -> tuple[list[ConfirmedCase], dict]:
    """The usable confirmed cases of a feedback export, and counts of what was left out and why."""
    with open(labels_csv, newline="", encoding="utf-8") as handle:
        newest = feedback.newest_readings(csv.DictReader(handle))
    in_base = {_sha256(os.path.join(base_root, path)) for paths in base_files(base_root).values() for path in paths}
    cases, left_out = [], {"not_a_class": 0, "in_base_data": 0, "image_missing": 0}
    for digest, row in sorted(newest.items()):
        path = os.path.join(images_dir, digest)
        if row["confirmed_class"] not in features.CLASS_NAMES:
            left_out["not_a_class"] += 1
        elif digest in in_base:
            left_out["in_base_data"] += 1
        elif not os.path.isfile(path) or _sha256(path) != digest:
            left_out["image_missing"] += 1
        else:
            cases.append(ConfirmedCase(digest, row["confirmed_class"], path))
    return cases, {"readings": len(newest), "usable": len(cases), **left_out}


def split_holdout(cases: list[ConfirmedCase], share: float) -> tuple[list[ConfirmedCase], list[ConfirmedCase]]:
    """(training cases, held-back cases): a case is held back when its hash falls in the first ``share``."""
    held = [case for case in cases if int(case.sha256[:8], 16) / 2 ** 32 < share]
    return [case for case in cases if case not in held], held


@dataclasses.dataclass(frozen=True)
class DataVersion:
    id: str
    root: str
    manifest: dict


def build_data_version(base_root: str, training: list[ConfirmedCase], holdout: list[ConfirmedCase],
                       versions_root: str) -> DataVersion:
    """Writes (or reuses) the data version of the base data plus these confirmed cases."""
    base_root = os.path.abspath(base_root)
    files = base_files(base_root)
    digest = hashlib.sha256()
    for paths in files.values():
        for path in paths:
            digest.update(f"{path}:{os.path.getsize(os.path.join(base_root, path))}\n".encode())
    base_fingerprint = digest.hexdigest()[:16]
    for kind, cases in (("train", training), (HOLDOUT_SPLIT, holdout)):
        for case in sorted(cases, key=lambda c: c.sha256):
            digest.update(f"{kind}:{case.sha256}:{case.label}\n".encode())
    version_id = digest.hexdigest()[:12]
    root = os.path.join(os.path.abspath(versions_root), version_id)
    manifest_path = os.path.join(root, MANIFEST)
    if os.path.exists(manifest_path):
        with open(manifest_path, encoding="utf-8") as handle:
            return DataVersion(version_id, root, json.load(handle))
    staging = root + ".partial"
    shutil.rmtree(staging, ignore_errors=True)
    for split in features.SPLITS:
        for folder in sorted(os.listdir(os.path.join(base_root, split))):
            source = os.path.join(base_root, split, folder)
            if os.path.isdir(source):
                os.makedirs(os.path.join(staging, split), exist_ok=True)
                os.symlink(source, os.path.join(staging, split, folder))  # the base, unchanged
    for split, folder_suffix, cases in (("train", CONFIRMED_SUFFIX, training), (HOLDOUT_SPLIT, "", holdout)):
        for case in cases:
            target = os.path.join(staging, split, case.label + folder_suffix)
            os.makedirs(target, exist_ok=True)
            shutil.copyfile(case.path, os.path.join(target, f"confirmed-{case.sha256[:16]}.png"))
    manifest = {
        "id": version_id, "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "base_root": base_root, "base_fingerprint": base_fingerprint,
        "base_counts": {split: len(paths) for split, paths in files.items()},
        "confirmed_train": [dataclasses.asdict(c) | {"path": None} for c in training],
        "confirmed_holdout": [dataclasses.asdict(c) | {"path": None} for c in holdout],
    }
    with open(os.path.join(staging, MANIFEST), "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=2)
    os.replace(staging, root)
    return DataVersion(version_id, root, manifest)


def holdout_images(version: DataVersion) -> tuple[list[bytes], list[str]]:
    """The held-back cases' image bytes and confirmed classes."""
    images, labels = [], []
    folder = os.path.join(version.root, HOLDOUT_SPLIT)
    for label in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        for name in sorted(os.listdir(os.path.join(folder, label))):
            with open(os.path.join(folder, label, name), "rb") as handle:
                images.append(handle.read())
            labels.append(label)
    return images, labels


def accuracy(predicted: list[str], labels: list[str]) -> float | None:
    return sum(p == t for p, t in zip(predicted, labels, strict=True)) / len(labels) if labels else None


def promotion(blessed: bool, candidate_holdout: float | None, served_holdout: float | None,
              tolerance: float) -> tuple[bool, str]:
    """Whether to push the candidate, and why: blessed on the official test by the Evaluator, and on the held-back
    confirmed cases no worse than the served model (by more than ``tolerance``)."""
    if not blessed:
        return False, "not blessed: worse than the last blessed model (or under the floor) on the official test"
    if candidate_holdout is None:
        return True, "blessed; no held-back confirmed cases to compare on"
    if served_holdout is None:
        return True, f"blessed; held-back accuracy {candidate_holdout:.3f} (no served model to compare with)"
    if candidate_holdout + tolerance < served_holdout:
        return False, (f"worse on the held-back confirmed cases: {candidate_holdout:.3f} vs the served model's "
                       f"{served_holdout:.3f}")
    return True, f"blessed; held-back accuracy {candidate_holdout:.3f} vs the served model's {served_holdout:.3f}"
