"""Robustness benchmark: accuracy under acquisition shifts, calibration, selective prediction and the
out-of-distribution gate, for the default (CPU) recipe on the full chest-CT data, several seeds.

- Shift suite: every official test image re-exported the way other sites' scans look (window gamma, contrast,
  level, black padding, border crop, blur, JPEG, resolution, noise, rotation), each at two strengths.
- Calibration on the official and leak-free test: expected calibration error (15 bins) with a bootstrap 95 % CI,
  Brier score, NLL; the risk-coverage curve and the coverage of the trained "uncertain, needs review" line.
- Out-of-distribution sets built here: non-CT pictures (scikit-image's bundled sample images, rendered text
  pages), LIDC-IDRI slices from another export protocol (../shared/data/lung-seg), pydicom's non-chest test
  DICOMs rendered the way the portal renders uploads. Share flagged and AUROC of ``ood_score`` against the
  official test split (input-check failures count as infinitely far).

The model is evaluated exactly as exported: canonicalisation with the train split's reference, the float32 trunk,
the mean of the heads, the temperature and the gate (components/trainer/ood.py). The
trunk is frozen in the CPU recipe, so the pooled features of each image set are computed once and every seed's
heads and gate read them.

Usage: python -m benchmarks.robustness --data ../shared/data/chest-ct --seeds 0 1 2
"""

import argparse
import glob
import gzip
import io
import json
import os
import platform
import time

import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

from benchmarks import write_result
from benchmarks.accuracy import RESULTS_DIR, canonicalise_all, load_dataset, model_pixels, shifted_views
from components import features, imaging
from components.trainer import ood, recipes

ECE_BINS = 15


# --- the shift suite -------------------------------------------------------------------------------------------
def _gamma(image: Image.Image, gamma: float) -> Image.Image:
    return image.point(lambda v: round(255 * (v / 255) ** gamma))


def _level(image: Image.Image, offset: int) -> Image.Image:
    return image.point(lambda v: min(255, max(0, v + offset)))


def _pad(image: Image.Image, fraction: float) -> Image.Image:
    width, height = image.size
    dx, dy = round(width * fraction), round(height * fraction)
    canvas = Image.new("L", (width + 2 * dx, height + 2 * dy), 0)
    canvas.paste(image, (dx, dy))
    return canvas


def _crop(image: Image.Image, fraction: float) -> Image.Image:
    width, height = image.size
    dx, dy = round(width * fraction), round(height * fraction)
    return image.crop((dx, dy, width - dx, height - dy))


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("L")


def _scale(image: Image.Image, factor: float) -> Image.Image:
    width, height = image.size
    return image.resize((max(1, round(width * factor)), max(1, round(height * factor))), Image.BILINEAR)


def _noise(image: Image.Image, sigma: float, seed: int = 0) -> Image.Image:
    pixels = np.asarray(image, np.float32)
    noisy = pixels + np.random.default_rng(seed).normal(0, sigma, pixels.shape)
    return Image.fromarray(np.clip(np.round(noisy), 0, 255).astype(np.uint8))


