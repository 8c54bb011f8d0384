"""Segmentation benchmark (issue 13), in progress: the CPU recipe on the LIDC-IDRI crops, against the readers.

- ``test_patient_dice_mean``: Dice against the >= 2-of-4 consensus per test slice, averaged per patient, then over
  the test patients; a bootstrap 95 % CI over patients; IoU; Dice by consensus area; Dice on crops shifted
  off-centre (the crops are all centred on their nodule, so a model may learn "the centre").
- ``reader_agreement_dice_mean``: each reader's mask against the consensus (>= 2) of the other three readers, on
  the test slices that >= 3 readers outlined, averaged the same way: the human anchor.
- ``full_slice_detection_sensitivity`` / ``full_slice_false_positives_per_slice``: on the 108 whole 512 x 512
  slices (../lidc-idri-nodule-slices, lung-masked and z-scored by their source: mapped here to the crops'
  intensities by quantiles), the share of nodules a lesion overlaps, and lesions that overlap none.
- ``train_seconds``: the CPU recipe's training time on this machine.

Not yet measured here (the model is not yet exported or served): ``gradcam_pointing_game`` and
``segment_ms_p50``; the script writes no result file until it measures every key the issue names.

Usage: python -m benchmarks.segmentation --data ../shared/data/lung-seg --seeds 0
"""

import argparse
import dataclasses
import glob
import gzip
import os
import platform

import numpy as np
import tensorflow as tf
from scipy import ndimage

from components.segmentation import lesions, recipe
from components.segmentation.data import load_crops

AREA_BINS = ((0, 20), (20, 50), (50, 150), (150, None))  # consensus area, px
SHIFTS = ((24, -20), (-30, 30))                          # (rows, columns) the crop content moves
QUANTILES = np.linspace(0.5, 99.5, 199)


def bootstrap_ci(values: np.ndarray, patients: np.ndarray, draws: int = 2000, seed: int = 0) -> list[float]:
    """95 % CI of the patient mean, resampling patients."""
    rng = np.random.default_rng(seed)
    names = np.unique(patients)
    means = np.array([values[patients == name].mean() for name in names])
    samples = rng.choice(len(names), (draws, len(names)))
    return [float(v) for v in np.percentile(means[samples].mean(axis=1), [2.5, 97.5])]


def shifted(images: np.ndarray, offset: tuple[int, int]) -> np.ndarray:
    """The crops with their content moved by ``offset`` (edge pixels repeated into the gap)."""
    pad = max(abs(v) for v in offset)
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    rows, cols = images.shape[1:]
    return padded[:, pad - offset[0]:pad - offset[0] + rows, pad - offset[1]:pad - offset[1] + cols]


def reader_agreement(masks: np.ndarray, patients: np.ndarray) -> tuple[float, int]:
    """Patient mean of reader-vs-others Dice on slices >= 3 readers outlined, and the number of patients."""
    values, owners = [], []
    for slice_masks, patient in zip(masks, patients, strict=True):
        outlined = [r for r in range(len(slice_masks)) if slice_masks[r].any()]
        if len(outlined) < 3:
            continue
        for reader in outlined:
            others = np.delete(slice_masks, reader, axis=0).sum(axis=0) >= 2
            values.append(recipe.dice(slice_masks[reader][None], others[None])[0])
            owners.append(patient)
    return recipe.patient_mean(np.array(values), np.array(owners)), len(set(owners))


def full_slices(data_dir: str):
    """(image float [512, 512], mask bool) of each whole slice."""
    for path in sorted(glob.glob(os.path.join(data_dir, "lidc-idri-nodule-slices", "images", "*.npy.gz"))):
        mask_path = path.replace(f"{os.sep}images{os.sep}", f"{os.sep}masks{os.sep}").replace("_NI", "_MA")
        with gzip.open(path) as image, gzip.open(mask_path) as mask:
            yield np.load(image), np.load(mask)


