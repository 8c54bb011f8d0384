import glob
import io
import os

import pytest
from PIL import Image

from components import features
from components.leakage_audit import ImageRecord, audit, hamming_matrix, perceptual_hash

NORMAL = features.CLASS_NAMES.index("normal")
ADENO = features.CLASS_NAMES.index("adenocarcinoma")


def _bytes(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _recompress(data: bytes) -> bytes:
    buffer = io.BytesIO()
    with Image.open(io.BytesIO(data)) as image:
        image.convert("L").resize((image.width * 3 // 4, image.height * 3 // 4)).save(buffer, "JPEG", quality=70)
    return buffer.getvalue()


def test_perceptual_hash_tolerates_recompression_but_separates_slices(sample_dir):
    first, second = sorted(glob.glob(os.path.join(sample_dir, "train", "adenocarcinoma", "*.png")))[:2]
    original = perceptual_hash(_bytes(first))
    recompressed = perceptual_hash(_recompress(_bytes(first)))
    other = perceptual_hash(_bytes(second))
    distances = hamming_matrix([original], [recompressed, other])[0]
    assert distances[0] <= 20
    assert distances[1] > 50


def _record(split, name, sha, label, phash):
    return ImageRecord(split=split, filename=f"{split}/{name}", sha256=sha, label=label, phash=phash)


def test_audit_marks_exact_and_near_copies_and_label_conflicts():
    zeros, ones = bytes(32), bytes([255] * 32)
    almost_zeros = bytes([1] * 4) + bytes(28)  # 4 bits from zeros
    records = [
        _record("train", "a.png", "sha-a", NORMAL, zeros),
        _record("train", "b.png", "sha-b", ADENO, ones),
        _record("train", "b-copy.png", "sha-b", NORMAL, ones),  # same bytes, other label
        _record("valid", "a-again.png", "sha-a", NORMAL, zeros),  # exact copy of train
        _record("test", "a-near.png", "sha-x", NORMAL, almost_zeros),  # near copy of train
        _record("test", "new.png", "sha-y", ADENO, bytes([0x0F] * 32)),  # 128 bits away from both
    ]
    result = audit(records, near_distance=10)
    assert result.is_leaked("valid", "valid/a-again.png")
    assert result.leaked[("test", "test/a-near.png")]["kind"] == "near"
    assert not result.is_leaked("test", "test/new.png")
    assert not result.is_leaked("train", "train/a.png")  # the first split is never leaked
    assert result.counts["test_leaked"] == 1 and result.counts["valid_leaked_exact"] == 1
    assert result.counts["label_conflict_groups"] == 1
    assert result.drops("train", "sha-b") and not result.drops("train", "sha-a")
    assert result.counts["train_dropped_label_conflicts"] == 2
    assert len(result.fingerprint) == 64


def test_audit_fingerprint_changes_with_the_data():
    base = [_record("train", "a.png", "sha-a", NORMAL, bytes(32))]
    changed = [_record("train", "a.png", "sha-b", NORMAL, bytes(32))]
    assert audit(base).fingerprint != audit(changed).fingerprint


@pytest.mark.full_data
def test_full_dataset_audit_finds_the_known_leaks(full_data_dir):
    from components.ct_example_gen import read_scan_image

    records = []
    for split in features.SPLITS:
        for path in sorted(glob.glob(os.path.join(full_data_dir, split, "*", "*"))):
            scan = read_scan_image(path, full_data_dir)
            records.append(ImageRecord(split, scan.filename, scan.sha256, scan.label, perceptual_hash(scan.encoded)))
    assert len(records) == 1000  # every file of the Kaggle set is a readable image
    result = audit(records)
    assert result.counts["test_leaked_exact"] == 46
    # Near copies: the same slice under another window or with a drawn line (all in `normal`).
    assert 1 <= result.counts["test_leaked_near"] <= 5
    test_leaked_labels = {features.CLASS_NAMES[r.label] for r in records
                          if r.split == "test" and result.is_leaked(r.split, r.filename)}
    assert test_leaked_labels == {"normal"}
    assert result.counts["valid_leaked_exact"] == 10  # 10 of 13 valid/normal files are copies of training files
    assert result.conflicts == [
        {
            "sha256": result.conflicts[0]["sha256"],
            "labels": ["large.cell.carcinoma", "squamous.cell.carcinoma"],
            "files": ["train:train/large.cell.carcinoma/l4.png", "train:train/squamous.cell.carcinoma/sq2.png"],
        }
    ]
