"""The segmentation network: a U-Net whose encoder is the classifier's VGG16 trunk (HED or ImageNet weights, up to
block4_conv3) and whose decoder is trained here. Fully convolutional: it takes a slice of any size that is a
multiple of ENCODER_STRIDE (callers pad to one) and gives a logit per pixel.
"""

import dataclasses

import tf_keras

from components.imaging import vgg_preprocess
from components.trainer import vgg16

SKIP_LAYERS = ("block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3")  # full, 1/2, 1/4, 1/8 resolution
ENCODER_STRIDE = 8


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    weights: str = "hed"                  # as the classifier's TrainingConfig.weights: hed | imagenet | a path
    train_from_block: int = 3             # VGG blocks below this stay as pretrained (1..4; 5 freezes the encoder)
    decoder_widths: tuple[int, ...] = (256, 128, 64, 32)  # at 1/8, 1/4, 1/2 and full resolution


def _conv_block(x, width: int, name: str):
    for index in range(2):
        x = tf_keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{name}_conv{index + 1}")(x)
        x = tf_keras.layers.BatchNormalization(name=f"{name}_bn{index + 1}")(x)
        x = tf_keras.layers.Activation("relu", name=f"{name}_relu{index + 1}")(x)
    return x


def build_encoder(config: UNetConfig) -> tf_keras.Model:
    """VGG16 up to block4_conv3 with the pretrained weights, giving the four skip activations; blocks below
    ``train_from_block`` frozen."""
    base = vgg16.build_conv_base(config.weights, input_shape=(None, None, 3))
    encoder = tf_keras.Model(base.input, [base.get_layer(name).output for name in SKIP_LAYERS], name="encoder")
    for layer in encoder.layers:
        if layer.name.startswith("block"):
            layer.trainable = int(layer.name[len("block")]) >= config.train_from_block
    return encoder


def build_unet(config: UNetConfig = UNetConfig()) -> tf_keras.Model:
    """grey [N, H, W, 1] in 0..1 -> nodule logits [N, H, W, 1] (float32 under a mixed policy)."""
    grey = tf_keras.Input((None, None, 1), name="grey")
    pixels = tf_keras.layers.Lambda(lambda g: vgg_preprocess(g * 255.0), name="caffe")(grey)
    skips = build_encoder(config)(pixels)
    x = _conv_block(skips[-1], config.decoder_widths[0], "decoder4")
    for skip, width, level in zip(reversed(skips[:-1]), config.decoder_widths[1:], (3, 2, 1), strict=True):
        x = tf_keras.layers.UpSampling2D(2, interpolation="bilinear", name=f"up{level}")(x)
        x = tf_keras.layers.Concatenate(name=f"skip{level}")([x, skip])
        x = _conv_block(x, width, f"decoder{level}")
    logits = tf_keras.layers.Conv2D(1, 1, name="logits", dtype="float32")(x)
    return tf_keras.Model(grey, logits, name="radassist_unet")
