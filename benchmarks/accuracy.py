"""Accuracy benchmark: the default (CPU) training recipe on the full chest-CT data, several seeds.

Uses exactly the pipeline's pieces (CtExampleGen's reader, LeakageAudit, the Transform preprocessing graph,
the Trainer's recipe) without the orchestration, and reports accuracy and macro-F1 on the official test
split and on its leak-free part, per-class recall and wall time, as mean and spread over seeds.

Usage: python -m benchmarks.accuracy --data ../shared/data/chest-ct --seeds 0 1 2
"""

import argparse
import glob
import json
import os
import platform
import time

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from benchmarks import write_result
from components import evaluation, features, imaging
from components.ct_example_gen import SkippedFile, read_scan_image
from components.leakage_audit import ImageRecord, audit, perceptual_hash
from components.trainer import augment, calibration, recipes

RESULTS_DIR = os.path.join(os.path.dirname(__file__), "results")


def load_dataset(data_root: str):
    """All splits -> {split: (pixels, labels, filenames, encoded bytes)} plus the audit result.

    Pixels go through the model's canonicalisation with the reference quantile function taken from the train
    split, as Transform's analyzer does; it is ``data["reference"]``.
    """
    records, scans = [], {}
    for split in features.SPLITS:
        paths = sorted(p for p in glob.glob(os.path.join(data_root, split, "*", "*")) if os.path.isfile(p))
        for path in tqdm(paths, desc=f"read {split}", leave=False):
            try:
                scan = read_scan_image(path, data_root)
            except SkippedFile:
                continue
            scans.setdefault(split, []).append(scan)
            records.append(ImageRecord(split, scan.filename, scan.sha256, scan.label, perceptual_hash(scan.encoded)))
    result = audit(records)
    canonical = {}
    for split, items in scans.items():
        items = [s for s in items if not result.drops(split, s.sha256)]
        scans[split] = items
        canonical[split] = canonicalise_all([s.encoded for s in items], desc=f"canonicalise {split}")
    reference = canonical["train"]["quantiles"].mean(axis=0)
    data = {"reference": reference}
    for split, items in scans.items():
        data[split] = (model_pixels(canonical[split], reference), np.array([s.label for s in items]),
                       [s.filename for s in items], [s.encoded for s in items])
    return data, result


_canonical_batch = tf.function(imaging.canonical_batch)
_model_pixels = tf.function(imaging.model_pixels)


def canonicalise_all(encoded: list[bytes], batch_size: int = 32, desc: str | None = None) -> dict[str, np.ndarray]:
    """Encoded images -> ``imaging.canonical_batch``'s outputs as numpy arrays."""
    parts = [_canonical_batch(tf.constant(encoded[i:i + batch_size]))
             for i in tqdm(range(0, len(encoded), batch_size), desc=desc, leave=False, disable=desc is None)]
    return {key: np.concatenate([part[key].numpy() for part in parts]) for key in parts[0]}