SHIFTS = {  # name -> (kind, strength, function of a grayscale PIL image)
    "gamma_1.3": ("gamma (darker window)", 1, lambda im: _gamma(im, 1.3)),
    "gamma_1.6": ("gamma (darker window)", 2, lambda im: _gamma(im, 1.6)),
    "gamma_0.8": ("gamma (brighter window)", 1, lambda im: _gamma(im, 0.8)),
    "gamma_0.6": ("gamma (brighter window)", 2, lambda im: _gamma(im, 0.6)),
    "contrast_0.85": ("contrast lower", 1, lambda im: ImageEnhance.Contrast(im).enhance(0.85)),
    "contrast_0.7": ("contrast lower", 2, lambda im: ImageEnhance.Contrast(im).enhance(0.7)),
    "contrast_1.25": ("contrast higher", 1, lambda im: ImageEnhance.Contrast(im).enhance(1.25)),
    "contrast_1.5": ("contrast higher", 2, lambda im: ImageEnhance.Contrast(im).enhance(1.5)),
    "level_+15": ("window level", 1, lambda im: _level(im, 15)),
    "level_-30": ("window level", 2, lambda im: _level(im, -30)),
    "pad_0.08": ("black padding", 1, lambda im: _pad(im, 0.08)),
    "pad_0.15": ("black padding", 2, lambda im: _pad(im, 0.15)),
    "crop_0.05": ("border crop", 1, lambda im: _crop(im, 0.05)),
    "crop_0.10": ("border crop", 2, lambda im: _crop(im, 0.10)),
    "blur_0.8": ("blur", 1, lambda im: im.filter(ImageFilter.GaussianBlur(0.8))),
    "blur_1.5": ("blur", 2, lambda im: im.filter(ImageFilter.GaussianBlur(1.5))),
    "jpeg_50": ("JPEG", 1, lambda im: _jpeg(im, 50)),
    "jpeg_30": ("JPEG", 2, lambda im: _jpeg(im, 30)),
    "scale_0.75": ("resolution", 1, lambda im: _scale(im, 0.75)),
    "scale_0.5": ("resolution", 2, lambda im: _scale(im, 0.5)),
    "noise_4": ("noise", 1, lambda im: _noise(im, 4)),
    "noise_8": ("noise", 2, lambda im: _noise(im, 8)),
    "rotate_5": ("rotation", 1, lambda im: im.rotate(5, resample=Image.BILINEAR)),
    "rotate_10": ("rotation", 2, lambda im: im.rotate(10, resample=Image.BILINEAR)),
}


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def shifted(encoded: list[bytes], shift) -> list[bytes]:
    return [_png(shift(Image.open(io.BytesIO(data)).convert("L"))) for data in encoded]


# --- out-of-distribution sets ----------------------------------------------------------------------------------
def non_ct_pictures() -> dict[str, bytes]:
    """scikit-image's bundled sample pictures (photographs, micrographs, a phantom, drawings)."""
    import skimage

    folder = os.path.join(os.path.dirname(skimage.__file__), "data")
    pictures = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.png")) + glob.glob(os.path.join(folder, "*.jpg"))):
        with Image.open(path) as image:
            image.load()
            pictures[os.path.basename(path)] = _png(image.convert("RGB") if image.mode not in ("L", "RGB") else image)
    return pictures


def text_pages(count: int = 8) -> dict[str, bytes]:
    """Rendered pages of text: black on white, white on black, small and large print."""
    rng = np.random.default_rng(0)
    words = ["patient", "report", "slice", "contrast", "lung", "nodule", "window", "level", "image", "export",
             "hospital", "review", "finding", "normal", "series", "study", "axial"]
    pages = {}
    for index in range(count):
        inverted = index % 2 == 1
        size = (600, 800) if index % 3 else (512, 512)
        page = Image.new("L", size, 0 if inverted else 255)
        draw = ImageDraw.Draw(page)
        font = ImageFont.load_default(size=12 + 6 * (index % 4))
        y = 20
        while y < size[1] - 30:
            draw.text((20, y), " ".join(rng.choice(words, 8)), fill=255 if inverted else 0, font=font)
            y += 18 + 6 * (index % 4)
        pages[f"text_page_{index}.png"] = _png(page)
    return pages


def lidc_slices(lung_seg_root: str) -> dict[str, bytes]:
    """LIDC-IDRI slices exported by another protocol (z-scored, outside the lungs flattened), min-max to 8 bits."""
    slices = {}
    for path in sorted(glob.glob(os.path.join(lung_seg_root, "lidc-idri-nodule-slices", "images", "*.npy.gz"))):
        with gzip.open(path) as handle:
            values = np.load(handle)
        low, high = np.percentile(values, [0.5, 99.5])
        gray = np.clip((values - low) / max(high - low, 1e-6) * 255, 0, 255).astype(np.uint8)
        slices[os.path.basename(path)] = _png(Image.fromarray(gray))
    return slices


