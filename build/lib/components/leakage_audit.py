"""LeakageAudit: finds images repeated across splits and images with conflicting labels.

The Kaggle chest-CT set repeats many ``normal`` slices across train/valid/test byte for byte, and near
copies (the same slice with another hand-drawn line, or recompressed) are common. Every example of a later
split (valid after train, test after train and valid) that repeats an earlier split's image exactly (sha256)
or nearly (perceptual hash within ``near_distance`` bits) gets ``leaked = 1``, so evaluation can report the
leak-free part of the test split. Byte-identical images that carry different labels are dropped from the
training split. Counts go to ML Metadata (custom properties of the report artifact) and to a JSON report.
"""

import collections
import dataclasses
import hashlib
import io
import json
import logging
import os

import numpy as np
import scipy.fft
import tensorflow as tf
from PIL import Image
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact, artifact_utils, standard_artifacts

from components import features

log = logging.getLogger(__name__)

REPORT_FILE = "leakage_report.json"
# 256-bit pHash. On the Kaggle set, true near copies (same slice, other window or drawn line) lie at
# <= 46 bits from their twin and the closest distinct slices at >= 58 bits.
HASH_SIZE = 16
DEFAULT_NEAR_DISTANCE = 50


class LeakageReport(artifact.Artifact):
    """The audit's findings: counts as MLMD custom properties, details in ``leakage_report.json``."""

    TYPE_NAME = "radassist.LeakageReport"  # KFP v2 wants "<namespace>.<Name>"


def perceptual_hash(encoded: bytes, hash_size: int = HASH_SIZE) -> bytes:
    """DCT perceptual hash (pHash) of an encoded image, ``hash_size**2`` bits packed into bytes.

    Robust to recompression, rescaling, windowing changes and small drawn strokes.
    """
    with Image.open(io.BytesIO(encoded)) as image:
        gray = image.convert("L").resize((hash_size * 4, hash_size * 4), Image.Resampling.LANCZOS)
    pixels = np.asarray(gray, dtype=np.float64)
    low = scipy.fft.dctn(pixels, norm="ortho")[:hash_size, :hash_size].ravel()
    return np.packbits(low > np.median(low[1:])).tobytes()


def hamming_matrix(left: list[bytes], right: list[bytes]) -> np.ndarray:
    """Pairwise Hamming distances between two lists of packed hashes -> int [len(left), len(right)]."""
    a = np.frombuffer(b"".join(left), dtype=np.uint8).reshape(len(left), -1)
    b = np.frombuffer(b"".join(right), dtype=np.uint8).reshape(len(right), -1)
    return np.unpackbits(np.bitwise_xor(a[:, None, :], b[None, :, :]), axis=-1).sum(axis=-1)


@dataclasses.dataclass
class ImageRecord:
    split: str
    filename: str
    sha256: str
    label: int
    phash: bytes


@dataclasses.dataclass
class AuditResult:
    """What the audit decided for every image, plus the summary counts."""

    leaked: dict[tuple[str, str], dict]  # (split, filename) -> {"kind": exact|near, "match": ..., "distance"}
    conflicts: list[dict]  # one per sha256 that carries several labels
    counts: dict[str, int]
    fingerprint: str

    def is_leaked(self, split: str, filename: str) -> bool:
        return (split, filename) in self.leaked

    def drops(self, split: str, sha256: str) -> bool:
        return split == "train" and sha256 in {c["sha256"] for c in self.conflicts}


