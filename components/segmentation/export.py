"""The segmenter's SavedModel (radassist-seg): its signature contract, warm-up records and info file.

Names are radassist/contract.py's. Signatures:
- ``segment``: ``images`` (encoded PNG/JPEG bytes [N], any size) -> SEGMENT_OUTPUTS: the nodule probability of
  every input pixel (maps padded with 0 to the request's largest image; ``image_size`` gives each one's) and the
  lesions, connected components at and above the threshold chosen on validation (components/segmentation/lesions.py),
  measured in input pixels, largest first. Whole slices work: the network is fully convolutional (inputs are padded
  to a multiple of its stride); slices longer than MAX_WORKING_SIDE are segmented at that size and the map is
  resized back. Only the box of a slice's content is segmented where the slice has a flat border (``content_box``);
  the map is 0 outside it.
- ``serving_default``: ``examples`` (serialized tf.Examples with the raw features) -> ``probability_map`` [N, H, W]
  and ``lesion_mask`` [N, H, W, 1] ({0, 1} at the threshold; what TFMA scores against the consensus).
- ``transform_features``: ``examples`` -> the Transform graph's features (TFMA reads the consensus target and the
  size bin from it).
- ``model_info``: ``request`` [N] -> contract.ModelInfo JSON (with the lesion threshold).
The ``segment`` signature canonicalises intensities with the Transform graph's own function
(components/segmentation/intensity.py).
"""

import json
import os

import tensorflow as tf

from components.segmentation import features, intensity, lesions
from components.segmentation.evaluation import LESION_MASK
from components.segmentation.unet import ENCODER_STRIDE
from components.trainer.export import synthetic_scan_png, write_warmup_requests
from radassist.contract import MODEL_INFO_PATH, Input, ModelInfo, Output, Signature

MAX_WORKING_SIDE = 1024  # px: larger slices are segmented downscaled to this (memory: the encoder's first block)
CONTENT_MARGIN = 16  # px of flat background segmented around an image's content (content_box)
BACKGROUND_TOLERANCE = 1.5 / 255  # canonical values this close to the corners' are background
SIGNATURES = (Signature.SEGMENT, Signature.SERVING_DEFAULT, "transform_features", Signature.MODEL_INFO)

_LESION_FIELDS = {
    Output.LESION_AREA: "area", Output.LESION_CENTROID: "centroid", Output.LESION_LONG_AXIS: "long_axis",
    Output.LESION_SHORT_AXIS: "short_axis", Output.LESION_LONG_AXIS_ANGLE: "long_axis_angle",
    Output.LESION_BOX: "box", Output.LESION_MEAN_PROBABILITY: "mean_probability",
    Output.LESION_MAX_PROBABILITY: "max_probability",
}


def model_info(threshold: float) -> ModelInfo:
    return ModelInfo(class_names=("background", "nodule"), class_display_names=("Background", "Nodule"),
                     image_size=features.CROP_SIZE, signatures=SIGNATURES, lesion_threshold=float(threshold))


def content_box(canonical: tf.Tensor, margin: int = CONTENT_MARGIN) -> tuple[tf.Tensor, tf.Tensor]:
    """The part of a canonical [H, W, 1] image worth segmenting, int32 [y0, x0, y1, x1), and its background value.

    The background is the value the four corners share (within BACKGROUND_TOLERANCE): air a window clipped to black,
    the padding around a scanner's round field of view, what a lung mask flattened. The box holds every other pixel
    plus ``margin`` px of background; the whole image (background 0) where the corners differ or nothing else is
    there. Outside the box there is nothing but background, and the box is padded with it, so the map inside is the
    whole image's but for the network's own border effects, at a fraction of the work on scans with a wide flat
    border (a window that clips air to black, a lung mask).
    """
    image = canonical[..., 0]
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    corners = tf.stack([image[0, 0], image[0, -1], image[-1, 0], image[-1, -1]])
    content = tf.abs(image - corners[0]) > BACKGROUND_TOLERANCE
    rows = tf.cast(tf.where(tf.reduce_any(content, axis=1))[:, 0], tf.int32)
    columns = tf.cast(tf.where(tf.reduce_any(content, axis=0))[:, 0], tf.int32)
    flat = (tf.reduce_max(tf.abs(corners - corners[0])) <= BACKGROUND_TOLERANCE) & (tf.size(rows) > 0)

    def around_content():
        return tf.stack([tf.maximum(rows[0] - margin, 0), tf.maximum(columns[0] - margin, 0),
                         tf.minimum(rows[-1] + 1 + margin, height), tf.minimum(columns[-1] + 1 + margin, width)])

    box = tf.cond(flat, around_content, lambda: tf.stack([0, 0, height, width]))
    return box, tf.where(flat, corners[0], 0.0)


def _round_up(value: tf.Tensor, multiple: int) -> tf.Tensor:
    return (value + multiple - 1) // multiple * multiple