def dicom_non_chest() -> dict[str, bytes]:
    """pydicom's bundled test images that are not chest CT, rendered as the portal renders uploads."""
    from pydicom.data import get_testdata_file

    from portal import intake

    names = ("MR_small.dcm", "examples_overlay.dcm", "J2K_pixelrep_mismatch.dcm", "CT_small.dcm", "JPEG2000.dcm",
             "examples_jpeg2k.dcm", "examples_palette.dcm", "examples_rgb_color.dcm", "US1_J2KR.dcm",
             "SC_rgb.dcm", "OBXXXX1A.dcm", "emri_small.dcm", "MR2_J2KR.dcm", "693_J2KI.dcm")
    rendered = {}
    for name in names:
        path = get_testdata_file(name, download=False)
        if path is None:
            continue
        with open(path, "rb") as handle:
            results = list(intake.intake_stream([(name, handle.read())]))
        for scan in results:
            if isinstance(scan, intake.AcceptedScan):
                rendered[name] = scan.png
    return rendered


# --- scoring ---------------------------------------------------------------------------------------------------
def _bins(confidence: np.ndarray, bins: int) -> np.ndarray:
    edges = np.linspace(0.0, 1.0, bins + 1)
    return np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    confidence = probabilities.max(1)
    correct = probabilities.argmax(1) == labels
    which = _bins(confidence, bins)
    total = 0.0
    for b in range(bins):
        chosen = which == b
        if chosen.any():
            total += chosen.mean() * abs(correct[chosen].mean() - confidence[chosen].mean())
    return float(total)


def ece_noise_floor(probabilities: np.ndarray, resamples: int = 1000, bins: int = ECE_BINS) -> float:
    """The ECE a perfectly calibrated model with these confidences would still show on this many images (each
    right with probability equal to its confidence): the estimator's bias, the floor below which no model can be
    shown to be better calibrated on this test set."""
    confidence = probabilities.max(1)
    which = _bins(confidence, bins)
    rng = np.random.default_rng(0)
    floors = []
    for _ in range(resamples):
        correct = rng.random(len(confidence)) < confidence
        total = 0.0
        for b in np.unique(which):
            chosen = which == b
            total += chosen.mean() * abs(correct[chosen].mean() - confidence[chosen].mean())
        floors.append(total)
    return float(np.mean(floors))


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """Per confidence bin: how many images, their mean confidence and how often they are right."""
    confidence = probabilities.max(1)
    correct = probabilities.argmax(1) == labels
    which = _bins(confidence, bins)
    return [{"bin": int(b), "n": int((which == b).sum()), "confidence": float(confidence[which == b].mean()),
             "accuracy": float(correct[which == b].mean())} for b in range(bins) if (which == b).any()]


def calibration(probabilities: np.ndarray, labels: np.ndarray, resamples: int = 1000) -> dict:
    rng = np.random.default_rng(0)
    boot = [expected_calibration_error(probabilities[i], labels[i])
            for i in (rng.integers(0, len(labels), len(labels)) for _ in range(resamples))]
    onehot = np.eye(features.NUM_CLASSES)[labels]
    return {
        "ece": expected_calibration_error(probabilities, labels),
        "ece_ci95": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
        "ece_noise_floor": ece_noise_floor(probabilities),
        "brier": float(((probabilities - onehot) ** 2).sum(1).mean()),
        "nll": float(-np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-12, None)).mean()),
        "mean_confidence": float(probabilities.max(1).mean()),
        "reliability": reliability(probabilities, labels),
    }


