"""Monitoring benchmark (issue 14, preliminary): does the drift report raise its alert on windows of shifted
traffic and stay quiet on in-distribution windows?

The model version is run in-process (its ``predict_image`` signature, exactly as served) on the train split (the
baseline), the official test split, the test split re-exported with acquisition shifts (darker window, black
padding, lower contrast: benchmarks/robustness.py's shift functions) and LIDC-IDRI slices from another export
protocol. Windows are bootstrap draws of 200 calls from these pools; each is scored by
components/monitoring/drift.window_report against the baseline. Not yet measured here: traffic through the real
server's prediction log and the portal, the TFX monitoring pipeline's own run time, retraining.

Usage: python -m benchmarks.monitoring --model-dir outputs/models/radassist --data ../shared/data/chest-ct
"""

import argparse
import glob
import os
import time

import numpy as np
import tensorflow as tf

from benchmarks import write_result
from benchmarks.accuracy import RESULTS_DIR
from benchmarks.robustness import SHIFTS, lidc_slices, shifted
from components.monitoring import drift, features

WINDOW_CALLS = 200
SHIFTS_WATCHED = ("gamma_1.6", "pad_0.15", "contrast_0.7", "gamma_1.3", "pad_0.08", "contrast_0.85")


def split_images(data_root: str, split: str) -> list[bytes]:
    paths = sorted(p for p in glob.glob(os.path.join(data_root, split, "*", "*")) if os.path.isfile(p))
    return [open(path, "rb").read() for path in paths]


def latest_version(model_dir: str) -> str:
    versions = sorted(int(name) for name in os.listdir(model_dir) if name.isdigit())
    return os.path.join(model_dir, str(versions[-1]))


class Model:
    def __init__(self, path: str):
        self.signature = tf.saved_model.load(path).signatures["predict_image"]

    def columns(self, images: list[bytes], batch: int = 16) -> dict[str, np.ndarray]:
        parts = []
        for start in range(0, len(images), batch):
            outputs = self.signature(images=tf.constant(images[start:start + batch]))
            parts.append({name: value.numpy() for name, value in outputs.items()})
        outputs = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
        return features.feature_columns(images, outputs)


def draw(columns: dict[str, np.ndarray], count: int, rng) -> dict[str, np.ndarray]:
    rows = rng.integers(0, len(columns[features.SHA256]), count)
    return {name: column[rows] for name, column in columns.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True, help="<model_base>/<model name>: the latest version is used")
    parser.add_argument("--data", default="../shared/data/chest-ct")
    parser.add_argument("--lung-seg", default="../shared/data/lung-seg")
    parser.add_argument("--windows", type=int, default=20, help="in-distribution windows")
    parser.add_argument("--shifted-windows", type=int, default=3, help="windows per shift")
    parser.add_argument("--output", default=os.path.join(RESULTS_DIR, "monitoring_preliminary.json"))
    args = parser.parse_args()
    model = Model(latest_version(args.model_dir))
    started = time.perf_counter()
    baseline = model.columns(split_images(args.data, "train"))
    test_images = split_images(args.data, "test")
    pools = {"in_distribution": model.columns(test_images)}
    for name in SHIFTS_WATCHED:
        pools[name] = model.columns(shifted(test_images, SHIFTS[name][2]))
    pools["lidc_other_protocol"] = model.columns(list(lidc_slices(args.lung_seg).values()))
    print(f"features of {sum(len(p[features.SHA256]) for p in pools.values()) + len(baseline[features.SHA256])} "
          f"images in {time.perf_counter() - started:.0f} s")
    thresholds = drift.Thresholds()
    baseline_statistics = drift.statistics(baseline)
    rng = np.random.default_rng(0)
    windows = []
    for pool, count in [("in_distribution", args.windows)] + [(name, args.shifted_windows) for name in pools
                                                             if name != "in_distribution"]:
        for index in range(count):
            window = draw(pools[pool], WINDOW_CALLS, rng)
            began = time.perf_counter()
            report = drift.window_report(baseline, window, thresholds, baseline_statistics, seed=index)
            seconds = time.perf_counter() - began
            windows.append({"pool": pool, "alert": report["alert"], "verdict": report["verdict"],
                            "images": report["images"], "report_seconds": round(seconds, 2),
                            "groups": {g: r["score"] for g, r in report["groups"].items()},
                            "embedding": report["embedding"]})
            print(f"{pool:22s} {index:2d} alert={report['alert']!s:5s} {report['verdict']:40s} "
                  + " ".join(f"{g}={r['score']:.2f}" for g, r in report["groups"].items())
                  + (f" mmd2={report['embedding']['mmd2']:.4f} p={report['embedding']['p_value']:.3f}"
                     if report["embedding"] else ""))
    quiet = [w for w in windows if w["pool"] == "in_distribution"]
    shifted_windows = [w for w in windows if w["pool"] != "in_distribution"]
    result = {
        "shifted_windows_detected": round(float(np.mean([w["alert"] for w in shifted_windows])), 4),
        "false_alarm_rate": round(float(np.mean([w["alert"] for w in quiet])), 4),
        "report_seconds_median": float(np.median([w["report_seconds"] for w in windows])),
        "windows": windows,
    }
    print({k: v for k, v in result.items() if k != "windows"})
    write_result(result, args.output)


if __name__ == "__main__":
    main()
