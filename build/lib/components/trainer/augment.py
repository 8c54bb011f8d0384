"""Acquisition-shift augmentation: training images re-exported the way other scanners and sites export them.

Applied to the encoded image *before* the model's preprocessing graph, so training sees exactly what
canonicalisation makes of a shifted export (a clipped window, a cropped body, a rotated or blurred slice),
not an idealised version of it. Each shift is applied with probability one half, with a random strength:
window gamma, contrast, level (brightness), black padding, border crop, lower resolution, blur, noise and small
rotations. Never left-right flips: chest anatomy is not symmetric (heart, aorta).
"""

import math

import tensorflow as tf

# Ranges of the random strengths (the robustness benchmark's shift suite reaches these ends).
GAMMA = (0.6, 1.6)
CONTRAST = (0.7, 1.5)
LEVEL = 30.0              # gray levels, either way
PADDING = 0.15            # of the width/height, each side
CROP = 0.12               # of the width/height, each side
SCALE = (0.5, 1.0)
BLUR_SIGMA = (0.5, 1.5)
NOISE_SIGMA = 8.0
ROTATION_DEGREES = 10.0


def _uniform(seed, low, high):
    return tf.random.stateless_uniform([], seed, low, high)


def _maybe(seed, image, shift):
    """``shift(image)`` with probability one half."""
    return tf.cond(tf.random.stateless_uniform([], seed) < 0.5, lambda: shift(image), lambda: image)


def _gaussian_blur(image: tf.Tensor, sigma: tf.Tensor) -> tf.Tensor:
    radius = 4
    offsets = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= tf.reduce_sum(kernel)
    batch = image[None]
    batch = tf.nn.conv2d(batch, tf.reshape(kernel, [-1, 1, 1, 1]), 1, "SAME")
    batch = tf.nn.conv2d(batch, tf.reshape(kernel, [1, -1, 1, 1]), 1, "SAME")
    return batch[0]


def _rotate(image: tf.Tensor, degrees: tf.Tensor) -> tf.Tensor:
    angle = degrees * math.pi / 180.0
    shape = tf.cast(tf.shape(image), tf.float32)
    cy, cx = (shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0
    cos, sin = tf.cos(angle), tf.sin(angle)
    # Output pixel (x, y) samples input (cos*x - sin*y + a, sin*x + cos*y + b): a rotation about the centre.
    transform = tf.stack([cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy, 0.0, 0.0])
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=transform[None], output_shape=tf.shape(image)[:2], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="CONSTANT")[0]


def shift_gray(gray: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """One random acquisition shift of a float32 [H, W, 1] 0..255 image; ``seed`` is a stateless seed [2]."""
    seeds = tf.random.experimental.stateless_split(seed, 20)

    def gamma(image):
        value = tf.exp(_uniform(seeds[1], math.log(GAMMA[0]), math.log(GAMMA[1])))
        return 255.0 * (image / 255.0) ** value

    def contrast(image):
        mean = tf.reduce_mean(image)
        return (image - mean) * _uniform(seeds[3], *CONTRAST) + mean

    def level(image):
        return image + _uniform(seeds[5], -LEVEL, LEVEL)

    def pad(image):
        shape = tf.shape(image)
        fraction = _uniform(seeds[7], 0.02, PADDING)
        dy = tf.cast(tf.cast(shape[0], tf.float32) * fraction, tf.int32)
        dx = tf.cast(tf.cast(shape[1], tf.float32) * fraction, tf.int32)
        return tf.pad(image, [[dy, dy], [dx, dx], [0, 0]])

    def crop(image):
        shape = tf.shape(image)
        fraction = _uniform(seeds[9], 0.02, CROP)
        dy = tf.cast(tf.cast(shape[0], tf.float32) * fraction, tf.int32)
        dx = tf.cast(tf.cast(shape[1], tf.float32) * fraction, tf.int32)
        return image[dy:shape[0] - dy, dx:shape[1] - dx]

    def scale(image):
        size = tf.cast(tf.shape(image)[:2], tf.float32) * _uniform(seeds[11], *SCALE)
        return tf.image.resize(image, tf.maximum(tf.cast(size, tf.int32), 32), antialias=True)

    def blur(image):
        return _gaussian_blur(image, _uniform(seeds[13], *BLUR_SIGMA))

    def noise(image):
        sigma = _uniform(seeds[15], 1.0, NOISE_SIGMA)
        return image + tf.random.stateless_normal(tf.shape(image), seeds[16]) * sigma

    def rotate(image):
        return _rotate(image, _uniform(seeds[17], -ROTATION_DEGREES, ROTATION_DEGREES))

    image = gray
    # Geometry first (what the export framed), then the window, then the scanner's resolution and noise.
    for index, shift in ((6, pad), (8, crop), (18, rotate), (0, gamma), (2, contrast), (4, level), (10, scale),
                         (12, blur), (14, noise)):
        image = tf.clip_by_value(_maybe(seeds[index], image, shift), 0.0, 255.0)
    return image


def shifted_png(image_bytes: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Encoded image (any format the model reads) -> a randomly shifted export of it, as grayscale PNG bytes."""
    gray = tf.image.rgb_to_grayscale(tf.cast(tf.io.decode_image(image_bytes, channels=3, expand_animations=False),
                                             tf.float32))
    shifted = shift_gray(gray, seed)
    return tf.io.encode_png(tf.cast(tf.round(shifted), tf.uint8))


def shifted_batch(image_bytes: tf.Tensor, seed, view, first_index=0) -> tf.Tensor:
    """A batch of encoded images [N] -> one shifted PNG export of each. Image ``first_index + i`` of view ``view``
    always gets the same shift for a given seed, however the images are batched. ``seed``, ``view`` and
    ``first_index`` are int32 numbers or scalar tensors (tensors keep a compiled caller from retracing)."""
    image_bytes = tf.reshape(image_bytes, [-1])
    indices = tf.range(tf.shape(image_bytes)[0]) + first_index
    seeds = tf.stack([tf.fill(tf.shape(indices), seed * 1000 + view), indices], axis=1)
    return tf.map_fn(lambda item: shifted_png(item[0], item[1]), (image_bytes, seeds),
                     fn_output_signature=tf.TensorSpec([], tf.string))
