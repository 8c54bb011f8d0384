"""The monitoring pipeline's per-image features, defined once: what a logged prediction is turned into.

Each feature belongs to a group that the drift report scores as a whole (a group drifts when any of its features
does):
- ``intensity``: the gray levels of the body inside the lungs' box (quantiles of the raw input, before the model's
  intensity matching hides them), contrast and colour: how the scan was windowed and exported;
- ``geometry``: the body's share of the image, the dark share inside it, how much of the image the lungs' frame
  covers (padding, cropping, zoom) and the deskew angle;
- ``output``: the model's confidence, predicted class, out-of-distribution score and share, review share;
- ``embedding``: the model's pooled-feature principal components (the ``embedding`` output), tested jointly.
The probability vector rides along ungrouped: the window's doctor-labelled calls are scored with it
(components/monitoring/labelled.py).
Identifiers are hashes only: no patient data reaches the logs (serving/prediction_log.py) or these features.
"""

import hashlib

import numpy as np
import tensorflow as tf

from components import imaging

SHA256 = "sha256"
MODEL_VERSION = "model_version"
SIGNATURE = "signature"
PREDICTED_CLASS = "predicted_class"
EMBEDDING = "embedding"
PROBABILITIES = "probabilities"  # the calibrated class probabilities, kept for TFMA over doctor-labelled calls
VECTORS = (EMBEDDING, PROBABILITIES)  # one vector per image; every other feature is one value
EXAMPLES_SUFFIX = ".tfrecord.gz"  # the monitoring pipeline's feature rows: gzip'd TFRecords of tf.Examples
INTENSITY_LEVELS = (0.1, 0.25, 0.5, 0.75, 0.9)  # quantiles of the body's raw gray levels kept as features
INTENSITY_NAMES = tuple(f"intensity_q{round(level * 100):02d}" for level in INTENSITY_LEVELS)

GROUPS = {
    "intensity": (*INTENSITY_NAMES, "contrast", "colour_fraction"),
    "geometry": ("body_fraction", "enclosed_dark_fraction", "frame_fraction", "crop_angle"),
    "output": ("confidence", PREDICTED_CLASS, "ood_score", "out_of_domain", "needs_review"),
}
NUMERIC = tuple(name for names in GROUPS.values() for name in names if name != PREDICTED_CLASS)
CATEGORICAL = (PREDICTED_CLASS,)
_canonical_batch = tf.function(imaging.canonical_batch)  # traced once per batch shape, not run op by op


def input_statistics(images: list[bytes], batch_size: int = 32) -> dict[str, np.ndarray]:
    """The ``intensity`` and ``geometry`` features of encoded images, measured by the model's own canonicalisation
    (components/imaging.py), so they mean the same here as inside the served graph."""
    columns: dict[str, list] = {name: [] for group in ("intensity", "geometry") for name in GROUPS[group]}
    levels = np.linspace(0.0, 1.0, imaging.QUANTILE_LEVELS)
    for start in range(0, len(images), batch_size):
        canonical = _canonical_batch(tf.constant(images[start:start + batch_size]))
        for row in canonical["quantiles"].numpy():
            for name, value in zip(INTENSITY_NAMES, np.interp(INTENSITY_LEVELS, levels, row), strict=True):
                columns[name].append(float(value))
        for name in ("contrast", "colour_fraction", "body_fraction", "enclosed_dark_fraction", "crop_angle"):
            columns[name].extend(canonical[name].numpy().tolist())
        box = canonical["crop_box"].numpy()
        longer = np.maximum(canonical["height"].numpy(), canonical["width"].numpy())
        columns["frame_fraction"].extend(((box[:, 2] - box[:, 0]) / np.maximum(longer, 1.0)).tolist())
    return {name: np.asarray(values, np.float32) for name, values in columns.items()}


def to_examples(rows: dict[str, np.ndarray]) -> list[bytes]:
    """Feature columns (one value, or one vector for ``VECTORS``, per image) -> serialized tf.Examples: strings as
    bytes, integers (the model version, a label) as int64, other numbers as floats."""
    count = len(rows[SHA256]) if rows else 0
    examples = []
    for i in range(count):
        feature = {}
        for name, column in rows.items():
            value = column[i]
            if name in VECTORS:
                feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=np.asarray(value).tolist()))
            elif isinstance(value, (str, bytes)):
                text = value.encode() if isinstance(value, str) else value
                feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[text]))
            elif isinstance(value, (int, np.integer)):
                feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
            else:
                feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(value)]))
        examples.append(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    return examples


def from_examples(serialized: list[bytes]) -> dict[str, np.ndarray]:
    """The inverse of ``to_examples``: columns as numpy arrays (``VECTORS`` [N, K] when present)."""
    columns: dict[str, list] = {}
    for raw in serialized:
        example = tf.train.Example.FromString(raw)
        for name, feature in example.features.feature.items():
            kind = feature.WhichOneof("kind")
            values = list(getattr(feature, kind).value)
            if kind == "bytes_list":
                values = [value.decode() for value in values]
            columns.setdefault(name, []).append(values if name in VECTORS else values[0])
    return {name: np.asarray(values, np.float32 if name in (*NUMERIC, *VECTORS) else object)
            for name, values in columns.items()}


def feature_columns(images: list[bytes], outputs: dict[str, np.ndarray], versions: list[int] | None = None,
                    signatures: list[str] | None = None) -> dict[str, np.ndarray]:
    """Every monitored feature of images and the model's outputs for them (contract names, [N, ...]), with each
    image's sha256, model version and signature."""
    count = len(images)
    names = outputs.get("class_name")
    probabilities = np.asarray(outputs["probabilities"], np.float32)
    if names is None:
        raise ValueError("the outputs carry no class_name: not a RadAssist classifier's response")
    columns = {
        SHA256: np.asarray([hashlib.sha256(image).hexdigest() for image in images], object),
        MODEL_VERSION: np.asarray(versions if versions is not None else [0] * count, np.int64),
        SIGNATURE: np.asarray(signatures if signatures is not None else ["predict_image"] * count, object),
        **input_statistics(images),
        "confidence": probabilities.max(axis=1),
        PROBABILITIES: probabilities.reshape(count, -1),
        PREDICTED_CLASS: np.asarray([n.decode() if isinstance(n, bytes) else str(n) for n in names], object),
        "ood_score": np.asarray(outputs.get("ood_score", np.full(count, np.nan)), np.float32),
        "out_of_domain": 1.0 - np.asarray(outputs.get("in_domain", np.ones(count)), np.float32),
        "needs_review": np.asarray(outputs.get("needs_review", np.zeros(count)), np.float32),
    }
    if EMBEDDING in outputs:
        columns[EMBEDDING] = np.asarray(outputs[EMBEDDING], np.float32).reshape(count, -1)
    return columns
