"""The LIDC-IDRI nodule crops (../shared/data/lung-seg/lidc-idri-nodule-crops128): images, the four readers' masks,
the consensus target and the patient-wise split of MANIFEST.csv.

The consensus is ">= 2 of the 4 readers" (the dataset's README): a reader who did not outline the nodule on a
slice counts as "not nodule" there, as in LIDC's own 50 % agreement masks.
"""

import csv
import dataclasses
import os

import numpy as np
from PIL import Image

CONSENSUS_READERS = 2
READERS = 4
SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class NoduleSlices:
    """Parallel arrays, one row per image: ``images`` uint8 [N, H, W]; ``masks`` bool [N, READERS, H, W]."""

    images: np.ndarray
    masks: np.ndarray
    split: np.ndarray        # "train" | "val" | "test"
    patient_id: np.ndarray
    nodule: np.ndarray       # "<patient>_<nodule>": one nodule's neighbouring slices share it
    pair_id: np.ndarray      # "<patient>_<nodule>_slice-<K>"
    is_center_slice: np.ndarray  # bool: the nodule's slice of largest consensus

    @property
    def consensus(self) -> np.ndarray:
        return consensus(self.masks)

    def subset(self, rows) -> "NoduleSlices":
        return NoduleSlices(**{field.name: getattr(self, field.name)[rows] for field in dataclasses.fields(self)})

    def of_split(self, name: str) -> "NoduleSlices":
        return self.subset(self.split == name)

    def __len__(self) -> int:
        return len(self.images)


def consensus(masks: np.ndarray) -> np.ndarray:
    """bool [..., H, W]: pixels at least CONSENSUS_READERS of the readers (axis -3) outlined."""
    return masks.sum(axis=-3) >= CONSENSUS_READERS


def _read_png(path: str) -> np.ndarray:
    with Image.open(path) as image:
        if image.mode != "L":
            raise ValueError(f"{path}: expected an 8-bit grey PNG, found mode {image.mode}")
        return np.asarray(image)


def load_crops(data_dir: str, splits: tuple[str, ...] = SPLITS) -> NoduleSlices:
    """Every image of ``splits`` in ``data_dir`` (the folder holding MANIFEST.csv, images/ and masks/)."""
    manifest = os.path.join(data_dir, "MANIFEST.csv")
    if not os.path.exists(manifest):
        raise FileNotFoundError(f"{manifest} not found: pass the lidc-idri-nodule-crops128 folder")
    with open(manifest, newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["kind"] == "image" and row["split"] in splits]
    if not rows:
        raise ValueError(f"{manifest} lists no images of the splits {splits}")
    images = np.stack([_read_png(os.path.join(data_dir, row["path"])) for row in rows])
    masks = np.stack([np.stack([_read_png(os.path.join(data_dir, "masks", f"{row['pair_id']}_mask-{reader}.png")) > 0
                                for reader in range(READERS)]) for row in rows])
    return NoduleSlices(
        images=images, masks=masks, split=np.array([row["split"] for row in rows]),
        patient_id=np.array([row["patient_id"] for row in rows]),
        nodule=np.array([f"{row['patient_id']}_{row['nodule']}" for row in rows]),
        pair_id=np.array([row["pair_id"] for row in rows]),
        is_center_slice=np.array([row["is_center_slice"] == "1" for row in rows]))
