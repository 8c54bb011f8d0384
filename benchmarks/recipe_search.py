"""Compare CPU-recipe settings quickly: block 1-4 features are cached on disk per seed and reused.

Prints official/leak-free test accuracy for each config. For exploring; the reported numbers come from
benchmarks/accuracy.py, which trains end to end.
Usage: python -m benchmarks.recipe_search --seed 0 --configs '{}' '{"finetune_learning_rate": 1e-4}'
"""

import argparse
import json
import os
import time

import numpy as np
import tensorflow as tf

from benchmarks.accuracy import load_dataset, scores
from components.trainer import recipes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("RADASSIST_DATA_DIR", "../shared/data/chest-ct"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default="/tmp/radassist-recipe-cache")
    parser.add_argument("--configs", nargs="+", default=["{}"])
    args = parser.parse_args()
    data, audit_result = load_dataset(args.data)
    leaked = np.array([audit_result.is_leaked("test", f) for f in data["test"][2]])
    os.makedirs(args.cache, exist_ok=True)
    base = recipes.TrainingConfig(seed=args.seed)
    cache_file = os.path.join(args.cache, f"seed{args.seed}_views{base.augmented_views}.npz")
    nets = recipes.build_networks(base)
    if os.path.exists(cache_file):
        stored = np.load(cache_file)
        cached, test_features, valid_features = stored["train"], stored["test"], stored["valid"]
    else:
        cached = recipes.cache_block4_features(base, nets, data["train"][0])
        plain = tf.function(lambda x: nets.stem(x, training=False))
        test_features, valid_features = (
            np.concatenate([plain(tf.constant(d[0][i:i + 32])).numpy() for i in range(0, len(d[0]), 32)])
            for d in (data["test"], data["valid"]))
        np.savez(cache_file, train=cached, test=test_features, valid=valid_features)
    for text in args.configs:
        config = recipes.TrainingConfig.from_dict({**json.loads(text), "seed": args.seed})
        tf.keras.utils.set_random_seed(config.seed)
        nets = recipes.build_networks(config)
        started = time.time()
        recipes.fit_top(config, nets, cached, data["train"][1])
        valid_logits = nets.top.predict(valid_features, batch_size=32, verbose=0)
        temperature = recipes.fit_temperature(valid_logits, data["valid"][1])
        logits = nets.top.predict(test_features, batch_size=32, verbose=0)
        probabilities = tf.nn.softmax(logits / temperature).numpy()
        official, leak_free = scores(probabilities, data["test"][1]), scores(probabilities[~leaked],
                                                                            data["test"][1][~leaked])
        print(json.dumps({"config": json.loads(text), "seed": args.seed, "official": round(official["accuracy"], 3),
                          "official_f1": round(official["macro_f1"], 3), "leak_free": round(leak_free["accuracy"], 3),
                          "recall": {k: round(v, 2) for k, v in official["recall"].items()},
                          "fit_seconds": round(time.time() - started)}), flush=True)


if __name__ == "__main__":
    main()
