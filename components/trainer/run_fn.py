"""TFX Trainer entry point (``run_fn``): reads examples, trains with a recipe, exports the SavedModel."""

import json
import logging
import time

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tfx import v1 as tfx

from components import features
from components.trainer import export, recipes

log = logging.getLogger(__name__)

# custom_config keys that are not training knobs
MODEL_NAME_KEY = "model_name"


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


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    """Trains and exports; ``fn_args.custom_config`` holds TrainingConfig fields plus ``model_name``."""
    custom = dict(fn_args.custom_config or {})
    model_name = custom.pop(MODEL_NAME_KEY, "radassist")
    config = recipes.TrainingConfig.from_dict(custom)
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    started = time.time()
    train = load_split(fn_args.train_files, tf_transform_output)
    valid = load_split(fn_args.eval_files, tf_transform_output)
    log.info("loaded %d training and %d validation images in %.0fs", len(train[1]), len(valid[1]),
             time.time() - started)
    if len(train[1]) == 0:
        raise ValueError("no training examples: check the data directory and the ExampleGen counts")
    classifier = recipes.train(config, train, valid, progress=lambda step: log.info("Trainer: %s", step))
    info = {
        "model_name": model_name,
        "training": json.loads(json.dumps(config.__dict__)),
        "training_dtype_policy": recipes.dtype_policy(config),
        "train_examples": int(len(train[1])),
        "valid_examples": int(len(valid[1])),
        "training_seconds": round(time.time() - started, 1),
    }
    export.export(classifier, tf_transform_output.transform_features_layer(), fn_args.serving_model_dir,
                  model_name, info)
    log.info("exported %s in %.0fs total", fn_args.serving_model_dir, time.time() - started)
