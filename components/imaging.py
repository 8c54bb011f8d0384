"""Image preprocessing shared by Transform (training) and every serving signature.

Written in TensorFlow ops only, so the same graph runs in tf.Transform and inside the SavedModel.
"""

import tensorflow as tf

from components import features


def decode_grayscale(image_bytes: tf.Tensor) -> tf.Tensor:
    """Decodes one PNG/JPEG/BMP/GIF (content-sniffed, any mode) to a uint8 [H, W, 1] grayscale image."""
    image = tf.io.decode_image(image_bytes, channels=1, expand_animations=False)
    image.set_shape([None, None, 1])
    return image


def pad_to_square(image: tf.Tensor) -> tf.Tensor:
    """Pads an [H, W, C] image with black borders to a centred square, keeping its aspect ratio."""
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    side = tf.maximum(height, width)
    return tf.image.pad_to_bounding_box(image, (side - height) // 2, (side - width) // 2, side, side)


def vgg_preprocess(gray: tf.Tensor) -> tf.Tensor:
    """Turns [..., 1] grayscale 0..255 into VGG16's caffe input: 3 channels (BGR) minus the ImageNet means."""
    gray = tf.cast(gray, tf.float32)
    return tf.concat([gray - mean for mean in features.VGG_MEAN_BGR], axis=-1)


def preprocess_image(image_bytes: tf.Tensor) -> tf.Tensor:
    """One encoded image -> float32 [IMAGE_SIZE, IMAGE_SIZE, 3], ready for VGG16."""
    square = pad_to_square(decode_grayscale(image_bytes))
    size = features.IMAGE_SIZE
    resized = tf.image.resize(square, [size, size], method="bilinear", antialias=True)
    resized = tf.clip_by_value(resized, 0.0, 255.0)
    return tf.ensure_shape(vgg_preprocess(resized), [size, size, 3])


def preprocess_batch(image_bytes: tf.Tensor) -> tf.Tensor:
    """A batch of encoded images [N] (or [N, 1]) -> float32 [N, IMAGE_SIZE, IMAGE_SIZE, 3]."""
    image_bytes = tf.reshape(image_bytes, [-1])
    size = features.IMAGE_SIZE
    return tf.map_fn(
        preprocess_image,
        image_bytes,
        fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32),
    )
