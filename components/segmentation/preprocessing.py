"""tf.Transform ``preprocessing_fn`` of the segmenter: encoded slice and reader masks -> canonical grey image and
consensus target (>= CONSENSUS_READERS of the readers), with the consensus area and its size bin for TFMA's slices,
The graph ships inside the exported SavedModel (its ``transform_features`` signature gives TFMA the target; the
``segment`` signature applies the same intensity function, components/segmentation/intensity.py, to slices of any
size).
"""

import tensorflow as tf

from components.segmentation import features, intensity


def _decode_mask(encoded: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.io.decode_png(encoded, channels=1) > 0, tf.float32)


def consensus(reader_masks: tf.Tensor) -> tf.Tensor:
    """Encoded masks [READERS] -> float32 [H, W, 1] {0, 1}: pixels at least CONSENSUS_READERS readers outlined."""
    votes = tf.reduce_sum(tf.map_fn(_decode_mask, reader_masks, fn_output_signature=tf.float32), axis=0)
    return tf.cast(votes >= features.CONSENSUS_READERS, tf.float32)


def size_bin(area: tf.Tensor) -> tf.Tensor:
    """Consensus areas (px) -> their SIZE_BINS names."""
    names = tf.constant([name for _, _, name in features.SIZE_BINS])
    edges = tf.constant([low for low, _, _ in features.SIZE_BINS[1:]], tf.int64)
    return tf.gather(names, tf.searchsorted(edges, area, side="right"))


def preprocessing_fn(inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """TFX Transform entry point."""
    images = tf.reshape(inputs[features.IMAGE_KEY], [-1])
    size = features.CROP_SIZE
    grey = tf.map_fn(intensity.decode_grey, images, fn_output_signature=tf.TensorSpec([size, size, 1], tf.float32))
    canonical = tf.map_fn(intensity.canonical, grey)
    masks = tf.map_fn(consensus, inputs[features.READER_MASKS_KEY],
                      fn_output_signature=tf.TensorSpec([size, size, 1], tf.float32))
    area = tf.cast(tf.reduce_sum(masks, axis=[1, 2, 3]), tf.int64)
    return {features.GREY_KEY: canonical, features.MASK_KEY: masks, features.CONSENSUS_AREA_KEY: area,
            features.SIZE_BIN_KEY: size_bin(area)}
