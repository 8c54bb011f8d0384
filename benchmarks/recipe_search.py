"""Compare CPU-recipe settings quickly: block 1-4 features are cached on disk per seed and reused.

Prints official/leak-free test accuracy for each config, member by member and for the ensemble so far.
For exploring; the reported numbers come from benchmarks/accuracy.py, which trains end to end.
Usage: python -m benchmarks.recipe_search --seed 0 --configs '{}' '{"finetune_learning_rate": 1e-4}'
"""

import argparse
import json
import os
import time

import numpy as np
import tensorflow as tf

from benchmarks.accuracy import calibrated_scores, load_dataset
from components.trainer import recipes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("RADASSIST_DATA_DIR", "../shared/data/chest-ct"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default="/tmp/radassist-recipe-cache")
    parser.add_argument("--configs", nargs="+", default=["{}"])
    parser.add_argument("--save-logits", help="path prefix: writes each member's valid and test logits (.npz)")
    args = parser.parse_args()
    data, audit_result = load_dataset(args.data)
    leaked = np.array([audit_result.is_leaked("test", f) for f in data["test"][2]])
    os.makedirs(args.cache, exist_ok=True)
    base = recipes.TrainingConfig(seed=args.seed)
    policy = recipes.dtype_policy(base)
    cache_file = os.path.join(args.cache, f"seed{args.seed}_views{base.augmented_views}_{policy}.npz")
    nets = recipes.build_networks(base, policy)
    if os.path.exists(cache_file):
        stored = np.load(cache_file)
        cached, test_features, valid_features = stored["train"], stored["test"], stored["valid"]
    else:
        cached = recipes.cache_block4_features(base, nets, data["train"][0])
        plain = tf.function(lambda x: nets.stem(x, training=False))
        test_features, valid_features = (
            np.concatenate([tf.cast(plain(tf.constant(d[0][i:i + 32])), tf.float32).numpy()
                            for i in range(0, len(d[0]), 32)])
            for d in (data["test"], data["valid"]))
        np.savez(cache_file, train=cached, test=test_features, valid=valid_features)
    for text in args.configs:
        config = recipes.TrainingConfig.from_dict({**json.loads(text), "seed": args.seed})
        tf.keras.utils.set_random_seed(config.seed)
        nets = recipes.build_networks(config, recipes.dtype_policy(config))
        started = time.time()
        member_logits = []
        for index, member in enumerate(nets.members):
            recipes.fit_member(config, member, cached, data["train"][1], index)
            member_logits.append([member.top.predict(f, batch_size=32, verbose=0)
                                  for f in (valid_features, test_features)])
            ensemble = np.mean(member_logits, axis=0)
            row = {"config": json.loads(text), "seed": args.seed, "members": index + 1,
                   **_scores(member_logits[-1], data, leaked, "member_"),
                   **_scores(ensemble, data, leaked), "fit_seconds": round(time.time() - started)}
            print(json.dumps(row), flush=True)
        if args.save_logits:
            np.savez(f"{args.save_logits}_seed{args.seed}.npz", valid=np.array([m[0] for m in member_logits]),
                     test=np.array([m[1] for m in member_logits]), leaked=leaked, test_labels=data["test"][1],
                     valid_labels=data["valid"][1])


def _scores(logits: list[np.ndarray], data: dict, leaked: np.ndarray, prefix: str = "") -> dict:
    """(valid logits, test logits) -> temperature-scaled test scores, official and leak-free."""
    official, leak_free = calibrated_scores(dict(zip(("valid", "test"), logits, strict=True)), data, leaked)
    return {f"{prefix}official": round(official["accuracy"], 3), f"{prefix}leak_free": round(leak_free["accuracy"], 3),
            f"{prefix}recall": {k: round(v, 2) for k, v in official["recall"].items()}}


if __name__ == "__main__":
    main()
