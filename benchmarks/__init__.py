"""Benchmarks: scripts that print a table and write JSON under benchmarks/results/."""

import json
import os

# Benchmarks are entry points (``python -m benchmarks.<name>``): Keras 2 for TFX's libraries, chosen before
# TensorFlow is imported (radassist/cli.py does the same); an explicit setting wins.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


def write_result(result: dict, path: str) -> None:
    """Writes one benchmark's JSON result and says where."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as handle:
        json.dump(result, handle, indent=2)
    print(f"wrote {path}")
