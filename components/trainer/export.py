"""SavedModel export: the signature contract that TF Serving, TFMA and the portal rely on.

The names are radassist/contract.py's. Every image signature starts from raw inputs and runs the Transform graph
inside the model (canonicalisation: deskew, a square framed on the lungs, intensity matching; components.imaging):
- ``serving_default``: ``examples`` (serialized tf.Examples, feature ``image`` = encoded bytes) -> the outputs below.
- ``predict_image``: ``images`` (encoded PNG/JPEG bytes [N]) -> the same outputs.
- ``explain``: ``images`` [N] -> the same plus ``heatmap`` [N,H,W] float32 in 0..1: Grad-CAM of the top class on
  the recipe's feature layer (block4_conv3 by default: 28x28), over ``crop_box``.
- ``model_info``: ``request`` [N] (any strings) -> ``model_info`` [N]: contract.ModelInfo as JSON, so a client of
  TF Serving (whose GetModelMetadata carries only signature definitions) learns the class order from the model.
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
from radassist.contract import MODEL_INFO_PATH, Input, ModelInfo, Output, Signature

WARMUP_FILE = "tf_serving_warmup_requests"


def _outputs(probabilities: tf.Tensor) -> dict[str, tf.Tensor]:
    class_id = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
    names = tf.constant(features.CLASS_NAMES)
    return {Output.PROBABILITIES: probabilities, Output.CLASS_ID: class_id,
            Output.CLASS_NAME: tf.gather(names, class_id)}


def model_info(classifier: Classifier) -> ModelInfo:
    """The contract's description of ``classifier``: what its signatures' outputs mean."""
    return ModelInfo(class_names=features.CLASS_NAMES, class_display_names=features.CLASS_DISPLAY_NAMES,
                     image_size=features.IMAGE_SIZE,
                     signatures=(Signature.SERVING_DEFAULT, Signature.PREDICT_IMAGE, Signature.EXPLAIN,
                                 Signature.MODEL_INFO),
                     uncertain_below=float(classifier.uncertain_below), negative_classes=features.NEGATIVE_CLASSES)


def build_signatures(classifier: Classifier, tft_layer) -> dict:
    """tf.functions for each signature, closing over the Keras models and the Transform layer."""
    gradcam_model = classifier.gradcam_model
    uncertain_below = tf.constant(classifier.uncertain_below, tf.float32)
    info_json = tf.constant(model_info(classifier).to_json())
    width = classifier.networks.global_width

    def transform(images: tf.Tensor) -> dict[str, tf.Tensor]:
        # The inferred schema gives the raw image feature shape [1], so the layer takes [N, 1].
        return tft_layer({features.IMAGE_KEY: tf.reshape(images, [-1, 1])})

    def outputs(transformed: dict, pooled: tf.Tensor, logits: tf.Tensor) -> dict[str, tf.Tensor]:
        result = _outputs(classifier.calibrator.probabilities_tf(logits))
        result[Output.NEEDS_REVIEW] = tf.reduce_max(result[Output.PROBABILITIES], axis=-1) < uncertain_below
        result.update(ood.gate_outputs(classifier.gate, pooled[:, :width], transformed))
        result[Output.CROP_BOX] = transformed[features.CROP_BOX_KEY]
        result[Output.CROP_ANGLE] = transformed[features.CROP_ANGLE_KEY]
        return result

    def predict(images: tf.Tensor) -> dict[str, tf.Tensor]:
        transformed = transform(images)
        _, pooled, logits = gradcam_model(transformed[features.PIXELS_KEY], training=False)
        return outputs(transformed, pooled, logits)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=Input.EXAMPLES)])
    def serve_examples(examples):
        parsed = tf.io.parse_example(examples, {features.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)})
        return predict(parsed[features.IMAGE_KEY])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=Input.IMAGES)])
    def predict_image(images):
        return predict(images)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=Input.IMAGES)])
    def explain(images):
        transformed = transform(images)
        with tf.GradientTape() as tape:
            activations, pooled, logits = gradcam_model(transformed[features.PIXELS_KEY], training=False)
            top_logit = tf.reduce_max(logits, axis=-1)
        gradients = tape.gradient(top_logit, activations)
        channel_weights = tf.reduce_mean(gradients, axis=[1, 2], keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(activations * channel_weights, axis=-1))
        cam = cam / (tf.reduce_max(cam, axis=[1, 2], keepdims=True) + 1e-8)
        result = outputs(transformed, pooled, logits)
        result[Output.HEATMAP] = cam
        return result

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=Input.REQUEST)])
    def describe(request):
        return {Output.MODEL_INFO: tf.fill(tf.shape(request), info_json)}

    return {
        Signature.SERVING_DEFAULT: serve_examples,
        Signature.PREDICT_IMAGE: predict_image,
        Signature.EXPLAIN: explain,
        Signature.MODEL_INFO: describe,
    }


def synthetic_scan_png(size: int = 256) -> bytes:
    """A deterministic CT-like grayscale PNG (no patient data) used for warm-up requests."""
    yy, xx = np.mgrid[:size, :size]
    body = ((xx - size / 2) ** 2 / (0.45 * size) ** 2 + (yy - size / 2) ** 2 / (0.35 * size) ** 2) < 1
    lungs = ((np.abs(xx - size / 2) - 0.2 * size) ** 2 + (yy - size / 2) ** 2) < (0.15 * size) ** 2
    image = np.where(body, 160, 0) - np.where(lungs, 130, 0)
    return tf.io.encode_png(tf.constant(image.astype(np.uint8)[..., None])).numpy()


def write_warmup_requests(export_dir: str, model_name: str, signature_name: str = Signature.PREDICT_IMAGE,
                          images: list[bytes] | None = None) -> str:
    """TF Serving warm-up records (assets.extra/tf_serving_warmup_requests): one request of ``signature_name`` with
    ``images`` (default: one synthetic scan)."""
    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature_name)
    )
    request.inputs[Input.IMAGES].CopyFrom(tf.make_tensor_proto(images or [synthetic_scan_png()], dtype=tf.string))
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
        **model_info(classifier).to_dict(),
        "gradcam_layer": classifier.gradcam_layer,
        "calibration": classifier.calibrator.info(),
        "canonicalisation": {"body_grid": imaging.GRID, "quantile_levels": imaging.QUANTILE_LEVELS,
                             "lung_frame": imaging.LUNG_FRAME, "body_margin": imaging.BODY_MARGIN,
                             "max_deskew_degrees": imaging.MAX_DESKEW_DEGREES,
                             "reference": "mean body quantile function of the training split (tft.mean)"},
        "ood_gate": {**classifier.gate.info(), "input_limits": dataclasses.asdict(ood.DEFAULT_LIMITS),
                     "reasons": list(ood.REASONS)},
        **info,
    }
    with tf.io.gfile.GFile(os.path.join(export_dir, MODEL_INFO_PATH), "w") as handle:
        json.dump(info, handle, indent=2)
