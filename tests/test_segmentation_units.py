"""The segmenter pipeline's parts without TFX: the manifest's patient-wise split, the consensus and size bins of the
Transform graph, TFMA's overlap metrics, the training config and the command's options."""

import argparse
import csv
import io
import shutil

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from components.segmentation import example_gen, features, metrics, preprocessing
from components.segmentation.recipe import SegmentationConfig
from pipelines import cli as pipeline_cli
from radassist.summary import format_summary

SAMPLE = "data/sample/lidc-crops"


def _png(mask: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((mask * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_manifest_split_must_be_patient_wise(tmp_path):
    slices = example_gen.read_manifest(SAMPLE)
    assert len(slices) == 42 and {item.split for item in slices} == set(features.SPLITS.values())
    shutil.copytree(SAMPLE, tmp_path / "crops")
    manifest = tmp_path / "crops" / "MANIFEST.csv"
    with open(manifest, newline="") as handle:
        reader = csv.DictReader(handle)
        columns, rows = reader.fieldnames, list(reader)
    test_patient = next(row["patient_id"] for row in rows if row["split"] == "test")
    next(row for row in rows if row["split"] == "train")["patient_id"] = test_patient
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(ValueError, match="patient-wise"):
        example_gen.read_manifest(str(tmp_path / "crops"))
    with pytest.raises(FileNotFoundError, match="MANIFEST.csv"):
        example_gen.read_manifest(str(tmp_path))


def test_an_example_carries_the_slice_and_its_readers_and_bad_files_are_skipped(tmp_path):
    item = example_gen.read_manifest(SAMPLE)[0]
    example = example_gen.to_example(item, SAMPLE)
    feature = example.features.feature
    assert len(feature[features.READER_MASKS_KEY].bytes_list.value) == features.READERS
    assert feature[features.PATIENT_KEY].bytes_list.value[0].decode() == item.patient_id
    assert Image.open(io.BytesIO(feature[features.IMAGE_KEY].bytes_list.value[0])).size == (128, 128)
    shutil.copytree(SAMPLE, tmp_path / "crops")
    (tmp_path / "crops" / "masks" / f"{item.pair_id}_mask-1.png").unlink()
    with pytest.raises(example_gen.SkippedFile, match="missing"):
        example_gen.to_example(item, str(tmp_path / "crops"))
    (tmp_path / "crops" / item.path).write_bytes(_png(np.zeros((64, 64))))
    with pytest.raises(example_gen.SkippedFile) as skipped:
        example_gen.to_example(item, str(tmp_path / "crops"))
    assert skipped.value.reason == "unexpected_format"


def test_the_consensus_is_two_of_four_readers_and_areas_fall_into_size_bins():
    readers = np.zeros((4, 6, 6))
    readers[0, :2] = readers[1, 0] = readers[2, 5, 5] = 1  # row 0 by two readers, row 1 and a corner by one
    target = preprocessing.consensus(tf.constant([_png(mask) for mask in readers])).numpy()[..., 0]
    assert target.sum() == 6 and target[0].all()
    bins = preprocessing.size_bin(tf.constant([0, 19, 20, 149, 150, 4000], tf.int64)).numpy().astype(str).tolist()
    assert bins == ["<20px", "<20px", "20-50px", "50-150px", ">=150px", ">=150px"]


def test_tfma_overlap_metrics_average_per_slice():
    target = np.zeros((3, 4, 4, 1), np.float32)
    target[:2, :2, :2] = 1
    predicted = target.copy()
    predicted[1, :2, :] = 1  # 4 of 8 predicted pixels right: Dice 2*4/(8+4), IoU 4/8; slice 3 is empty in both
    dice, iou = metrics.SliceDice(), metrics.SliceIoU()
    dice.update_state(target[:2], predicted[:2])
    dice.update_state(target[2:], predicted[2:])  # TFMA feeds batches; the totals add up
    iou.update_state(target, predicted)
    assert float(dice.result()) == pytest.approx((1 + 2 / 3 + 1) / 3)
    assert float(iou.result()) == pytest.approx((1 + 0.5 + 1) / 3)
    assert metrics.SliceDice.from_config(dice.get_config()).threshold == 0.5


def test_the_segmentation_config_round_trips_and_refuses_unknown_options():
    config = SegmentationConfig.from_dict({"epochs": 2, "unet": {"weights": "none", "decoder_widths": [8, 8, 8, 8]}})
    assert config.epochs == 2 and config.unet.decoder_widths == (8, 8, 8, 8) and config.window == 96
    assert SegmentationConfig.from_dict(config.to_dict()) == config
    assert SegmentationConfig.from_dict({"recipe": "full"}).unet.train_from_block == 1
    with pytest.raises(ValueError, match="unknown segmentation"):
        SegmentationConfig.from_dict({"epoch": 2})
    with pytest.raises(ValueError, match="unknown U-Net"):
        SegmentationConfig.from_dict({"unet": {"width": 2}})
    with pytest.raises(ValueError, match="precision"):
        SegmentationConfig(precision="half")


def test_the_command_gives_the_segmenter_its_own_data_and_options(tmp_path, monkeypatch):
    monkeypatch.delenv("RADASSIST_SEG_DATA_DIR", raising=False)
    monkeypatch.delenv("RADASSIST_HED_WEIGHTS", raising=False)
    data, is_sample = pipeline_cli.resolve_data_dir(None, repo_root=str(tmp_path), task="segmenter")
    assert is_sample and data.endswith("data/sample/lidc-crops")
    monkeypatch.setenv("RADASSIST_SEG_DATA_DIR", str(tmp_path))
    assert pipeline_cli.resolve_data_dir(None, task="segmenter") == (str(tmp_path), False)
    args = argparse.Namespace(task="segmenter", training_json=None, seed=3, recipe=None, weights="/w.h5", quick=True)
    assert pipeline_cli.training_options(args) == {"seed": 3, "unet": {"weights": "/w.h5"}, "epochs": 1,
                                                   "window": 64}
    assert SegmentationConfig.from_dict(pipeline_cli.training_options(args)).unet.weights == "/w.h5"


def test_the_run_summary_shows_dice_by_nodule_size():
    summary = {"metrics": {"overall": {"dice": 0.8, "iou": 0.7, "example_count": 8},
                           "nodule_size=<20px": {"dice": 0.5, "iou": 0.4, "example_count": 3}},
               "audit": {"train_examples": 40}, "blessed": True, "pushed": True, "pushed_version": 7,
               "pushed_destination": "/models/radassist-seg/7"}
    text = format_summary(summary)
    assert "Dice" in text and "nodule_size=<20px" in text and "0.800" in text and "accuracy" not in text
    assert "data: train" not in text and "pushed version 7" in text


def test_intensities_are_min_max_scaled_so_a_linear_window_change_gives_the_same_input():
    from components.segmentation import intensity

    rng = np.random.default_rng(0)
    grey = rng.uniform(20, 200, (16, 24, 1)).astype(np.float32)
    windowed = 0.5 * grey + 60  # another export's level and width
    first, second = intensity.canonical(tf.constant(grey)).numpy(), intensity.canonical(tf.constant(windowed)).numpy()
    np.testing.assert_allclose(first, second, atol=1e-5)
    assert first.min() == 0.0 and first.max() == pytest.approx(1.0)
    assert not intensity.canonical(tf.fill([8, 8, 1], 90.0)).numpy().any()  # a uniform image is all 0, not NaN


def test_only_the_content_of_a_scan_with_a_flat_border_is_segmented():
    """A slice with a flat border (a window's black air, a lung mask's background) is segmented inside the box of
    its content plus a margin, padded with the background: the same map there as the whole image gives, nothing
    outside, and a much smaller input for the network. Where the corners differ the whole image is segmented."""
    from components.segmentation import export

    rng = np.random.default_rng(0)
    scan = np.zeros((200, 160), np.uint8)
    scan[60:100, 50:110] = rng.integers(30, 256, (40, 60))
    scan[60, 50] = 255
    seen = []
    kernel = tf.constant(np.full((3, 3, 1, 1), 1 / 9, np.float32))

    def model(batch, training=False):  # a local stand-in for the U-Net: 3 x 3 mean, then a steep logit
        seen.append(tuple(batch.shape))
        return 20.0 * (tf.nn.conv2d(batch, kernel, 1, "SAME") - 0.3)

    segment = export.build_segment(model, threshold=0.5)
    result = segment(tf.constant([_grey_png(scan)]))
    chart = result["probability_map"].numpy()[0]
    canonical = scan / 255.0
    expected = tf.sigmoid(model(tf.constant(canonical[None, ..., None], tf.float32))).numpy()[0, ..., 0]
    margin = export.CONTENT_MARGIN
    box = (slice(60 - margin, 100 + margin), slice(50 - margin, 110 + margin))
    assert seen[0][1] < 100 and seen[0][2] < 100 and seen[0][1] % 8 == 0 and seen[0][2] % 8 == 0
    np.testing.assert_allclose(chart[box], expected[box], atol=1e-6)
    outside = np.ones_like(chart, bool)
    outside[box] = False
    assert chart.shape == scan.shape and not chart[outside].any()
    assert int(result["lesion_count"][0]) >= 1

    scan[0, 0] = 255  # corners no longer agree: no background to skip
    seen.clear()
    segment(tf.constant([_grey_png(scan)]))
    assert seen[0][1:3] == (200, 160)



def _grey_png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()
