"""TFX Trainer entry point of the segmenter (``run_fn``): examples through the Transform graph, the recipe, the
lesion threshold chosen on the validation split, the SavedModel export."""

import dataclasses
import logging
import time

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tfx import v1 as tfx

from components.segmentation import export, features, recipe
from components.trainer.run_fn import DATA_VERSION_KEY, MODEL_NAME_KEY
from radassist.contract import SEGMENTATION_MODEL_NAME

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Split:
    grey: np.ndarray      # float32 [N, H, W] in 0..1, canonical
    target: np.ndarray    # bool [N, H, W], the consensus
    patient: np.ndarray   # str [N]


def load_split(file_pattern: list[str], tf_transform_output: tft.TFTransformOutput, batch_size: int = 64) -> Split:
    raw_spec = tf_transform_output.raw_feature_spec()
    spec = {key: raw_spec[key] for key in (features.IMAGE_KEY, features.READER_MASKS_KEY, features.PATIENT_KEY)}
    tft_layer = tf_transform_output.transform_features_layer()

    def transform(serialized):
        raw = tf.io.parse_example(serialized, spec)
        patient = tf.reshape(raw.pop(features.PATIENT_KEY), [-1])
        return tft_layer(raw), patient

    dataset = (tf.data.TFRecordDataset(tf.io.gfile.glob(file_pattern), compression_type="GZIP")
               .batch(batch_size).map(transform))
    grey, target, patient = [], [], []
    for transformed, patients in dataset:
        grey.append(transformed[features.GREY_KEY].numpy()[..., 0])
        target.append(transformed[features.MASK_KEY].numpy()[..., 0] > 0.5)
        patient.append(patients.numpy().astype(str))
    if not grey:
        raise ValueError(f"no examples in {file_pattern}: check the data directory and the ExampleGen counts")
    return Split(np.concatenate(grey), np.concatenate(target), np.concatenate(patient))


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    """Trains and exports; ``fn_args.custom_config`` holds SegmentationConfig fields plus ``model_name``."""
    custom = dict(fn_args.custom_config or {})
    model_name = custom.pop(MODEL_NAME_KEY, SEGMENTATION_MODEL_NAME)
    data_version = custom.pop(DATA_VERSION_KEY, None) or {}
    config = recipe.SegmentationConfig.from_dict(custom)
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    started = time.time()
    train = load_split(fn_args.train_files, tf_transform_output)
    valid = load_split(fn_args.eval_files, tf_transform_output)
    log.info("loaded %d training and %d validation slices in %.0fs", len(train.grey), len(valid.grey),
             time.time() - started)
    trained = recipe.train(config, train.grey, train.target,
                           progress=lambda epoch, epochs, loss: log.info("Trainer: epoch %d/%d, loss %.3f",
                                                                         epoch, epochs, loss))
    if trained.steps < trained.planned_steps:
        log.warning("the time budget (%.0f s) paid for %d of %d steps on this machine", config.time_budget_s,
                    trained.steps, trained.planned_steps)
    valid_probability = recipe.probabilities(trained.model, valid.grey)
    threshold = recipe.choose_threshold(valid_probability, valid.target, valid.patient)
    valid_dice = recipe.patient_mean(recipe.dice(valid_probability >= threshold, valid.target), valid.patient)
    log.info("lesion threshold %.2f: validation patient-mean Dice %.3f", threshold, valid_dice)
    info = {
        "model_name": model_name,
        "data_version": data_version,
        "training": config.to_dict(),
        "training_dtype_policy": trained.policy,
        "train_examples": int(len(train.grey)),
        "valid_examples": int(len(valid.grey)),
        "valid_patient_dice_mean": round(valid_dice, 4),
        "train_seconds": round(trained.train_seconds, 1),
        "train_steps": trained.steps,
        "planned_train_steps": trained.planned_steps,  # more than train_steps where the time budget ran short
        "training_seconds": round(time.time() - started, 1),
    }
    export.export(trained.model, tf_transform_output.transform_features_layer(), tf_transform_output.raw_feature_spec(),
                  threshold, fn_args.serving_model_dir, model_name, info)
    log.info("exported %s in %.0fs total", fn_args.serving_model_dir, time.time() - started)
