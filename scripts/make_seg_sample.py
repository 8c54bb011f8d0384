"""Builds data/sample/lidc-crops: a small sample of the LIDC-IDRI nodule crops for the segmentation tests and demos.

Whole patients (every slice of their nodules, so the split stays patient-wise) drawn at random per split until the
split holds at least --per-split images; the files are copied byte for byte with their four reader masks, and
MANIFEST.csv keeps the source's rows (same columns) for exactly the copied files.
Usage: python scripts/make_seg_sample.py --source ../shared/data/lung-seg/lidc-idri-nodule-crops128 \
           --dest data/sample/lidc-crops
"""

import argparse
import collections
import csv
import os
import random
import shutil

PER_SPLIT = {"train": 24, "val": 8, "test": 8}


def choose_patients(rows: list[dict], rng: random.Random) -> set[str]:
    images = collections.defaultdict(lambda: collections.Counter())
    for row in rows:
        if row["kind"] == "image":
            images[row["split"]][row["patient_id"]] += 1
    chosen = set()
    for split, wanted in PER_SPLIT.items():
        patients = sorted(images[split])
        rng.shuffle(patients)
        count = 0
        for patient in patients:
            if count >= wanted:
                break
            if images[split][patient] > wanted // 2:  # keep the sample varied: no patient fills half a split
                continue
            chosen.add(patient)
            count += images[split][patient]
    return chosen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", required=True)
    parser.add_argument("--dest", required=True)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with open(os.path.join(args.source, "MANIFEST.csv"), newline="") as handle:
        reader = csv.DictReader(handle)
        columns, rows = reader.fieldnames, list(reader)
    patients = choose_patients(rows, random.Random(args.seed))
    kept = [row for row in rows if row["patient_id"] in patients]
    for row in kept:
        target = os.path.join(args.dest, row["path"])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(os.path.join(args.source, row["path"]), target)
    with open(os.path.join(args.dest, "MANIFEST.csv"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(kept)
    counts = collections.Counter(row["split"] for row in kept if row["kind"] == "image")
    print(f"{len(patients)} patients, images per split: {dict(counts)}, {len(kept)} files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
