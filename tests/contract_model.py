"""A tiny SavedModel that follows RadAssist's model contract (radassist/contract.py), built in about a second.

Serving, portal and browser tests serve it instead of waiting for a pipeline run: it has every signature, input and
output of the real model, and behaviour simple enough to assert on:
- the class: the image's mean grey level in equal bands, in ``class_names`` order (darkest first); probabilities
  peak at the class, sharper for images with more contrast;
- the gate: colour images are out of domain ("not_greyscale"), nearly uniform ones too ("blank"); ``ood_score`` is
  0.5 otherwise;
- ``needs_review``: top probability under ``uncertain_below``;
- ``heatmap``: the image's own brightness on a 28 x 28 grid, over the whole image (``crop_box``);
- undecodable images fail the call with INVALID_ARGUMENT, as the real model's decoding does.
The real pipeline's model is still exercised end to end by the pipeline test and one serving test. The contract
segmenter (``build_segmenter``) does the same for radassist-seg.
"""

import os

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from radassist.contract import LESION_OUTPUTS, MODEL_INFO_PATH, Input, ModelInfo, Output, Signature

CLASS_NAMES = ("adenocarcinoma", "large.cell.carcinoma", "squamous.cell.carcinoma", "normal")
DISPLAY_NAMES = ("Adenocarcinoma", "Large cell carcinoma", "Squamous cell carcinoma", "Normal")
HEATMAP_CELLS = 28
WARMUP_FILE = "tf_serving_warmup_requests"


class ContractModel(tf.Module):
    def __init__(self, info: ModelInfo):
        super().__init__()
        self.info = info
        self.class_names = tf.constant(info.class_names)
        self.info_json = tf.constant(info.to_json())
        self.uncertain_below = tf.constant(info.uncertain_below or 0.0, tf.float32)

    def _one(self, encoded: tf.Tensor) -> dict[str, tf.Tensor]:
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        height, width = tf.shape(image)[0], tf.shape(image)[1]
        rgb = tf.cast(image, tf.float32) / 255.0
        grey = tf.reduce_mean(rgb, axis=-1)
        colour = tf.reduce_max(tf.abs(rgb - grey[..., None]))
        spread = tf.math.reduce_std(grey)
        mean = tf.reduce_mean(grey)
        count = len(self.info.class_names)
        band = tf.minimum(tf.cast(mean * count, tf.int64), count - 1)
        logits = -tf.abs(tf.range(count, dtype=tf.float32) - tf.cast(band, tf.float32)) * (1.0 + 20.0 * spread)
        reason = tf.where(colour > 0.1, "not_greyscale", tf.where(spread < 0.01, "blank", ""))
        cells = tf.image.resize(grey[..., None], [HEATMAP_CELLS, HEATMAP_CELLS])[..., 0]
        heatmap = cells / (tf.reduce_max(cells) + 1e-6)
        embedding = tf.stack([mean, spread, colour, tf.cast(height, tf.float32) / 512.0])
        return {"logits": logits, "reason": reason, "heatmap": heatmap, "embedding": embedding,
                "crop_box": tf.stack([0.0, 0.0, tf.cast(height, tf.float32), tf.cast(width, tf.float32)])}

    def _outputs(self, images: tf.Tensor, with_heatmap: bool) -> dict[str, tf.Tensor]:
        spec = {"logits": tf.TensorSpec([len(self.info.class_names)], tf.float32),
                "reason": tf.TensorSpec([], tf.string),
                "heatmap": tf.TensorSpec([HEATMAP_CELLS, HEATMAP_CELLS], tf.float32),
                "crop_box": tf.TensorSpec([4], tf.float32), "embedding": tf.TensorSpec([4], tf.float32)}
        parts = tf.map_fn(self._one, images, fn_output_signature=spec)
        probabilities = tf.nn.softmax(parts["logits"])
        class_id = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
        in_domain = tf.equal(parts["reason"], "")
        result = {
            Output.PROBABILITIES: probabilities, Output.CLASS_ID: class_id,
            Output.CLASS_NAME: tf.gather(self.class_names, class_id),
            Output.NEEDS_REVIEW: tf.reduce_max(probabilities, axis=-1) < self.uncertain_below,
            Output.OOD_SCORE: tf.where(in_domain, 0.5, 2.0), Output.IN_DOMAIN: in_domain,
            Output.OOD_REASON: parts["reason"], Output.CROP_BOX: parts["crop_box"],
            Output.CROP_ANGLE: tf.zeros_like(probabilities[:, 0]),
            Output.EMBEDDING: parts["embedding"],
        }
        if with_heatmap:
            result[Output.HEATMAP] = parts["heatmap"]
        return result

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=Input.EXAMPLES)])
    def serve_examples(self, examples):
        parsed = tf.io.parse_example(examples, {"image": tf.io.FixedLenFeature([], tf.string)})
        return self._outputs(parsed["image"], with_heatmap=False)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=Input.IMAGES)])
    def predict_image(self, images):
        return self._outputs(images, with_heatmap=False)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=Input.IMAGES)])
    def explain(self, images):
        return self._outputs(images, with_heatmap=True)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=Input.REQUEST)])
    def describe(self, request):
        return {Output.MODEL_INFO: tf.fill(tf.shape(request), self.info_json)}


