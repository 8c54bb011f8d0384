"""TFX Trainer entry point (``run_fn``): reads examples, trains with a recipe, exports the SavedModel."""

import json
import logging
import time

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tfx import v1 as tfx

from components import features
from components.trainer import augment, export, recipes
from radassist.contract import MODEL_NAME

log = logging.getLogger(__name__)

# custom_config keys that are not training knobs
MODEL_NAME_KEY = "model_name"
DATA_VERSION_KEY = "data_version"  # the data's DVC revision (components/data_registry.py): into the model's info


def load_split(file_pattern: list[str], tf_transform_output: tft.TFTransformOutput, batch_size: int = 32):
    """Raw examples -> (pixels float32 [N,224,224,3], labels int64 [N]) through the Transform graph."""
    raw_spec = tf_transform_output.raw_feature_spec()
    spec = {key: raw_spec[key] for key in (features.IMAGE_KEY, features.LABEL_KEY)}
    tft_layer = tf_transform_output.transform_features_layer()
    dataset = (
        tf.data.TFRecordDataset(tf.io.gfile.glob(file_pattern), compression_type="GZIP")
        .batch(batch_size)
        .map(lambda serialized: tft_layer(tf.io.parse_example(serialized, spec)))
    )
    pixels, labels = [], []
    for batch in dataset:
        pixels.append(batch[features.PIXELS_KEY].numpy())
        labels.append(batch[features.LABEL_KEY].numpy())
    if not pixels:
        size = features.IMAGE_SIZE
        return np.zeros((0, size, size, 3), np.float32), np.zeros((0,), np.int64)
    return np.concatenate(pixels), np.concatenate(labels)


def shifted_views(file_pattern: list[str], tf_transform_output: tft.TFTransformOutput, seed: int,
                  batch_size: int = 32):
    """``recipes.train``'s ``shifted_views``: view v -> pixels of acquisition-shifted exports of the examples
    (components/trainer/augment.py), in ``load_split``'s order, through the Transform graph like any image."""
    spec = {features.IMAGE_KEY: tf_transform_output.raw_feature_spec()[features.IMAGE_KEY]}
    tft_layer = tf_transform_output.transform_features_layer()

    @tf.function
    def shifted_pixels(serialized, view, first_index):
        images = tf.reshape(tf.io.parse_example(serialized, spec)[features.IMAGE_KEY], [-1])
        exported = augment.shifted_batch(images, seed, view, first_index)
        return tft_layer({features.IMAGE_KEY: tf.reshape(exported, [-1, 1])})[features.PIXELS_KEY]

    def view(index: int) -> np.ndarray:
        dataset = tf.data.TFRecordDataset(tf.io.gfile.glob(file_pattern), compression_type="GZIP").batch(batch_size)
        pixels, done = [], 0
        for serialized in dataset:
            pixels.append(shifted_pixels(serialized, tf.constant(index), tf.constant(done)).numpy())
            done += len(pixels[-1])
        return np.concatenate(pixels)

    return view


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    """Trains and exports; ``fn_args.custom_config`` holds TrainingConfig fields plus ``model_name`` and
    ``data_version``."""
    custom = dict(fn_args.custom_config or {})
    model_name = custom.pop(MODEL_NAME_KEY, MODEL_NAME)
    data_version = custom.pop(DATA_VERSION_KEY, None) or {}
    config = recipes.TrainingConfig.from_dict(custom)
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    started = time.time()
    train = load_split(fn_args.train_files, tf_transform_output)
    valid = load_split(fn_args.eval_files, tf_transform_output)
    log.info("loaded %d training and %d validation images in %.0fs", len(train[1]), len(valid[1]),
             time.time() - started)
    if len(train[1]) == 0:
        raise ValueError("no training examples: check the data directory and the ExampleGen counts")
    classifier = recipes.train(config, train, valid, progress=lambda step: log.info("Trainer: %s", step),
                               shifted_views=shifted_views(fn_args.train_files, tf_transform_output, config.seed))
    info = {
        "model_name": model_name,
        "data_version": data_version,
        "training": json.loads(json.dumps(config.__dict__)),
        "training_dtype_policy": recipes.dtype_policy(config),
        "train_examples": int(len(train[1])),
        "valid_examples": int(len(valid[1])),
        "training_seconds": round(time.time() - started, 1),
    }
    export.export(classifier, tf_transform_output.transform_features_layer(), fn_args.serving_model_dir,
                  model_name, info)
    log.info("exported %s in %.0fs total", fn_args.serving_model_dir, time.time() - started)
