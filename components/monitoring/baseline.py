"""The baseline a window of traffic is compared with: one model version's features of its reference images.

The model version's ``predict_image`` signature (exactly as served) runs over the reference splits of the data
root it was trained on (default: ``test``, the frozen official test split its blessing was measured on: on its own
training images the model is in-sample, more confident and closer to its out-of-distribution gate's centre than on
any new image, the validation split served its calibration, and the Kaggle set's validation and training splits are
framed unlike its test split), and each image becomes the
same feature row a logged call becomes
(components/monitoring/features.feature_columns). Computing it takes minutes on a CPU, so it is cached per model
version and data: under ``<cache_dir>/<model>/<version>-<key>.tfrecord.gz``, the key hashing the SavedModel's
graph and the reference files' names and sizes (a retrained version or changed data never reuses a stale one).
"""

import hashlib
import logging
import os

import numpy as np
import tensorflow as tf

from components.ct_example_gen import SkippedFile, read_scan_image, split_files
from components.monitoring import drift, features
from radassist.contract import Signature

log = logging.getLogger(__name__)

REFERENCE_SPLITS = ("test",)
REFERENCE_SPLITS_TEXT = ",".join(REFERENCE_SPLITS)  # as a pipeline parameter
BATCH_SIZE = 16


def version_path(model_dir: str, version: int | None = None) -> tuple[str, int]:
    """``<model_dir>/<version>`` (default: the newest numeric version) and the version."""
    versions = sorted(int(name) for name in tf.io.gfile.listdir(model_dir) if name.strip("/").isdigit())
    if not versions:
        raise FileNotFoundError(f"no model versions in {model_dir}")
    if version is None:
        version = versions[-1]
    elif version not in versions:
        raise FileNotFoundError(f"model version {version} is not in {model_dir} (there: {versions})")
    return os.path.join(model_dir, str(version)), version


def reference_files(data_root: str, splits: tuple[str, ...] = REFERENCE_SPLITS) -> list[str]:
    """The image files of a data root's splits (``<root>/<split>/<class>/<file>``), sorted."""
    files = split_files(data_root, splits)
    if not files:
        raise FileNotFoundError(f"no images under {data_root}/{{{','.join(splits)}}}/<class>/")
    return files


class Predictor:
    """A SavedModel's ``predict_image`` signature in process: encoded images -> the contract's outputs."""

    def __init__(self, saved_model_path: str):
        self._signature = tf.saved_model.load(saved_model_path).signatures[Signature.PREDICT_IMAGE]

    def outputs(self, images: list[bytes], batch_size: int = BATCH_SIZE) -> dict[str, np.ndarray]:
        parts = []
        for start in range(0, len(images), batch_size):
            batch = self._signature(images=tf.constant(images[start:start + batch_size]))
            parts.append({name: value.numpy() for name, value in batch.items()})
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    def columns(self, images: list[bytes], version: int = 0) -> dict[str, np.ndarray]:
        return features.feature_columns(images, self.outputs(images), [version] * len(images),
                                        [Signature.PREDICT_IMAGE] * len(images))


def cache_key(saved_model_path: str, data_root: str, files: list[str]) -> str:
    digest = hashlib.sha256()
    with tf.io.gfile.GFile(os.path.join(saved_model_path, "saved_model.pb"), "rb") as handle:
        digest.update(hashlib.sha256(handle.read()).digest())
    for path in files:
        digest.update(f"{os.path.relpath(path, data_root)}:{tf.io.gfile.stat(path).length}\n".encode())
    return digest.hexdigest()[:16]


def write_examples(path: str, rows: dict[str, np.ndarray]) -> None:
    tf.io.gfile.makedirs(os.path.dirname(path))
    temporary = path + ".partial"
    with tf.io.TFRecordWriter(temporary, tf.io.TFRecordOptions(compression_type="GZIP")) as writer:
        for example in features.to_examples(rows):
            writer.write(example)
    tf.io.gfile.rename(temporary, path, overwrite=True)  # readers never see half a file


def read_examples(paths: list[str]) -> dict[str, np.ndarray]:
    serialized = [raw.numpy() for raw in tf.data.TFRecordDataset(paths, compression_type="GZIP")]
    return features.from_examples(serialized)


def baseline_columns(model_dir: str, version: int, data_root: str, cache_dir: str | None = None,
                     model_name: str = "", splits: tuple[str, ...] = REFERENCE_SPLITS
                     ) -> tuple[dict[str, np.ndarray], str]:
    """The feature rows of model ``version``'s reference images and where they are cached (computed on a miss)."""
    saved_model, version = version_path(model_dir, version)
    files = reference_files(data_root, splits)
    key = cache_key(saved_model, data_root, files)
    cached = os.path.join(cache_dir, model_name or os.path.basename(model_dir.rstrip("/")),
                          f"{version}-{key}{features.EXAMPLES_SUFFIX}") if cache_dir else None
    if cached and tf.io.gfile.exists(cached):
        log.info("baseline of version %d: cached %s", version, cached)
        return read_examples([cached]), cached
    images = []
    for path in files:
        try:
            images.append(read_scan_image(path, data_root).encoded)
        except SkippedFile as skipped:
            log.warning("baseline: %s", skipped)
    log.info("baseline of version %d: %d reference images through predict_image", version, len(images))
    rows = drift.distinct(Predictor(saved_model).columns(images, version))  # a repeat counts once, as in a window
    if cached:
        write_examples(cached, rows)
    return rows, cached or ""