def to_crop_intensities(image: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """uint8 slice whose pixels inside the lungs (not the source's flat background) follow the crops' quantiles."""
    background = np.median(image)
    inside = image[image != background]
    levels = np.percentile(inside, QUANTILES)
    mapped = np.interp(image, levels, reference)
    return np.clip(np.where(image == background, reference[0], mapped), 0, 255).astype(np.uint8)


def full_slice_detection(model, threshold: float, data_dir: str, reference: np.ndarray) -> dict:
    """Nodules found and false lesions over the whole slices: a lesion is a component of at least
    lesions.MIN_AREA_PIXELS at the threshold (the graph's own labelling), found when it overlaps a nodule."""
    found = missed = false_positives = slices = 0
    for image, mask in full_slices(data_dir):
        probability = recipe.probabilities(model, to_crop_intensities(image, reference)[None] / 255.0)[0]
        labels = lesions.connected_components(tf.constant(probability >= threshold)).numpy()
        areas = np.bincount(labels.ravel())
        kept = {label for label in range(1, len(areas)) if areas[label] >= lesions.MIN_AREA_PIXELS}
        nodules, count = ndimage.label(mask, structure=np.ones((3, 3)))
        for nodule in range(1, count + 1):
            hit = bool(set(np.unique(labels[nodules == nodule])) & kept)
            found, missed = found + hit, missed + (not hit)
        false_positives += sum(1 for label in kept if not mask[labels == label].any())
        slices += 1
    return {"sensitivity": found / max(found + missed, 1), "false_positives_per_slice": false_positives / slices,
            "nodules": found + missed, "slices": slices}


def run_seed(seed: int, data, data_dir: str, config: recipe.SegmentationConfig) -> dict:
    train, val, test = data.of_split("train"), data.of_split("val"), data.of_split("test")
    trained = recipe.train(dataclasses.replace(config, seed=seed), train.images / 255.0, train.consensus,
                           progress=lambda e, n, loss: print(f"  seed {seed} epoch {e}/{n} loss {loss:.3f}",
                                                             flush=True))
    threshold = recipe.choose_threshold(recipe.probabilities(trained.model, val.images / 255.0), val.consensus,
                                        val.patient_id)
    probability = recipe.probabilities(trained.model, test.images / 255.0)
    predicted, target = probability >= threshold, test.consensus
    dice = recipe.dice(predicted, target)
    area = target.sum(axis=(1, 2))
    by_size = {}
    for low, high in AREA_BINS:
        rows = (area >= low) & (area < (high or np.inf))
        by_size[f"{low}-{high or 'max'}px"] = {"slices": int(rows.sum()), "dice": float(dice[rows].mean())}
    shifts = {}
    for offset in SHIFTS:
        moved = recipe.probabilities(trained.model, shifted(test.images, offset) / 255.0) >= threshold
        shifts[f"{offset[0]},{offset[1]}"] = recipe.patient_mean(
            recipe.dice(moved, shifted(target.astype(np.uint8), offset).astype(bool)), test.patient_id)
    reference = np.percentile(train.images, QUANTILES)
    return {
        "seed": seed, "threshold": threshold, "train_seconds": trained.train_seconds, "policy": trained.policy,
        "test_patient_dice_mean": recipe.patient_mean(dice, test.patient_id),
        "test_patient_dice_ci95": bootstrap_ci(dice, test.patient_id),
        "test_patient_iou_mean": recipe.patient_mean(recipe.iou(predicted, target), test.patient_id),
        "dice_by_consensus_area": by_size, "shifted_patient_dice": shifts,
        "full_slice": full_slice_detection(trained.model, threshold, data_dir, reference),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="RadAssist segmentation benchmark (in progress)")
    parser.add_argument("--data", default="../shared/data/lung-seg")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=None, help="override the CPU recipe's epochs")
    args = parser.parse_args()
    config = recipe.SegmentationConfig()
    if args.epochs:
        config = dataclasses.replace(config, epochs=args.epochs)
    data = load_crops(os.path.join(args.data, "lidc-idri-nodule-crops128"))
    test = data.of_split("test")
    agreement, patients = reader_agreement(test.masks, test.patient_id)
    print(f"reader_agreement_dice_mean {agreement:.3f} ({patients} test patients); {platform.processor()}")
    for seed in args.seeds:
        result = run_seed(seed, data, args.data, config)
        print(f"seed {seed}: test_patient_dice_mean {result['test_patient_dice_mean']:.3f} "
              f"CI {result['test_patient_dice_ci95']}, IoU {result['test_patient_iou_mean']:.3f}, "
              f"threshold {result['threshold']}, train {result['train_seconds']:.0f}s ({result['policy']})")
        print(f"  by consensus area: {result['dice_by_consensus_area']}")
        print(f"  shifted: {result['shifted_patient_dice']}")
        print(f"  full slices: {result['full_slice']}")


if __name__ == "__main__":
    main()