def build(export_dir: str, class_names: tuple[str, ...] = CLASS_NAMES,
          display_names: tuple[str, ...] = DISPLAY_NAMES, uncertain_below: float = 0.6) -> str:
    """Writes the contract model to ``export_dir`` (a version directory, e.g. <base>/radassist/1); returns it."""
    info = ModelInfo(class_names=tuple(class_names), class_display_names=tuple(display_names), image_size=224,
                     signatures=(Signature.SERVING_DEFAULT, Signature.PREDICT_IMAGE, Signature.EXPLAIN,
                                 Signature.MODEL_INFO),
                     uncertain_below=uncertain_below,
                     negative_classes=tuple(name for name in class_names if name == "normal"))
    model = ContractModel(info)
    tf.saved_model.save(model, export_dir, signatures={
        Signature.SERVING_DEFAULT: model.serve_examples, Signature.PREDICT_IMAGE: model.predict_image,
        Signature.EXPLAIN: model.explain, Signature.MODEL_INFO: model.describe})
    os.makedirs(os.path.dirname(os.path.join(export_dir, MODEL_INFO_PATH)), exist_ok=True)
    with open(os.path.join(export_dir, MODEL_INFO_PATH), "w") as handle:
        handle.write(info.to_json())
    # TF Serving's warm-up records, as the real export writes them: one predict_image request.
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = "radassist", Signature.PREDICT_IMAGE
    request.inputs[Input.IMAGES].CopyFrom(tf.make_tensor_proto([grey_png(128)], dtype=tf.string))
    record = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
    with tf.io.TFRecordWriter(os.path.join(export_dir, "assets.extra", WARMUP_FILE)) as writer:
        writer.write(record.SerializeToString())
    return export_dir


def grey_png(level: int, contrast: int = 60, size: int = 96) -> bytes:
    """A greyscale test image of mean grey ``level`` (0..255) with a ``contrast`` gradient (0: uniform, "blank")."""
    ramp = np.linspace(-contrast / 2, contrast / 2, size)[None, :].repeat(size, 0)
    pixels = np.clip(level + ramp, 0, 255).astype(np.uint8)
    return tf.io.encode_png(pixels[..., None]).numpy()


# --- the segmenter (radassist-seg): the contract of components/segmentation/export.py ------------------------
SEGMENTER_NAME = "radassist-seg"
LESION_THRESHOLD = 0.5
NODULE_GREY = 200  # the contract segmenter's "nodule": pixels at least this bright (p >= LESION_THRESHOLD)


class ContractSegmenter(tf.Module):
    """``segment``: the nodule probability is the pixel's brightness ramped from 150 (0) to 250 (1), so a white
    disc on a grey slice is one lesion of the disc's size and grey_png images (under 200) hold none; the lesions are
    the real graph's (components/segmentation/lesions.py)."""

    def __init__(self, info: ModelInfo):
        super().__init__()
        self.info_json = tf.constant(info.to_json())

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=Input.IMAGES)])
    def segment(self, images):
        from components.segmentation import lesions

        def grey(encoded):
            return tf.reduce_mean(tf.cast(tf.io.decode_image(encoded, channels=3, expand_animations=False),
                                          tf.float32), axis=-1)

        sizes = tf.map_fn(lambda encoded: tf.shape(grey(encoded)), images, fn_output_signature=tf.int32)
        largest = tf.reduce_max(sizes, axis=0)

        def one(encoded):
            probability = tf.clip_by_value((grey(encoded) - 150.0) / 100.0, 0.0, 1.0)
            found = lesions.measure(probability, LESION_THRESHOLD)
            size = tf.shape(probability)
            padded = tf.pad(probability, [[0, largest[0] - size[0]], [0, largest[1] - size[1]]])
            return {Output.PROBABILITY_MAP: padded, Output.LESION_COUNT: found["count"],
                    **{name: found[name.removeprefix("lesion_")] for name in LESION_OUTPUTS}}

        rows = lesions.MAX_LESIONS
        spec = {Output.PROBABILITY_MAP: tf.TensorSpec([None, None], tf.float32),
                Output.LESION_COUNT: tf.TensorSpec([], tf.int32),
                **{name: tf.TensorSpec([rows, *{Output.LESION_CENTROID: [2], Output.LESION_BOX: [4]}.get(name, [])],
                                       tf.float32) for name in LESION_OUTPUTS}}
        result = tf.map_fn(one, images, fn_output_signature=spec)
        result[Output.IMAGE_SIZE] = sizes
        return result

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=Input.REQUEST)])
    def describe(self, request):
        return {Output.MODEL_INFO: tf.fill(tf.shape(request), self.info_json)}


def build_segmenter(export_dir: str) -> str:
    """Writes the contract segmenter to ``export_dir`` (e.g. <base>/radassist-seg/1); returns it."""
    info = ModelInfo(class_names=("background", "nodule"), class_display_names=("Background", "Nodule"),
                     image_size=128, signatures=(Signature.SEGMENT, Signature.MODEL_INFO),
                     lesion_threshold=LESION_THRESHOLD)
    model = ContractSegmenter(info)
    tf.saved_model.save(model, export_dir, signatures={Signature.SEGMENT: model.segment,
                                                       Signature.MODEL_INFO: model.describe})
    os.makedirs(os.path.dirname(os.path.join(export_dir, MODEL_INFO_PATH)), exist_ok=True)
    with open(os.path.join(export_dir, MODEL_INFO_PATH), "w") as handle:
        handle.write(info.to_json())
    return export_dir


def disc_png(radius: float, centre: tuple[float, float] = (60.0, 70.0), size: tuple[int, int] = (128, 160),
             background: int = 90) -> bytes:
    """A grey slice with one white disc (a "nodule" for the contract segmenter) of ``radius`` px."""
    y, x = np.mgrid[:size[0], :size[1]]
    pixels = np.full(size, background, np.uint8)
    pixels[(y - centre[0]) ** 2 + (x - centre[1]) ** 2 <= radius ** 2] = 255
    return tf.io.encode_png(pixels[..., None]).numpy()