def build_segment(model, threshold: float):
    """The ``segment`` computation, images [N] -> SEGMENT_OUTPUTS (with ``with_lesions=False`` the maps and sizes
    only, for TFMA), closing over the Keras U-Net."""

    def segment(images: tf.Tensor, with_lesions: bool = True) -> dict[str, tf.Tensor]:
        images = tf.reshape(images, [-1])

        def working_image(encoded, size=None, work=None):
            """The canonical image at its working size (and, without them, that size and the image's own)."""
            grey = intensity.decode_grey(encoded)
            if size is None:
                size = tf.shape(grey)[:2]
                scale = tf.minimum(1.0, MAX_WORKING_SIDE / tf.maximum(tf.cast(tf.reduce_max(size), tf.float32), 1.0))
                work = tf.maximum(tf.cast(tf.round(tf.cast(size, tf.float32) * scale), tf.int32), 1)
            grey = tf.cond(tf.reduce_all(tf.equal(size, work)), lambda: grey,
                           lambda: tf.image.resize(grey, work, antialias=True))
            return intensity.canonical(grey), size, work

        def survey(encoded):  # one decode per image for its sizes and content box; prepare() decodes it again
            canonical, size, work = working_image(encoded)
            return (size, work, *content_box(canonical))

        sizes, working, boxes, backgrounds = tf.map_fn(survey, images,
                                                       fn_output_signature=(tf.int32, tf.int32, tf.int32, tf.float32))
        padded = _round_up(tf.reduce_max(boxes[:, 2:] - boxes[:, :2], axis=0), ENCODER_STRIDE)

        def prepare(item):
            encoded, size, work, box, background = item
            content = working_image(encoded, size, work)[0][box[0]:box[2], box[1]:box[3]]
            return tf.image.pad_to_bounding_box(content - background, 0, 0, padded[0], padded[1]) + background

        batch = tf.map_fn(prepare, (images, sizes, working, boxes, backgrounds),
                          fn_output_signature=tf.TensorSpec([None, None, 1], tf.float32))
        probability = tf.sigmoid(tf.cast(model(batch, training=False), tf.float32))[..., 0]
        largest = tf.reduce_max(sizes, axis=0)

        def finish(item):
            chart, size, work, box = item
            chart = tf.pad(chart[:box[2] - box[0], :box[3] - box[1]],
                           [[box[0], work[0] - box[2]], [box[1], work[1] - box[3]]])
            chart = tf.cond(tf.reduce_all(tf.equal(size, work)), lambda: chart,
                            lambda: tf.image.resize(chart[..., None], size)[..., 0])
            result = {Output.PROBABILITY_MAP: tf.pad(chart, [[0, largest[0] - size[0]], [0, largest[1] - size[1]]])}
            if with_lesions:
                found = lesions.measure(chart, threshold)
                result[Output.LESION_COUNT] = found["count"]
                result.update({name: found[field] for name, field in _LESION_FIELDS.items()})
            return result

        rows, dims = lesions.MAX_LESIONS, {Output.LESION_CENTROID: [2], Output.LESION_BOX: [4]}
        signature = {Output.PROBABILITY_MAP: tf.TensorSpec([None, None], tf.float32)}
        if with_lesions:
            signature[Output.LESION_COUNT] = tf.TensorSpec([], tf.int32)
            signature.update({name: tf.TensorSpec([rows, *dims.get(name, [])], tf.float32) for name in _LESION_FIELDS})
        result = tf.map_fn(finish, (probability, sizes, working, boxes), fn_output_signature=signature)
        result[Output.IMAGE_SIZE] = sizes
        return result

    return segment


def build_signatures(model, tft_layer, raw_feature_spec: dict, threshold: float) -> dict:
    segment = build_segment(model, threshold)
    info_json = tf.constant(model_info(threshold).to_json())
    inputs_spec = {key: raw_feature_spec[key] for key in (features.IMAGE_KEY, features.READER_MASKS_KEY)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=Input.IMAGES)])
    def segment_images(images):
        return segment(images)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=Input.EXAMPLES)])
    def serve_examples(examples):
        parsed = tf.io.parse_example(examples, {features.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)})
        probability = segment(parsed[features.IMAGE_KEY], with_lesions=False)[Output.PROBABILITY_MAP]
        return {Output.PROBABILITY_MAP: probability,
                LESION_MASK: tf.cast(probability >= threshold, tf.float32)[..., None]}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=Input.EXAMPLES)])
    def transform_features(examples):
        return tft_layer(tf.io.parse_example(examples, inputs_spec))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=Input.REQUEST)])
    def describe(request):
        return {Output.MODEL_INFO: tf.fill(tf.shape(request), info_json)}

    return {Signature.SEGMENT: segment_images, Signature.SERVING_DEFAULT: serve_examples,
            "transform_features": transform_features, Signature.MODEL_INFO: describe}


def export(model, tft_layer, raw_feature_spec: dict, threshold: float, export_dir: str, model_name: str,
           info: dict) -> None:
    """Saves the U-Net with every signature, warm-up records and the info file (contract fields plus ``info``)."""
    model.tft_layer = tft_layer  # tracked: the Transform graph and its assets are saved with the model
    signatures = build_signatures(model, tft_layer, raw_feature_spec, threshold)
    model.save(export_dir, save_format="tf", signatures=signatures, include_optimizer=False)
    # TF Serving's warm-up: one segment request with a whole synthetic 512 x 512 slice.
    write_warmup_requests(export_dir, model_name, Signature.SEGMENT, [synthetic_scan_png(512)])
    record = {**model_info(threshold).to_dict(), "min_lesion_area_px": lesions.MIN_AREA_PIXELS,
              "max_lesions": lesions.MAX_LESIONS, "max_working_side": MAX_WORKING_SIDE,
              "intensity": "min-max per image to 0..1 (components/segmentation/intensity.py)", **info}
    with tf.io.gfile.GFile(os.path.join(export_dir, MODEL_INFO_PATH), "w") as handle:
        json.dump(record, handle, indent=2)
