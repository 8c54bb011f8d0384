"""Segmentation benchmark (issue 13): the segmenter trained by its TFX pipeline (CPU recipe) on the LIDC-IDRI crops,
served beside the classifier from one model config file, measured through the model server's ``segment`` signature
exactly as the portal calls it.

- ``test_patient_dice_mean``: Dice of the lesion mask (the served map at the model's threshold) against the >= 2-of-4
  consensus, per test slice, averaged per patient, then over the test patients; a bootstrap 95 % CI over patients;
  also IoU, Dice by consensus area and on crops whose content is shifted off-centre (the crops are all centred on
  their nodule, so a model may learn "the centre").
- ``reader_agreement_dice_mean``: each reader's mask against the consensus (>= 2) of the other three readers, on the
  test slices that >= 3 readers outlined, averaged the same way: the human anchor.
- ``full_slice_detection_sensitivity`` / ``full_slice_false_positives_per_slice``: on the 108 whole 512 x 512 slices
  (../lidc-idri-nodule-slices: lung-masked and z-scored by their source, exported here as min-max 8-bit PNGs, the
  way any float image becomes a picture), the share of nodules (the mask's 8-connected components) that a served
  lesion overlaps, and the served lesions that overlap none.
- ``gradcam_pointing_game``: share of those slices where the classifier's Grad-CAM maximum (its ``explain``
  signature, mapped back through ``crop_box`` and ``crop_angle``) falls inside the nodule mask.
- ``train_seconds``: the recipe's training time in the Trainer (2 cores here); ``segment_ms_p50``: one 512 x 512 slice
  per ``segment`` call over gRPC, median of the timed calls.

``segmentation.json`` holds exactly these seven keys; the CI, IoU, sizes, shifts, per-slice results, the training
record and the machine go to ``segmentation_details.json``.

Usage: python -m benchmarks.segmentation --data ../shared/data/lung-seg --chest-ct ../shared/data/chest-ct
       (``--segmenter-base``/``--classifier-base``: already trained model bases instead of running the pipelines)
"""

import argparse
import glob
import gzip
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image
from scipy import ndimage

from benchmarks import write_result
from components.segmentation import recipe
from components.segmentation.data import load_crops
from components.segmentation.lesions import MIN_AREA_PIXELS
from radassist.contract import MODEL_NAME, SEGMENTATION_MODEL_NAME

RESULTS_DIR = os.path.join(os.path.dirname(__file__), "results")
AREA_BINS = ((0, 20), (20, 50), (50, 150), (150, None))  # consensus area, px (the Transform graph's size bins)
SHIFTS = ((24, -20), (-30, 30))                          # (rows, columns) the crop content moves
EIGHT_CONNECTED = np.ones((3, 3))                        # as the graph's lesions
POINTING_TOLERANCE_PX = 8                                # the tolerant variant: Grad-CAM's maximum this near the mask
# The top-level keys of segmentation.json, exactly as the issue names them; everything else measured goes to
# segmentation_details.json beside it.
RESULT_KEYS = ("test_patient_dice_mean", "reader_agreement_dice_mean", "full_slice_detection_sensitivity",
               "full_slice_false_positives_per_slice", "gradcam_pointing_game", "train_seconds", "segment_ms_p50")
TARGETS = {"test_patient_dice_mean": 0.82, "full_slice_detection_sensitivity": 0.8,
           "full_slice_false_positives_per_slice": 0.5, "train_seconds": 1200, "segment_ms_p50": 400}


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
    """(name, image float [512, 512], mask bool) of each whole slice."""
    for path in sorted(glob.glob(os.path.join(data_dir, "lidc-idri-nodule-slices", "images", "*.npy.gz"))):
        mask_path = path.replace(f"{os.sep}images{os.sep}", f"{os.sep}masks{os.sep}").replace("_NI", "_MA")
        with gzip.open(path) as image, gzip.open(mask_path) as mask:
            yield os.path.basename(path), np.load(image), np.load(mask).astype(bool)


