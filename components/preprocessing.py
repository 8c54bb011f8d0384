"""tf.Transform ``preprocessing_fn``: encoded scan bytes -> VGG16-ready pixels.

Decode any PNG/JPEG mode to grayscale, pad to a centred square (aspect ratio kept), resize to IMAGE_SIZE,
replicate to 3 channels with caffe preprocessing. The graph ships inside every exported SavedModel.
"""

import tensorflow as tf

from components import features, imaging


def preprocessing_fn(inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """TFX Transform entry point."""
    return {
        features.PIXELS_KEY: imaging.preprocess_batch(inputs[features.IMAGE_KEY]),
        features.LABEL_KEY: tf.reshape(inputs[features.LABEL_KEY], [-1]),
    }
