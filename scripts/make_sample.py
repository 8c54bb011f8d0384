"""Builds data/sample/chest-ct: a small, downscaled sample of the Kaggle chest-CT set for tests and demos.

10 images per class and split, grayscale PNG, longest side at most --max-side pixels. The sample keeps
the dataset's traps on purpose: test/normal images with byte-identical copies in train/normal, and the
training image stored under two labels, so the leakage audit has something real to find.
Usage: python scripts/make_sample.py --source ../shared/data/chest-ct --dest data/sample/chest-ct
"""

import argparse
import collections
import csv
import hashlib
import io
import os
import random

from PIL import Image

PER_CLASS = 10
LEAKED_TEST_NORMALS = 4
CONFLICT = ("train/large.cell.carcinoma/l4.png", "train/squamous.cell.carcinoma/sq2.png")


def choose(rows: list[dict], rng: random.Random) -> list[dict]:
    by_sha = collections.defaultdict(list)
    for row in rows:
        by_sha[row["sha256"]].append(row)
    chosen: list[dict] = [r for r in rows if r["path"] in CONFLICT]
    # Leaked test normals and one train copy of each.
    leaked = [
        r for r in rows
        if r["split"] == "test" and r["label"] == "normal" and any(o["split"] == "train" for o in by_sha[r["sha256"]])
    ]
    seen_sha = set()
    for row in sorted(leaked, key=lambda r: r["path"]):
        if row["sha256"] in seen_sha or len(seen_sha) == LEAKED_TEST_NORMALS:
            continue
        seen_sha.add(row["sha256"])
        chosen.append(row)
        chosen.append(next(o for o in by_sha[row["sha256"]] if o["split"] == "train"))
    for split in ("train", "valid", "test"):
        for label in ("adenocarcinoma", "large.cell.carcinoma", "squamous.cell.carcinoma", "normal"):
            have = [r for r in chosen if r["split"] == split and r["label"] == label]
            taken = {r["sha256"] for r in chosen}
            candidates = [r for r in rows if r["split"] == split and r["label"] == label and r["sha256"] not in taken]
            # Prefer images with no copy anywhere, so the sample's only duplicates are the deliberate ones.
            unique = [r for r in candidates if len(by_sha[r["sha256"]]) == 1]
            needed = PER_CLASS - len(have)
            pool = unique if len(unique) >= needed else candidates
            picked = []
            for row in rng.sample(pool, len(pool)):
                if len(picked) < needed and row["sha256"] not in {p["sha256"] for p in picked}:
                    picked.append(row)
            chosen.extend(picked)
    return chosen


def downscale(path: str, max_side: int) -> bytes:
    with Image.open(path) as image:
        gray = image.convert("L")
        gray.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        gray.save(buffer, format="PNG", optimize=True)
        return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True)
    parser.add_argument("--dest", required=True)
    parser.add_argument("--max-side", type=int, default=160)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with open(os.path.join(args.source, "MANIFEST.csv")) as handle:
        rows = list(csv.DictReader(handle))
    chosen = choose(rows, random.Random(args.seed))
    manifest = []
    for row in sorted(chosen, key=lambda r: r["path"]):
        name = os.path.splitext(os.path.basename(row["path"]))[0] + ".png"
        target = os.path.join(args.dest, row["split"], row["label"], name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        data = downscale(os.path.join(args.source, row["path"]), args.max_side)
        with open(target, "wb") as handle:
            handle.write(data)
        manifest.append({"split": row["split"], "label": row["label"],
                         "path": os.path.relpath(target, args.dest), "source_path": row["path"],
                         "source_sha256": row["sha256"], "sha256": hashlib.sha256(data).hexdigest()})
    with open(os.path.join(args.dest, "MANIFEST.csv"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(manifest[0]))
        writer.writeheader()
        writer.writerows(manifest)
    print(f"{len(manifest)} images written to {args.dest}")


if __name__ == "__main__":
    main()