def audit(records: list[ImageRecord], split_order=features.SPLITS, near_distance=DEFAULT_NEAR_DISTANCE):
    """Decides leakage and label conflicts for ``records``; pure, so it is tested without TFX."""
    by_split = collections.defaultdict(list)
    for record in records:
        by_split[record.split].append(record)
    leaked: dict[tuple[str, str], dict] = {}
    earlier: list[ImageRecord] = []
    for split in split_order:
        current = by_split.get(split, [])
        if earlier and current:
            exact = {r.sha256: r for r in earlier}
            distances = hamming_matrix([r.phash for r in current], [r.phash for r in earlier])
            for i, record in enumerate(current):
                if record.sha256 in exact:
                    match = exact[record.sha256]
                    leaked[(split, record.filename)] = {"kind": "exact", "match": match.filename, "distance": 0}
                    continue
                j = int(np.argmin(distances[i]))
                if distances[i, j] <= near_distance:
                    leaked[(split, record.filename)] = {
                        "kind": "near", "match": earlier[j].filename, "distance": int(distances[i, j])
                    }
        earlier.extend(current)

    labels_by_sha = collections.defaultdict(set)
    files_by_sha = collections.defaultdict(list)
    for record in records:
        labels_by_sha[record.sha256].add(record.label)
        files_by_sha[record.sha256].append(f"{record.split}:{record.filename}")
    conflicts = [
        {"sha256": sha, "labels": sorted(features.CLASS_NAMES[i] for i in labels), "files": files_by_sha[sha]}
        for sha, labels in sorted(labels_by_sha.items())
        if len(labels) > 1
    ]
    counts: dict[str, int] = {"label_conflict_groups": len(conflicts)}
    for split in split_order:
        counts[f"{split}_examples"] = len(by_split.get(split, []))
        kinds = [v["kind"] for (s, _), v in leaked.items() if s == split]
        if split != split_order[0]:
            counts[f"{split}_leaked_exact"] = kinds.count("exact")
            counts[f"{split}_leaked_near"] = kinds.count("near")
            counts[f"{split}_leaked"] = len(kinds)
    result = AuditResult(leaked=leaked, conflicts=conflicts, counts=counts, fingerprint="")
    counts["train_dropped_label_conflicts"] = sum(result.drops("train", r.sha256) for r in by_split.get("train", []))
    digest = hashlib.sha256()
    for record in sorted(records, key=lambda r: (r.split, r.filename)):
        digest.update(f"{record.split}/{record.label}/{record.sha256}\n".encode())
    result.fingerprint = digest.hexdigest()
    return result


def _example_files(examples: artifact.Artifact, split: str) -> list[str]:
    return sorted(tf.io.gfile.glob(os.path.join(artifact_utils.get_split_uri([examples], split), "*")))


def _read_split(examples: artifact.Artifact, split: str):
    dataset = tf.data.TFRecordDataset(_example_files(examples, split), compression_type="GZIP")
    for serialized in dataset.as_numpy_iterator():
        yield tf.train.Example.FromString(serialized)


def _feature(example: tf.train.Example, key: str):
    feature = example.features.feature[key]
    return feature.bytes_list.value[0] if feature.HasField("bytes_list") else feature.int64_list.value[0]


@component
def LeakageAudit(  # noqa: N802 - TFX components are named like classes
    examples: InputArtifact[standard_artifacts.Examples],
    audited_examples: OutputArtifact[standard_artifacts.Examples],
    report: OutputArtifact[LeakageReport],
    near_distance: Parameter[int] = DEFAULT_NEAR_DISTANCE,
):
    """Marks leaked examples (feature ``leaked``), drops label-conflicted training images, records counts."""
    splits = artifact_utils.decode_split_names(examples.split_names)
    order = [s for s in features.SPLITS if s in splits] + [s for s in splits if s not in features.SPLITS]
    records = []
    for split in order:
        for example in _read_split(examples, split):
            records.append(
                ImageRecord(
                    split=split,
                    filename=_feature(example, features.FILENAME_KEY).decode(),
                    sha256=_feature(example, features.SHA256_KEY).decode(),
                    label=int(_feature(example, features.LABEL_KEY)),
                    phash=perceptual_hash(_feature(example, features.IMAGE_KEY)),
                )
            )
    result = audit(records, split_order=order, near_distance=near_distance)

    audited_examples.split_names = artifact_utils.encode_split_names(order)
    for split in order:
        out_dir = artifact_utils.get_split_uri([audited_examples], split)
        tf.io.gfile.makedirs(out_dir)
        options = tf.io.TFRecordOptions(compression_type="GZIP")
        with tf.io.TFRecordWriter(os.path.join(out_dir, "data_tfrecord-00000-of-00001.gz"), options) as writer:
            for example in _read_split(examples, split):
                filename = _feature(example, features.FILENAME_KEY).decode()
                if result.drops(split, _feature(example, features.SHA256_KEY).decode()):
                    log.warning("LeakageAudit: dropping %s (its bytes carry several labels)", filename)
                    continue
                leaked = int(result.is_leaked(split, filename))
                example.features.feature[features.LEAKED_KEY].int64_list.value[:] = [leaked]
                writer.write(example.SerializeToString())

    for name, value in result.counts.items():
        report.set_int_custom_property(name, value)
    report.set_string_custom_property("data_fingerprint", result.fingerprint)
    report.set_int_custom_property("near_distance", near_distance)
    details = {
        "counts": result.counts,
        "data_fingerprint": result.fingerprint,
        "near_distance": near_distance,
        "label_conflicts": result.conflicts,
        "leaked": [{"split": s, "filename": f, **v} for (s, f), v in sorted(result.leaked.items())],
    }
    with tf.io.gfile.GFile(os.path.join(report.uri, REPORT_FILE), "w") as handle:
        json.dump(details, handle, indent=2)
    log.info("LeakageAudit: %s", json.dumps(result.counts))
