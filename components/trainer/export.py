"""SavedModel export: the signature contract that TF Serving, TFMA and the portal rely on.

Every signature starts from raw inputs and runs the Transform graph inside the model (canonicalisation: deskew,
a square framed on the lungs, intensity matching; components.imaging):
- ``serving_default``: ``examples`` (serialized tf.Examples, feature ``image`` = encoded bytes) -> the outputs below.
- ``predict_image``: ``images`` (encoded PNG/JPEG bytes [N]) -> the same outputs.
- ``explain``: ``images`` [N] -> the same plus ``heatmap`` [N,H,W] float32 in 0..1: Grad-CAM of the top class on
  the recipe's feature layer (block4_conv3 by default: 28x28), over ``crop_box``.
Outputs of every signature: ``probabilities`` [N,4] float32 (calibrated: components/trainer/calibration.py),
``class_id`` [N] int64, ``class_name`` [N] string, ``needs_review`` [N] bool (top probability under the review line
chosen on held-out predictions), ``ood_score`` [N] float32 (distance from the training data; 1.0 is the threshold),
``in_domain`` [N] bool,
``ood_reason`` [N] string ("" when in domain), ``crop_box`` [N,4] float32 (y0, x0, y1, x1: the square of the input,
in its pixels, that the model saw) and ``crop_angle`` [N] float32 (degrees that square is turned about its centre,
clockwise on screen: canonicalisation deskews). See docs/architecture.md.
"""

import dataclasses
import json
import os

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from components import features, imaging
from components.trainer import ood
from components.trainer.recipes import Classifier

MODEL_INFO_FILE = "radassist_model.json"
WARMUP_FILE = "tf_serving_warmup_requests"


def _outputs(probabilities: tf.Tensor) -> dict[str, tf.Tensor]:
    class_id = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
    names = tf.constant(features.CLASS_NAMES)
    return {"probabilities": probabilities, "class_id": class_id, "class_name": tf.gather(names, class_id)}


def build_signatures(classifier: Classifier, tft_layer) -> dict:
    """tf.functions for each signature, closing over the Keras models and the Transform layer."""
    gradcam_model = classifier.gradcam_model
    uncertain_below = tf.constant(classifier.uncertain_below, tf.float32)

    def transform(images: tf.Tensor) -> dict[str, tf.Tensor]:
        # The inferred schema gives the raw image feature shape [1], so the layer takes [N, 1].
        return tft_layer({features.IMAGE_KEY: tf.reshape(images, [-1, 1])})

    def outputs(transformed: dict, activations: tf.Tensor, logits: tf.Tensor) -> dict[str, tf.Tensor]:
        result = _outputs(classifier.calibrator.probabilities_tf(logits))
        result["needs_review"] = tf.reduce_max(result["probabilities"], axis=-1) < uncertain_below
        # The heads' input: average and max pooling of the feature layer, as recipes.build_networks pools.
        pooled = tf.concat([tf.reduce_mean(activations, axis=[1, 2]), tf.reduce_max(activations, axis=[1, 2])], -1)
        result.update(ood.gate_outputs(classifier.gate, pooled, transformed))
        result[features.CROP_BOX_KEY] = transformed[features.CROP_BOX_KEY]
        result[features.CROP_ANGLE_KEY] = transformed[features.CROP_ANGLE_KEY]
        return result

    def predict(images: tf.Tensor) -> dict[str, tf.Tensor]:
        transformed = transform(images)
        activations, logits = gradcam_model(transformed[features.PIXELS_KEY], training=False)
        return outputs(transformed, activations, logits)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(examples):
        parsed = tf.io.parse_example(examples, {features.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)})
        return predict(parsed[features.IMAGE_KEY])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def predict_image(images):
        return predict(images)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def explain(images):
        transformed = transform(images)
        with tf.GradientTape() as tape:
            activations, logits = gradcam_model(transformed[features.PIXELS_KEY], training=False)
            top_logit = tf.reduce_max(logits, axis=-1)
        gradients = tape.gradient(top_logit, activations)
        channel_weights = tf.reduce_mean(gradients, axis=[1, 2], keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(activations * channel_weights, axis=-1))
        cam = cam / (tf.reduce_max(cam, axis=[1, 2], keepdims=True) + 1e-8)
        result = outputs(transformed, activations, logits)
        result["heatmap"] = cam
        return result

    return {
        features.SERVING_DEFAULT_SIGNATURE: serve_examples,
        features.PREDICT_IMAGE_SIGNATURE: predict_image,
        features.EXPLAIN_SIGNATURE: explain,
    }


def synthetic_scan_png(size: int = 256) -> bytes:
    """A deterministic CT-like grayscale PNG (no patient data) used for warm-up requests."""
    yy, xx = np.mgrid[:size, :size]
    body = ((xx - size / 2) ** 2 / (0.45 * size) ** 2 + (yy - size / 2) ** 2 / (0.35 * size) ** 2) < 1
    lungs = ((np.abs(xx - size / 2) - 0.2 * size) ** 2 + (yy - size / 2) ** 2) < (0.15 * size) ** 2
    image = np.where(body, 160, 0) - np.where(lungs, 130, 0)
    return tf.io.encode_png(tf.constant(image.astype(np.uint8)[..., None])).numpy()


def write_warmup_requests(export_dir: str, model_name: str) -> str:
    """TF Serving warm-up records (assets.extra/tf_serving_warmup_requests): one predict_image request."""
    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=model_name, signature_name=features.PREDICT_IMAGE_SIGNATURE)
    )
    request.inputs["images"].CopyFrom(tf.make_tensor_proto([synthetic_scan_png()], dtype=tf.string))
    record = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
    extra = os.path.join(export_dir, "assets.extra")
    tf.io.gfile.makedirs(extra)
    path = os.path.join(extra, WARMUP_FILE)
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(record.SerializeToString())
    return path


def export(classifier: Classifier, tft_layer, export_dir: str, model_name: str, info: dict) -> None:
    """Saves the classifier with all signatures, warm-up records and a model-info JSON."""
    model = classifier.model
    model.tft_layer = tft_layer  # tracked, so the Transform graph and its assets are saved with the model
    model.gradcam_model = classifier.gradcam_model
    signatures = build_signatures(classifier, tft_layer)
    model.save(export_dir, save_format="tf", signatures=signatures, include_optimizer=False)
    write_warmup_requests(export_dir, model_name)
    info = {
        "class_names": list(features.CLASS_NAMES),
        "class_display_names": list(features.CLASS_DISPLAY_NAMES),
        "image_size": features.IMAGE_SIZE,
        "gradcam_layer": classifier.gradcam_layer,
        "temperature": classifier.temperature,
        "calibration": classifier.calibrator.info(),
        "uncertain_below": classifier.uncertain_below,
        "canonicalisation": {"body_grid": imaging.GRID, "quantile_levels": imaging.QUANTILE_LEVELS,
                             "lung_frame": imaging.LUNG_FRAME, "body_margin": imaging.BODY_MARGIN,
                             "max_deskew_degrees": imaging.MAX_DESKEW_DEGREES,
                             "reference": "mean body quantile function of the training split (tft.mean)"},
        "ood_gate": {**classifier.gate.info(), "input_limits": dataclasses.asdict(ood.DEFAULT_LIMITS),
                     "reasons": list(ood.REASONS)},
        "signatures": sorted(signatures),
        **info,
    }
    with tf.io.gfile.GFile(os.path.join(export_dir, "assets.extra", MODEL_INFO_FILE), "w") as handle:
        json.dump(info, handle, indent=2)
