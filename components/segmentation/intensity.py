"""The segmenter's intensity canonicalisation, in TensorFlow ops (Transform and the ``segment`` signature).

The classifier's histogram matching (components.imaging.match_intensities): each pixel's rank among the slice's
pixels is mapped through a reference quantile function, the mean of the training slices' (a Transform analyzer).
Any monotone change of the export's window (level, width, gamma, contrast) gives the same ranks, so the same input
to the network; the LIDC crops, min-max scaled each on its own, are matched to their common mean.
"""

import tensorflow as tf

from components import imaging


def decode_grey(image_bytes: tf.Tensor) -> tf.Tensor:
    """One encoded PNG/JPEG/BMP/GIF (any mode) -> float32 [H, W, 1] in 0..255."""
    return imaging.to_grayscale(imaging.decode_rgb(image_bytes))


def quantiles(grey: tf.Tensor) -> tf.Tensor:
    """The slice's intensity quantile function, [QUANTILE_LEVELS] gray levels (what the reference is the mean of)."""
    return imaging.body_quantiles(grey, tf.ones_like(grey))


def canonical(grey: tf.Tensor, reference: tf.Tensor) -> tf.Tensor:
    """float32 [H, W, 1] 0..255 -> the network's input, [H, W, 1] in 0..1, intensities matched to ``reference``."""
    everywhere = tf.ones_like(grey)
    return imaging.match_intensities(grey, everywhere, everywhere, reference) / 255.0
