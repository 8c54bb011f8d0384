"""Compare head settings of the CPU recipe quickly: the pooled features are computed once per seed, feature
layer and view count (cached on disk), so each config costs seconds.

Prints official/leak-free test (and validation) accuracy for each config, head by head and for the ensemble so far,
as JSON lines (``--out`` also writes them to a file). For exploring;
the reported numbers come from benchmarks/accuracy.py, which trains and exports end to end.
Usage: python -m benchmarks.recipe_search --seed 0 --configs '{}' '{"head_epochs": 30}' '{"augmented_views": 3}'
"""

import argparse
import json
import os
import time

import numpy as np
import tf_keras

from benchmarks.accuracy import calibrated_scores, load_dataset, shifted_views
from components.trainer import recipes

FEATURE_KNOBS = ("seed", "weights", "feature_layer", "augmented_views", "precision", "batch_size")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("RADASSIST_DATA_DIR", "../shared/data/chest-ct"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default="/tmp/radassist-recipe-cache")
    parser.add_argument("--configs", nargs="+", default=["{}"])
    parser.add_argument("--out", help="also append the rows to this .jsonl file")
    args = parser.parse_args()
    data, audit_result = load_dataset(args.data)
    leaked = np.array([audit_result.is_leaked("test", f) for f in data["test"][2]])
    os.makedirs(args.cache, exist_ok=True)
    for text in args.configs:
        config = recipes.TrainingConfig.from_dict({**json.loads(text), "seed": args.seed})
        pooled = _features(config, data, args.cache)
        tf_keras.utils.set_random_seed(config.seed)  # the heads start as in recipes.train, so rows reproduce
        nets = recipes.build_networks(config)
        started = time.time()
        recipes.fit_heads(config, nets.heads, pooled["train"], data["train"][1])
        head_logits = []
        for index, head in enumerate(nets.heads):
            head_logits.append({split: head.predict(pooled[split][:, 0], batch_size=256, verbose=0)
                                for split in ("valid", "test")})
            ensemble = {split: np.mean([h[split] for h in head_logits], axis=0) for split in ("valid", "test")}
            row = {"config": json.loads(text), "seed": args.seed, "heads": index + 1,
                   **_scores(head_logits[-1], data, leaked, "head_"), **_scores(ensemble, data, leaked),
                   "fit_seconds": round(time.time() - started, 1)}
            print(json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "a") as handle:
                    handle.write(json.dumps(row) + "\n")


def _features(config: recipes.TrainingConfig, data: dict, cache: str) -> dict[str, np.ndarray]:
    """{split: pooled features [N, views, D]} (valid and test: one view, as they are), cached on disk."""
    key = "_".join(f"{knob}-{getattr(config, knob)}" for knob in FEATURE_KNOBS)
    path = os.path.join(cache, f"{key}.npz")
    if os.path.exists(path):
        return dict(np.load(path))
    policy = recipes.dtype_policy(config)
    extractor = recipes.build_networks(config, policy).features
    views = shifted_views(data, config.seed)
    pooled = {split: recipes.pooled_features(extractor, [data[split][0]] + (
                  [views(v) for v in range(1, config.augmented_views)] if split == "train" else []))
              for split in ("train", "valid", "test")}
    np.savez(path, **pooled)
    return pooled


def _scores(logits: dict, data: dict, leaked: np.ndarray, prefix: str = "") -> dict:
    """{"valid": logits, "test": logits} -> temperature-scaled test scores, official and leak-free."""
    official, leak_free = calibrated_scores(logits, data, leaked)
    valid = float((logits["valid"].argmax(1) == data["valid"][1]).mean())
    return {f"{prefix}official": round(official["accuracy"], 3), f"{prefix}leak_free": round(leak_free["accuracy"], 3),
            f"{prefix}valid": round(valid, 3),
            f"{prefix}recall": {k: round(v, 2) for k, v in official["recall"].items()}}


if __name__ == "__main__":
    main()