def risk_coverage(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy on the most confident share of images, as the least confident are sent to review."""
    confidence = probabilities.max(1)
    order = np.argsort(-confidence, kind="stable")
    correct = (probabilities.argmax(1) == labels)[order]
    kept = np.arange(1, len(labels) + 1)
    curve = [{"coverage": float(k / len(labels)), "accuracy": float(correct[:k].mean()),
              "confidence_at_least": float(confidence[order][k - 1])}
             for k in sorted({max(1, round(c * len(labels))) for c in np.linspace(0.05, 1.0, 20)})]
    area = float(np.mean(1.0 - np.cumsum(correct) / kept))  # area under the risk-coverage curve
    return {"curve": curve, "aurc": area}


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """P(an out-of-distribution image scores higher than an in-distribution one); ties count half."""
    greater = (out_scores[:, None] > in_scores[None, :]).mean()
    ties = (out_scores[:, None] == in_scores[None, :]).mean()
    return float(greater + 0.5 * ties)


class ImageSet:
    """One set of images as the exported model's front half sees it: canonical statistics and pooled features."""

    def __init__(self, encoded: list[bytes], reference: np.ndarray, extractor, batch_size: int = 32):
        canonical = canonicalise_all(encoded)
        self.stats = {key: canonical[key] for key in imaging.INPUT_STATS}
        pixels = model_pixels(canonical, reference)
        self.pooled = np.concatenate([extractor(tf.constant(pixels[i:i + batch_size])).numpy()
                                      for i in range(0, len(pixels), batch_size)])

    def evaluate(self, classifier: recipes.Classifier) -> dict:
        logits = classifier.networks.logits_from_pooled(self.pooled)
        probabilities = classifier.calibrator.probabilities(logits)
        # The gate exactly as the signatures run it (components/trainer/ood.gate_outputs).
        gate = ood.gate_outputs(classifier.gate, tf.constant(self.pooled[:, :classifier.networks.global_width]),
                                {key: tf.constant(value) for key, value in self.stats.items()})
        reason = np.array([r.decode() for r in gate["ood_reason"].numpy()])
        feature_only = np.isin(reason, ("", ood.REASON_FEATURE_DISTANCE))
        # An input the input check refuses counts as infinitely far from the training data.
        score = np.where(feature_only, gate["ood_score"].numpy(), np.inf)
        return {"probabilities": probabilities, "score": score, "flagged": ~gate["in_domain"].numpy(),
                "reason": reason}


def _accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float((probabilities.argmax(1) == labels).mean())


def run_seed(config: recipes.TrainingConfig, data: dict, leaked: np.ndarray, sets: dict, shifted_sets: dict,
             ood_sets: dict) -> dict:
    started = time.time()
    classifier = recipes.train(config, data["train"][:2], data["valid"][:2],
                               shifted_views=shifted_views(data, config.seed))
    train_seconds = time.time() - started
    labels = data["test"][1]
    test = sets["test"].evaluate(classifier)
    probabilities = test["probabilities"]
    official, leak_free = _accuracy(probabilities, labels), _accuracy(probabilities[~leaked], labels[~leaked])
    valid = sets["valid"].evaluate(classifier)
    uncertain_below = classifier.uncertain_below
    shifts = {}
    for name, image_set in shifted_sets.items():
        result = image_set.evaluate(classifier)
        shifts[name] = {"accuracy": _accuracy(result["probabilities"], labels),
                        "leak_free_accuracy": _accuracy(result["probabilities"][~leaked], labels[~leaked]),
                        "flagged": float(result["flagged"].mean()),
                        "accuracy_unflagged": _accuracy(result["probabilities"][~result["flagged"]],
                                                        labels[~result["flagged"]])
                        if (~result["flagged"]).any() else None,
                        "predicted": np.bincount(result["probabilities"].argmax(1),
                                                 minlength=features.NUM_CLASSES).tolist()}
    ood_results = {}
    for name, (image_set, names) in ood_sets.items():
        result = image_set.evaluate(classifier)
        ood_results[name] = {
            "n": len(names), "flagged": float(result["flagged"].mean()),
            "auroc": auroc(test["score"], result["score"]),
            "reasons": {r: int((result["reason"] == r).sum()) for r in sorted(set(result["reason"].tolist()))},
            "scores": {n: (None if not np.isfinite(v) else round(float(v), 3))
                       for n, v in zip(names, result["score"], strict=True)},
            "unflagged": [n for n, f in zip(names, result["flagged"], strict=True) if not f],
            "predicted_unflagged": [features.CLASS_NAMES[c] for c, f in
                                    zip(result["probabilities"].argmax(1), result["flagged"], strict=True) if not f],
        }
    confident = probabilities.max(1) >= uncertain_below
    return {
        "seed": config.seed, "train_seconds": round(train_seconds, 1), "calibrator": classifier.calibrator.info(),
        "gate": classifier.gate.info(), "uncertain_below": uncertain_below,
        "official_accuracy": official, "leak_free_accuracy": leak_free,
        "valid_accuracy": _accuracy(valid["probabilities"], data["valid"][1]),
        "calibration": {"official": calibration(probabilities, labels),
                        "leak_free": calibration(probabilities[~leaked], labels[~leaked])},
        "risk_coverage": {"official": risk_coverage(probabilities, labels),
                          "leak_free": risk_coverage(probabilities[~leaked], labels[~leaked])},
        "uncertain_line": {"coverage": float(confident.mean()),
                           "accuracy_covered": _accuracy(probabilities[confident], labels[confident])
                           if confident.any() else None},
        "in_distribution_flagged": float(test["flagged"].mean()),
        "in_distribution_score_quantiles": {q: float(np.quantile(test["score"], float(q)))
                                            for q in ("0.5", "0.9", "0.95", "0.99", "1.0")},
        "in_distribution_reasons": {r: int((test["reason"] == r).sum()) for r in sorted(set(test["reason"].tolist()))
                                    if r},
        "shifts": shifts,
        "worst_shift_drop": max(official - s["accuracy"] for s in shifts.values()),
        "ood": ood_results,
    }


def summarise(runs: list[dict], non_ct_sets: tuple[str, ...]) -> dict:
    def mean(values):
        return float(np.mean(values))

    def spread(values):
        return {"mean": mean(values), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                "min": float(np.min(values)), "max": float(np.max(values))}

    shift_names = list(runs[0]["shifts"])
    non_ct = [sum(r["ood"][s]["flagged"] * r["ood"][s]["n"] for s in non_ct_sets) /
              sum(r["ood"][s]["n"] for s in non_ct_sets) for r in runs]
    return {
        "official_accuracy": mean([r["official_accuracy"] for r in runs]),
        "leak_free_accuracy": mean([r["leak_free_accuracy"] for r in runs]),
        "worst_shift_drop": mean([r["worst_shift_drop"] for r in runs]),
        "ece": mean([r["calibration"]["official"]["ece"] for r in runs]),
        "in_distribution_flagged": mean([r["in_distribution_flagged"] for r in runs]),
        "non_ct_flagged": mean(non_ct),
        "ood_auroc": {name: mean([r["ood"][name]["auroc"] for r in runs]) for name in runs[0]["ood"]},
        "spread": {
            "official_accuracy": spread([r["official_accuracy"] for r in runs]),
            "leak_free_accuracy": spread([r["leak_free_accuracy"] for r in runs]),
            "worst_shift_drop": spread([r["worst_shift_drop"] for r in runs]),
            "ece_official": spread([r["calibration"]["official"]["ece"] for r in runs]),
            "ece_leak_free": spread([r["calibration"]["leak_free"]["ece"] for r in runs]),
            "ece_noise_floor_official": spread([r["calibration"]["official"]["ece_noise_floor"] for r in runs]),
            "brier_official": spread([r["calibration"]["official"]["brier"] for r in runs]),
            "nll_official": spread([r["calibration"]["official"]["nll"] for r in runs]),
            "uncertain_line_coverage": spread([r["uncertain_line"]["coverage"] for r in runs]),
        },
        "shift_accuracy": {name: {"accuracy": mean([r["shifts"][name]["accuracy"] for r in runs]),
                                  "drop": mean([r["official_accuracy"] - r["shifts"][name]["accuracy"] for r in runs]),
                                  "flagged": mean([r["shifts"][name]["flagged"] for r in runs]),
                                  "kind": SHIFTS[name][0], "strength": SHIFTS[name][1]}
                           for name in shift_names},
        "ood_flagged": {name: mean([r["ood"][name]["flagged"] for r in runs]) for name in runs[0]["ood"]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="RadAssist robustness benchmark (shifts, calibration, OOD gate)")
    parser.add_argument("--data", default=os.environ.get("RADASSIST_DATA_DIR", "../shared/data/chest-ct"))
    parser.add_argument("--lung-seg", default=None, help="LIDC-IDRI folder (default: beside --data, lung-seg)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--config", default="{}", help="JSON of TrainingConfig overrides")
    parser.add_argument("--shifts", nargs="*", default=list(SHIFTS), help="names from the suite (default: all)")
    parser.add_argument("--out", default=os.path.join(RESULTS_DIR, "robustness.json"))
    args = parser.parse_args()
    lung_seg = args.lung_seg or os.path.join(os.path.dirname(os.path.abspath(args.data)), "lung-seg")

    started = time.time()
    data, audit_result = load_dataset(args.data)
    leaked = np.array([audit_result.is_leaked("test", f) for f in data["test"][2]])
    first = recipes.TrainingConfig.from_dict({**json.loads(args.config), "seed": args.seeds[0]})
    if first.recipe != "cpu":
        raise SystemExit("the benchmark shares one frozen trunk between seeds: the cpu recipe only")
    extractor = tf.function(recipes.build_networks(first).features)
    reference = data["reference"]

    def image_set(encoded):
        return ImageSet(encoded, reference, extractor)

    sets = {split: image_set(data[split][3]) for split in ("valid", "test")}
    print(f"test and valid features: {time.time() - started:.0f}s", flush=True)
    shifted_sets = {}
    for name in args.shifts:
        shifted_sets[name] = image_set(shifted(data["test"][3], SHIFTS[name][2]))
        print(f"shift {name}: {time.time() - started:.0f}s", flush=True)
    ood_pictures = {"non_ct_pictures": non_ct_pictures(), "text_pages": text_pages(),
                    "lidc_slices_other_protocol": lidc_slices(lung_seg), "dicom_non_chest": dicom_non_chest()}
    ood_sets = {name: (image_set(list(pictures.values())), list(pictures)) for name, pictures in ood_pictures.items()
                if pictures}
    print(f"OOD sets {({name: len(p) for name, p in ood_pictures.items()})}: {time.time() - started:.0f}s",
          flush=True)

    runs = []
    for seed in args.seeds:
        config = recipes.TrainingConfig.from_dict({**json.loads(args.config), "seed": seed})
        runs.append(run_seed(config, data, leaked, sets, shifted_sets, ood_sets))
        r = runs[-1]
        print(f"seed {seed}: official {r['official_accuracy']:.3f} leak-free {r['leak_free_accuracy']:.3f} "
              f"worst shift drop {r['worst_shift_drop']:.3f} ECE {r['calibration']['official']['ece']:.3f} "
              f"flagged in-dist {r['in_distribution_flagged']:.3f}", flush=True)
        summary = summarise(runs, ("non_ct_pictures", "text_pages"))
        write_result({**{k: summary[k] for k in ("official_accuracy", "leak_free_accuracy", "worst_shift_drop",
                                                  "ece", "in_distribution_flagged", "non_ct_flagged", "ood_auroc")},
                      "benchmark": "robustness", "summary": summary, "runs": runs,
                      "config": config.__dict__, "overrides": json.loads(args.config),
                      "seeds_requested": args.seeds, "seeds_finished": [r["seed"] for r in runs],
                      "test_examples": int(len(leaked)), "test_leaked": int(leaked.sum()),
                      "ood_set_sizes": {name: len(p) for name, p in ood_pictures.items()},
                      "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                      "wall_seconds": round(time.time() - started, 1)}, args.out)
    plot(summary, runs, os.path.splitext(args.out)[0] + ".png")
    print_table(summary)


def plot(summary: dict, runs: list[dict], path: str) -> None:
    """One picture of the run: reliability on the official test, the risk-coverage curves with the review line,
    and the accuracy each shift of the suite costs."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, (left, middle, right) = pyplot.subplots(1, 3, figsize=(17, 5.5), gridspec_kw={"width_ratios": [1, 1, 1.2]})
    left.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    for run in runs:
        bins = run["calibration"]["official"]["reliability"]
        left.scatter([b["confidence"] for b in bins], [b["accuracy"] for b in bins], s=[8 + 2 * b["n"] for b in bins],
                     alpha=0.6, label=f"seed {run['seed']}: ECE {run['calibration']['official']['ece']:.3f}")
    left.set(xlim=(0.2, 1.02), ylim=(0.0, 1.02), xlabel="confidence (top calibrated probability)",
             ylabel="share right", title="Reliability, official test (dot area: images)")
    left.legend(loc="upper left", fontsize=8)
    for run in runs:
        curve = run["risk_coverage"]["official"]["curve"]
        line = middle.plot([c["coverage"] for c in curve], [c["accuracy"] for c in curve], marker=".",
                           label=f"seed {run['seed']}")[0]
        middle.scatter([run["uncertain_line"]["coverage"]], [run["uncertain_line"]["accuracy_covered"]], s=80,
                       marker="*", color=line.get_color(), zorder=3)
    middle.set(xlim=(0, 1.02), ylim=(0.7, 1.005), xlabel="coverage (share not sent to review)",
               ylabel="accuracy of the covered images", title="Risk-coverage, official test (*: the review line)")
    middle.legend(loc="lower left", fontsize=8)
    shifts = summary["shift_accuracy"]
    names = list(shifts)[::-1]
    drops = [shifts[name]["drop"] for name in names]
    right.barh(names, drops, color=["tab:red" if d > 0.03 else "tab:blue" for d in drops])
    right.axvline(0.03, color="tab:red", linestyle="--", linewidth=1)
    right.set(xlabel="official accuracy lost (mean over seeds); dashed: 0.03",
              title=f"Shift suite (as is: {summary['official_accuracy']:.3f})")
    right.tick_params(axis="y", labelsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
    print(f"wrote {path}")


def print_table(summary: dict) -> None:
    print(f"\n{'measure':<34}{'value':>10}")
    for key in ("official_accuracy", "leak_free_accuracy", "worst_shift_drop", "ece", "in_distribution_flagged",
                "non_ct_flagged"):
        print(f"{key:<34}{summary[key]:>10.3f}")
    floor = summary["spread"]["ece_noise_floor_official"]["mean"]
    print(f"{'  ece of a calibrated model (floor)':<34}{floor:>10.3f}")
    print(f"{'uncertain line coverage':<34}{summary['spread']['uncertain_line_coverage']['mean']:>10.3f}")
    for name, value in summary["ood_auroc"].items():
        print(f"{'ood_auroc ' + name:<34}{value:>10.3f}  (flagged {summary['ood_flagged'][name]:.2f})")
    print(f"\n{'shift':<16}{'kind':<26}{'accuracy':>10}{'drop':>8}{'flagged':>9}")
    for name, row in summary["shift_accuracy"].items():
        print(f"{name:<16}{row['kind']:<26}{row['accuracy']:>10.3f}{row['drop']:>8.3f}{row['flagged']:>9.2f}")


if __name__ == "__main__":
    main()