def model_pixels(canonical: dict[str, np.ndarray], reference: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """``canonicalise_all``'s output -> VGG16 input pixels, intensities matched to ``reference``."""
    reference = tf.constant(reference, tf.float32)
    parts = [_model_pixels({key: tf.constant(canonical[key][i:i + batch_size]) for key in ("gray", "body", "region")},
                           reference).numpy()
             for i in range(0, len(canonical["gray"]), batch_size)]
    return np.concatenate(parts)


def shifted_views(data: dict, seed: int):
    """``recipes.train``'s ``shifted_views`` for the train split: view v -> the pixels of acquisition-shifted exports
    of the training images (components/trainer/augment.py), through the model's canonicalisation."""
    encoded = data["train"][3]
    shift = tf.function(augment.shifted_batch)

    def view(index: int) -> np.ndarray:
        # Tensors, not Python numbers, so the compiled function is traced once, not once per batch.
        exported = np.concatenate([shift(tf.constant(encoded[i:i + 32]), tf.constant(seed), tf.constant(index),
                                         tf.constant(i)).numpy()
                                   for i in range(0, len(encoded), 32)])
        return model_pixels(canonicalise_all(list(exported)), data["reference"])

    return view


def scores(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    matrix = np.zeros((features.NUM_CLASSES, features.NUM_CLASSES), dtype=np.int64)
    np.add.at(matrix, (labels, probabilities.argmax(1)), 1)
    result = evaluation.scores_from_confusion(matrix)
    return {"accuracy": result["accuracy"], "macro_f1": result["macro_f1"], "n": int(len(labels)),
            "recall": {n: result[f"recall/{n}"] for n in features.CLASS_NAMES},
            "confusion_matrix": matrix.tolist()}


def run_seed(config: recipes.TrainingConfig, data: dict, leaked: np.ndarray, save_logits: str | None = None) -> dict:
    started = time.time()
    timeline = []
    classifier = recipes.train(config, data["train"][:2], data["valid"][:2],
                               progress=lambda step: timeline.append((round(time.time() - started, 1), step)),
                               shifted_views=shifted_views(data, config.seed))
    train_seconds = time.time() - started
    logits = classifier.model.predict(data["test"][0], batch_size=32, verbose=0)
    probabilities = classifier.calibrator.probabilities(logits)
    labels = data["test"][1]
    result = {
        "seed": config.seed,
        "train_seconds": round(train_seconds, 1),
        "calibration": classifier.calibrator.info(),
        "official_test": scores(probabilities, labels),
        "leak_free_test": scores(probabilities[~leaked], labels[~leaked]),
        "timeline": timeline,
    }
    if config.head_count > 1:
        result["heads"] = head_breakdown(classifier.networks, data, leaked,
                                         save_logits and f"{save_logits}_seed{config.seed}.npz")
    return result


def head_breakdown(nets: recipes.Networks, data: dict, leaked: np.ndarray, save_logits: str | None = None):
    """For head k: its own test scores and those of the ensemble of heads 1..k (each temperature-scaled on the
    validation split), so one run shows what each added head buys."""
    pooled = {split: nets.features.predict(data[split][0], batch_size=32, verbose=0) for split in ("valid", "test")}
    head_logits, rows = [], []
    for head in nets.heads:
        head_logits.append({split: head.predict(x, batch_size=256, verbose=0) for split, x in pooled.items()})
        so_far = {split: np.mean([h[split] for h in head_logits], axis=0) for split in pooled}
        rows.append({"alone": _test_scores(head_logits[-1], data, leaked),
                     "ensemble_so_far": _test_scores(so_far, data, leaked)})
    if save_logits:
        np.savez(save_logits, **{split: np.array([h[split] for h in head_logits]) for split in pooled},
                 leaked=leaked, test_labels=data["test"][1], valid_labels=data["valid"][1])
    return rows


def calibrated_scores(logits: dict, data: dict, leaked: np.ndarray) -> tuple[dict, dict]:
    """{"valid": logits, "test": logits} -> scores on the official and leak-free test, temperature-scaled on valid."""
    temperature = calibration.fit_temperature(logits["valid"], data["valid"][1])
    probabilities = tf.nn.softmax(logits["test"] / temperature).numpy()
    labels = data["test"][1]
    return scores(probabilities, labels), scores(probabilities[~leaked], labels[~leaked])


def _test_scores(logits: dict, data: dict, leaked: np.ndarray) -> dict:
    official, leak_free = calibrated_scores(logits, data, leaked)
    return {"official_accuracy": official["accuracy"], "leak_free_accuracy": leak_free["accuracy"]}


def summarise(runs: list[dict]) -> dict:
    def stat(values):
        values = np.asarray(values, dtype=np.float64)
        return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                "min": float(values.min()), "max": float(values.max())}

    out = {}
    for part in ("official_test", "leak_free_test"):
        out[part] = {
            "accuracy": stat([r[part]["accuracy"] for r in runs]),
            "macro_f1": stat([r[part]["macro_f1"] for r in runs]),
            "recall": {n: stat([r[part]["recall"][n] for r in runs]) for n in features.CLASS_NAMES},
        }
    out["train_seconds"] = stat([r["train_seconds"] for r in runs])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="RadAssist accuracy benchmark (CPU recipe, several seeds)")
    parser.add_argument("--data", default=os.environ.get("RADASSIST_DATA_DIR", "../shared/data/chest-ct"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--config", default="{}", help="JSON of TrainingConfig overrides")
    parser.add_argument("--out", default=os.path.join(RESULTS_DIR, "accuracy.json"))
    parser.add_argument("--save-logits", help="path prefix for each seed's head logits (.npz), for analysis")
    args = parser.parse_args()

    started = time.time()
    data, audit_result = load_dataset(args.data)
    leaked = np.array([audit_result.is_leaked("test", f) for f in data["test"][2]])
    counts = ", ".join(f"{split} {len(data[split][1])}" for split in features.SPLITS)
    print(f"data: {counts}; test leaked {leaked.sum()} "
          f"({time.time() - started:.0f}s)", flush=True)
    runs = []
    for seed in args.seeds:
        config = recipes.TrainingConfig.from_dict({**json.loads(args.config), "seed": seed})
        runs.append(run_seed(config, data, leaked, args.save_logits))
        r = runs[-1]
        print(f"seed {seed}: official acc {r['official_test']['accuracy']:.3f} F1 {r['official_test']['macro_f1']:.3f}"
              f" | leak-free acc {r['leak_free_test']['accuracy']:.3f} F1 {r['leak_free_test']['macro_f1']:.3f}"
              f" | {r['train_seconds']:.0f}s", flush=True)
        for index, head in enumerate(r.get("heads", [])):
            alone, so_far = head["alone"], head["ensemble_so_far"]
            print(f"  head {index + 1}: alone {alone['official_accuracy']:.3f} / {alone['leak_free_accuracy']:.3f}"
                  f", ensemble of 1..{index + 1}: {so_far['official_accuracy']:.3f} / "
                  f"{so_far['leak_free_accuracy']:.3f} (official / leak-free)", flush=True)
        # Written after every seed, so a long run that is stopped still leaves its finished seeds.
        write_result(_result(args, runs, leaked, time.time() - started), args.out)
    summary = summarise(runs)
    print(f"\n{'split':<16}{'accuracy':>20}{'macro-F1':>20}")
    for part in ("official_test", "leak_free_test"):
        acc, f1 = summary[part]["accuracy"], summary[part]["macro_f1"]
        print(f"{part:<16}{acc['mean']:>12.3f} ± {acc['std']:.3f}{f1['mean']:>12.3f} ± {f1['std']:.3f}")
    print("recall (official):", {n: round(v["mean"], 3) for n, v in summary["official_test"]["recall"].items()})


def _result(args, runs: list[dict], leaked: np.ndarray, wall_seconds: float) -> dict:
    return {
        "benchmark": "accuracy", "overrides": json.loads(args.config),
        "config": recipes.TrainingConfig.from_dict(json.loads(args.config)).__dict__,
        "data": os.path.abspath(args.data),
        "test_examples": int(len(leaked)), "test_leaked": int(leaked.sum()), "seeds_requested": args.seeds,
        "seeds_finished": [r["seed"] for r in runs], "summary": summarise(runs), "runs": runs,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "wall_seconds": round(wall_seconds, 1),
    }


if __name__ == "__main__":
    main()
