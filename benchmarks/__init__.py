"""Benchmarks: scripts that print a table and write JSON under benchmarks/results/."""

import json
import os


def write_result(result: dict, path: str) -> None:
    """Writes one benchmark's JSON result and says where."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as handle:
        json.dump(result, handle, indent=2)
    print(f"wrote {path}")
