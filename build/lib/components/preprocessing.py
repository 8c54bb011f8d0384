"""tf.Transform ``preprocessing_fn``: encoded scan bytes -> canonical, VGG16-ready pixels and input statistics.

Decode any PNG/JPEG mode, crop to the body, match the body's intensities to the training images' mean quantile
function (a ``tft.mean`` analyzer over the train split, so it is a constant of the graph), replicate to 3 channels
with caffe preprocessing (components.imaging). The graph ships inside every exported SavedModel, with the input
statistics the out-of-distribution gate checks.
"""

import tensorflow as tf
import tensorflow_transform as tft

from components import features, imaging


def preprocessing_fn(inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """TFX Transform entry point."""
    canonical = imaging.canonical_batch(inputs[features.IMAGE_KEY])
    reference = tft.mean(canonical["quantiles"], reduce_instance_dims=False, name="reference_quantiles")
    outputs = {
        features.PIXELS_KEY: imaging.model_pixels(canonical, reference),
        features.LABEL_KEY: tf.reshape(inputs[features.LABEL_KEY], [-1]),
    }
    outputs.update({key: canonical[key] for key in imaging.INPUT_STATS})
    return outputs