def png(pixels: np.ndarray) -> bytes:
    """An 8-bit grey PNG of any array (min-max scaled unless already uint8)."""
    if pixels.dtype != np.uint8:
        low, high = float(pixels.min()), float(pixels.max())
        pixels = np.round((pixels - low) / max(high - low, 1e-6) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def lesion_labels(mask: np.ndarray) -> np.ndarray:
    """A map's lesions as labels (8-connected components of at least MIN_AREA_PIXELS of the bool ``mask``, the
    pixels at the threshold), the same as the graph's; 0 elsewhere."""
    labels, count = ndimage.label(mask, structure=EIGHT_CONNECTED)
    areas = np.bincount(labels.ravel(), minlength=count + 1)
    keep = areas >= MIN_AREA_PIXELS
    keep[0] = False
    return np.where(keep[labels], labels, 0)


def detection(found: np.ndarray, mask: np.ndarray) -> tuple[int, int, int]:
    """(nodules a lesion overlaps, nodules, lesions overlapping no nodule) on one slice."""
    nodules, count = ndimage.label(mask, structure=EIGHT_CONNECTED)
    hits = sum(bool((found[nodules == nodule] > 0).any()) for nodule in range(1, count + 1))
    false = sum(1 for label in np.unique(found) if label and not mask[found == label].any())
    return hits, count, false


def gradcam_peak(prediction) -> tuple[float, float]:
    """The input pixel (y, x) at the centre of the Grad-CAM map's hottest cell: the cell's place in the square the
    model saw (``crop_box``), turned back by ``crop_angle`` about the square's centre (as the portal's overlay)."""
    heat = np.asarray(prediction.heatmap)
    row, column = np.unravel_index(int(np.argmax(heat)), heat.shape)
    y0, x0, y1, x1 = prediction.crop_box
    across = (row + 0.5) / heat.shape[0] * (y1 - y0) - (y1 - y0) / 2
    along = (column + 0.5) / heat.shape[1] * (x1 - x0) - (x1 - x0) / 2
    angle = np.deg2rad(prediction.crop_angle or 0.0)
    dx = along * np.cos(angle) - across * np.sin(angle)
    dy = along * np.sin(angle) + across * np.cos(angle)
    return (y0 + y1) / 2 + dy, (x0 + x1) / 2 + dx


def draw_figure(samples: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]], path: str) -> None:
    """Whole slices side by side: the readers' nodule outlined in green, the served lesions in amber (the portal's
    colour), each titled with what was found."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(samples), figsize=(4 * len(samples), 4.4))
    for axis, (name, image, mask, lesions) in zip(np.atleast_1d(axes), samples, strict=True):
        axis.imshow(image, cmap="gray")
        axis.contour(mask, levels=[0.5], colors=["#00d000"], linewidths=1.2)
        if lesions.any():
            axis.contour(lesions > 0, levels=[0.5], colors=["#ffd600"], linewidths=1.0)
        hits, nodules, false = detection(lesions, mask)
        axis.set_title(f"{name.split('.')[0]}\n{hits}/{nodules} found, {false} false", fontsize=9)
        axis.axis("off")
    figure.suptitle("Whole LIDC slices: readers' consensus (green), served lesions (amber)")
    figure.tight_layout(rect=(0, 0, 1, 0.92))
    figure.savefig(path, dpi=110)
    plt.close(figure)
    print(f"wrote {path}")


def _run_pipeline(args: list[str], log_path: str) -> None:
    command = [sys.executable, "-m", "radassist.cli", "pipeline", "run", *args]
    print("running", " ".join(command[2:]), f"(log {log_path})", flush=True)
    with open(log_path, "w") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)


def _model_info(base: str, name: str) -> dict:
    (path,) = sorted(glob.glob(os.path.join(base, name, "*", "assets.extra", "radassist_model.json")))[-1:]
    with open(path) as handle:
        return json.load(handle)


def crop_scores(client, crops, threshold_note: list) -> dict:
    """Served Dice/IoU on the test crops, as they are and shifted."""
    test = crops.of_split("test")
    target = test.consensus
    served = [s for start in range(0, len(test), 32)
              for s in client.segment_batch([png(image) for image in test.images[start:start + 32]])]
    threshold_note.append(served[0].threshold)
    predicted = np.stack([s.mask for s in served])
    dice = recipe.dice(predicted, target)
    area = target.sum(axis=(1, 2))
    by_size = {}
    for low, high in AREA_BINS:
        rows = (area >= low) & (area < (high or np.inf))
        by_size[f"{low}-{high or 'max'}px"] = {"slices": int(rows.sum()),
                                               "patient_dice_mean": recipe.patient_mean(dice[rows],
                                                                                        test.patient_id[rows])}
    moved_scores = {}
    for offset in SHIFTS:
        moved = shifted(test.images, offset)
        masks = shifted(target.astype(np.uint8), offset).astype(bool)
        answer = [s for start in range(0, len(test), 32)
                  for s in client.segment_batch([png(image) for image in moved[start:start + 32]])]
        moved_scores[f"{offset[0]},{offset[1]}"] = recipe.patient_mean(
            recipe.dice(np.stack([s.mask for s in answer]), masks), test.patient_id)
    return {"dice": dice, "patients": test.patient_id,
            "test_patient_iou_mean": recipe.patient_mean(recipe.iou(predicted, target), test.patient_id),
            "dice_by_consensus_area": by_size, "shifted_patient_dice_mean": moved_scores,
            "test_slices": int(len(test)), "test_patients": int(len(np.unique(test.patient_id)))}


def main() -> None:
    parser = argparse.ArgumentParser(description="RadAssist segmentation benchmark (issue 13)")
    parser.add_argument("--data", default="../shared/data/lung-seg")
    parser.add_argument("--chest-ct", default="../shared/data/chest-ct", help="the classifier's data (pointing game)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--segmenter-base", help="a model base holding radassist-seg (skips its pipeline run)")
    parser.add_argument("--classifier-base", help="a model base holding radassist (skips its pipeline run)")
    parser.add_argument("--workdir", help="where the pipelines and the server write (default: a temporary folder)")
    parser.add_argument("--timed-calls", type=int, default=40)
    parser.add_argument("--output", default=os.path.join(RESULTS_DIR, "segmentation.json"))
    args = parser.parse_args()
    from radassist.stack import ModelServerProcess
    from serving.client import ServingClient
    from serving.model_config import ServedModel, format_model_config

    started = time.time()
    workdir = args.workdir or tempfile.mkdtemp(prefix="radassist-seg-bench-")
    os.makedirs(workdir, exist_ok=True)
    segmenter_base = args.segmenter_base or os.path.join(workdir, "segmenter", "models")
    if not args.segmenter_base:
        _run_pipeline(["--task", "segmenter", "--data", os.path.join(args.data, "lidc-idri-nodule-crops128"),
                       "--output", os.path.join(workdir, "segmenter"), "--seed", str(args.seed)],
                      os.path.join(workdir, "segmenter.log"))
    classifier_base = args.classifier_base or os.path.join(workdir, "classifier", "models")
    if not args.classifier_base:
        _run_pipeline(["--data", args.chest_ct, "--output", os.path.join(workdir, "classifier"), "--seed",
                       str(args.seed)], os.path.join(workdir, "classifier.log"))
    info = _model_info(segmenter_base, SEGMENTATION_MODEL_NAME)
    config = os.path.join(workdir, "models.config")
    with open(config, "w") as handle:
        handle.write(format_model_config([ServedModel(MODEL_NAME, os.path.join(classifier_base, MODEL_NAME)),
                                          ServedModel(SEGMENTATION_MODEL_NAME,
                                                      os.path.join(segmenter_base, SEGMENTATION_MODEL_NAME))]))
    os.makedirs(os.path.join(workdir, "empty"), exist_ok=True)
    server = ModelServerProcess(os.path.join(workdir, "empty"), "--model-config-file", config,
                                "--max-request-bytes", str(256 << 20)).start()
    try:
        with ServingClient(server.address, timeout=600) as client:
            result = measure(client, args, info)
    finally:
        server.stop()
    result.update({"benchmark": "segmentation", "seed": args.seed, "workdir": workdir,
                   "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                               "processor": platform.processor()},
                   "wall_seconds": round(time.time() - started, 1)})
    print_table(result)
    write_result({key: result[key] for key in RESULT_KEYS}, args.output)
    write_result({key: value for key, value in result.items() if key not in RESULT_KEYS},
                 args.output.removesuffix(".json") + "_details.json")


def measure(client, args, info: dict) -> dict:
    crops = load_crops(os.path.join(args.data, "lidc-idri-nodule-crops128"), splits=("test",))
    test = crops.of_split("test")
    agreement, agreement_patients = reader_agreement(test.masks, test.patient_id)
    threshold = []
    scores = crop_scores(client, crops, threshold)
    hits = nodules = false_positives = slices = pointed = pointed_near = 0
    per_slice, pictures = [], []
    for name, image, mask in full_slices(args.data):
        encoded = png(image)
        (segmentation,) = client.segment_batch([encoded])
        found = lesion_labels(segmentation.mask)
        slice_hits, slice_nodules, slice_false = detection(found, mask)
        explained = client.explain(encoded)
        y, x = gradcam_peak(explained)
        inside = 0 <= round(y) < mask.shape[0] and 0 <= round(x) < mask.shape[1] and mask[round(y), round(x)]
        distance = ndimage.distance_transform_edt(~mask)
        near = 0 <= round(y) < mask.shape[0] and 0 <= round(x) < mask.shape[1] and \
            distance[round(y), round(x)] <= POINTING_TOLERANCE_PX
        if len(per_slice) % 27 == 0:  # four slices across the set, one of each of several patients
            pictures.append((name, image, mask, found))
        hits, nodules, false_positives = hits + slice_hits, nodules + slice_nodules, false_positives + slice_false
        pointed, pointed_near, slices = pointed + bool(inside), pointed_near + bool(near), slices + 1
        per_slice.append({"slice": name, "nodules": slice_nodules, "found": slice_hits,
                          "false_positives": slice_false, "gradcam_peak_in_nodule": bool(inside),
                          "classifier_in_domain": explained.in_domain})
    draw_figure(pictures, args.output.removesuffix(".json") + ".png")
    slice_png = png(next(full_slices(args.data))[1])
    for _ in range(3):
        client.segment(slice_png)  # warm: the first calls trace
    timings = []
    for _ in range(args.timed_calls):
        begin = time.perf_counter()
        client.segment(slice_png)
        timings.append((time.perf_counter() - begin) * 1000)
    return {
        "test_patient_dice_mean": recipe.patient_mean(scores["dice"], scores["patients"]),
        "reader_agreement_dice_mean": agreement,
        "full_slice_detection_sensitivity": hits / max(nodules, 1),
        "full_slice_false_positives_per_slice": false_positives / max(slices, 1),
        "gradcam_pointing_game": pointed / max(slices, 1),
        "train_seconds": info.get("train_seconds"),
        "segment_ms_p50": statistics.median(timings),
        "targets": TARGETS,
        "details": {
            "test_patient_dice_ci95": bootstrap_ci(scores["dice"], scores["patients"]),
            "test_patient_iou_mean": scores["test_patient_iou_mean"],
            "dice_by_consensus_area": scores["dice_by_consensus_area"],
            "shifted_patient_dice_mean": scores["shifted_patient_dice_mean"],
            "test_slices": scores["test_slices"], "test_patients": scores["test_patients"],
            "reader_agreement_patients": agreement_patients,
            "lesion_threshold": threshold[0],
            "full_slices": slices, "full_slice_nodules": nodules,
            "gradcam_pointing_game_within_px": {"tolerance_px": POINTING_TOLERANCE_PX,
                                                "share": pointed_near / max(slices, 1)},
            "segment_ms": {"p50": statistics.median(timings), "p90": float(np.percentile(timings, 90)),
                           "calls": len(timings), "image": "512 x 512 PNG, one per call, gRPC"},
            "trainer_seconds": info.get("training_seconds"),
            "train_steps": info.get("train_steps"), "planned_train_steps": info.get("planned_train_steps"),
            "training": info.get("training"), "training_dtype_policy": info.get("training_dtype_policy"),
            "valid_patient_dice_mean": info.get("valid_patient_dice_mean"),
            "per_full_slice": per_slice,
        },
    }


def print_table(result: dict) -> None:
    print(f"{'measure':<40}{'value':>10}{'target':>10}")
    for key in RESULT_KEYS:
        target = TARGETS.get(key, "")
        value = result[key]
        print(f"{key:<40}{value:>10.3f}{target!s:>10}" if isinstance(value, float) else f"{key:<40}{value!s:>10}")
    details = result["details"]
    print(f"Dice CI95 {details['test_patient_dice_ci95']}, IoU {details['test_patient_iou_mean']:.3f}, "
          f"shifted {details['shifted_patient_dice_mean']}, threshold {details['lesion_threshold']}")
    print(f"by consensus area: {details['dice_by_consensus_area']}")


if __name__ == "__main__":
    main()

