"""The segmenter's intensity canonicalisation, in TensorFlow ops (Transform and the ``segment`` signature).

Each slice is min-max scaled to 0..1 on its own: exactly what the LIDC-IDRI crops already are (every one spans
0..255), and for a whole slice what its window shows, whatever the export's level, width or contrast. The
classifier's canonicalisation (components.imaging: each pixel's rank mapped through the training images' mean
quantile function) was tried here first and cost a tenth of the Dice: a crop's histogram depends on how much of it
the nodule fills, so matching every crop to the mean histogram darkens or brightens the nodule against its
surroundings, the contrast segmentation needs.
"""

import tensorflow as tf

from components import imaging


def decode_grey(image_bytes: tf.Tensor) -> tf.Tensor:
    """One encoded PNG/JPEG/BMP/GIF (any mode) -> float32 [H, W, 1] in 0..255."""
    return imaging.to_grayscale(imaging.decode_rgb(image_bytes))


def canonical(grey: tf.Tensor) -> tf.Tensor:
    """float32 [H, W, 1] 0..255 -> the network's input, [H, W, 1] in 0..1: min-max scaled (a uniform image is 0)."""
    low, high = tf.reduce_min(grey), tf.reduce_max(grey)
    return (grey - low) / tf.maximum(high - low, 1.0)
