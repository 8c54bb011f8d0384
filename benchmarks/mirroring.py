"""Does left-right mirroring help the CPU recipe? Heads on the default pooled features, trained on the images as
they are or on them plus their mirror images, scored on the official and leak-free test as they are and with
mirrored test-time averaging. Why it matters: chest anatomy is not left-right symmetric, so a mirrored slice is
not a plausible scan.

Usage: python -m benchmarks.mirroring --data ../shared/data/chest-ct --heads 5
"""

import argparse
import os

import numpy as np
import tensorflow as tf
import tf_keras

from benchmarks import write_result
from benchmarks.accuracy import RESULTS_DIR, calibrated_scores, load_dataset
from components.trainer import recipes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("RADASSIST_DATA_DIR", "../shared/data/chest-ct"))
    parser.add_argument("--heads", type=int, default=5, help="heads (seeds) per setting")
    parser.add_argument("--out", default=os.path.join(RESULTS_DIR, "mirroring.json"))
    args = parser.parse_args()
    data, audit_result = load_dataset(args.data)
    leaked = np.array([audit_result.is_leaked("test", f) for f in data["test"][2]])
    config = recipes.TrainingConfig()
    extractor = recipes.build_networks(config, recipes.dtype_policy(config)).features
    pooled = {(split, mirrored): recipes.pooled_features(
                  extractor, [data[split][0][:, :, ::-1] if mirrored else data[split][0]])[:, 0]
              for split in ("train", "valid", "test") for mirrored in (False, True)}
    training_sets = {"as is": [pooled["train", False]],
                     "as is + mirrored": [pooled["train", False], pooled["train", True]]}
    rows = []
    for name, views in training_sets.items():
        for seed in range(args.heads):
            config = recipes.TrainingConfig(seed=seed)
            tf_keras.utils.set_random_seed(seed)  # the head starts as head 1 of recipes.train with this seed
            head = recipes.build_networks(config).heads[0]
            recipes.fit_heads(config, [head], np.stack(views, axis=1), data["train"][1])
            logits = {key: head.predict(x, batch_size=256, verbose=0) for key, x in pooled.items() if key[0] != "train"}
            splits = ("valid", "test")
            test_times = {"as is": {s: logits[s, False] for s in splits},
                          "mirrored averaging": {s: (logits[s, False] + logits[s, True]) / 2 for s in splits}}
            for test_time, combined in test_times.items():
                official, leak_free = calibrated_scores(combined, data, leaked)
                rows.append({"training": name, "test_time": test_time, "seed": seed,
                             "official": official["accuracy"], "leak_free": leak_free["accuracy"]})
    summary = []
    print(f"{'training':<20}{'test time':<22}{'official':>16}{'leak-free':>16}")
    for name in training_sets:
        for test_time in ("as is", "mirrored averaging"):
            picked = [r for r in rows if r["training"] == name and r["test_time"] == test_time]
            stats = {part: (float(np.mean([r[part] for r in picked])), float(np.std([r[part] for r in picked], ddof=1)))
                     for part in ("official", "leak_free")}
            summary.append({"training": name, "test_time": test_time, **{f"{p}_mean": m for p, (m, _) in stats.items()},
                            **{f"{p}_std": s for p, (_, s) in stats.items()}})
            print(f"{name:<20}{test_time:<22}" + "".join(f"{m:>10.3f} ± {s:.3f}" for m, s in stats.values()))
    write_result({"benchmark": "mirroring", "heads_per_setting": args.heads, "summary": summary, "runs": rows,
                  "tensorflow": tf.__version__}, args.out)


if __name__ == "__main__":
    main()
