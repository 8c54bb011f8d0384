"""Image preprocessing shared by Transform (training) and every serving signature: input canonicalisation.

Written in TensorFlow ops only, so the same graph runs in tf.Transform and inside the SavedModel. Canonicalisation
maps the same anatomy to the same pixels whatever the export did:

1. Geometry: the body is found on a coarse grid (Otsu threshold, a 3x3 opening that drops thin lines and text
   strokes, the largest connected component), its bounding box is measured on a finer grid, and the image is
   cropped to a square around that box (aspect kept; black where the square leaves the image). Padding, borders,
   text and most of the table go.
2. Intensity: histogram matching inside the body (the component plus what it encloses, i.e. the lungs). Each
   pixel's rank among the body's pixels is mapped through a reference quantile function, the mean of the
   training images' quantile functions (a Transform analyzer). Any monotone change of the window (level, width,
   gamma, contrast, brightness) gives the same ranks, so the same pixels. Outside the body is black.

The same pass measures what the input check of the out-of-distribution gate needs (``INPUT_STATS``).
"""

import tensorflow as tf

from components import features

GRID = 128                 # side of the coarse grid on which the body is found
FINE_GRID = 512            # side of the grid on which its bounding box is measured
QUANTILE_LEVELS = 65       # points of the intensity quantile functions (uniform in 0..1)
BODY_MARGIN = 0.02         # of the body's longer side, added around its bounding box
COLOUR_DIFFERENCE = 24     # max(R,G,B) - min(R,G,B) above which a pixel counts as coloured
_MAX_PROPAGATION_STEPS = 4 * GRID


def decode_rgb(image_bytes: tf.Tensor) -> tf.Tensor:
    """Decodes one PNG/JPEG/BMP/GIF (content-sniffed, any mode) to uint8 [H, W, 3]."""
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def to_grayscale(rgb: tf.Tensor) -> tf.Tensor:
    """uint8 [H, W, 3] -> float32 [H, W, 1] in 0..255 (ITU-R 601 luma, as Pillow's "L")."""
    return tf.image.rgb_to_grayscale(tf.cast(rgb, tf.float32))


def colour_fraction(rgb: tf.Tensor) -> tf.Tensor:
    """Share of pixels that are visibly coloured (CT slices are grey; drawn annotation lines are a few pixels)."""
    channels = tf.cast(rgb, tf.int32)
    spread = tf.reduce_max(channels, axis=-1) - tf.reduce_min(channels, axis=-1)
    return tf.reduce_mean(tf.cast(spread > COLOUR_DIFFERENCE, tf.float32))


def otsu_threshold(values: tf.Tensor) -> tf.Tensor:
    """Otsu's threshold of 0..255 values (any shape): the level that best separates dark from bright."""
    bins = tf.cast(tf.clip_by_value(tf.round(tf.reshape(values, [-1])), 0, 255), tf.int32)
    histogram = tf.math.bincount(bins, minlength=256, maxlength=256, dtype=tf.float32)
    p = histogram / tf.maximum(tf.reduce_sum(histogram), 1.0)
    levels = tf.range(256, dtype=tf.float32)
    omega = tf.cumsum(p)
    mu = tf.cumsum(p * levels)
    between = (mu[-1] * omega - mu) ** 2 / tf.maximum(omega * (1.0 - omega), 1e-12)
    return tf.cast(tf.argmax(between), tf.float32) + 0.5


def _erode(mask: tf.Tensor) -> tf.Tensor:
    return -tf.nn.max_pool2d(-mask[None, ..., None], 3, 1, "SAME")[0, ..., 0]


def _dilate(mask: tf.Tensor) -> tf.Tensor:
    return tf.nn.max_pool2d(mask[None, ..., None], 3, 1, "SAME")[0, ..., 0]


def largest_component(mask: tf.Tensor) -> tf.Tensor:
    """The largest 8-connected component of a float {0,1} [GRID, GRID] mask (all zeros when the mask is empty).

    Every pixel starts with its own id; ids spread by 3x3 max pooling inside the mask until nothing changes.
    """
    ids = tf.reshape(tf.range(1, GRID * GRID + 1, dtype=tf.float32), [GRID, GRID])
    labels = ids * mask

    def step(i, labels, _):
        spread = _dilate(labels) * mask
        return i + 1, spread, tf.reduce_any(tf.not_equal(spread, labels))

    _, labels, _ = tf.while_loop(lambda i, _, changed: changed & (i < _MAX_PROPAGATION_STEPS), step,
                                 (tf.constant(0), labels, tf.constant(True)))
    counts = tf.math.unsorted_segment_sum(mask, tf.cast(labels, tf.int32), GRID * GRID + 1)
    largest = tf.cast(tf.argmax(counts[1:]) + 1, tf.float32)
    return tf.cast(tf.equal(labels, largest), tf.float32) * mask


def fill_enclosed(mask: tf.Tensor) -> tf.Tensor:
    """Adds to a [GRID, GRID] mask every pixel it encloses left, right, above and below (the lungs in a body)."""
    def seen_from(axis, reverse):
        return tf.cumsum(mask, axis=axis, reverse=reverse) > 0

    enclosed = seen_from(0, False) & seen_from(0, True) & seen_from(1, False) & seen_from(1, True)
    return tf.maximum(mask, tf.cast(enclosed, tf.float32))


def _quantile_function(cdf: tf.Tensor) -> tf.Tensor:
    """A 256-bin CDF -> the gray levels at QUANTILE_LEVELS uniform levels in 0..1 (interpolated within bins)."""
    levels = tf.linspace(0.0, 1.0, QUANTILE_LEVELS)
    # cdf[v] is the share of pixels <= v + 0.5; searchsorted finds the first bin reaching each level.
    upper = tf.minimum(tf.searchsorted(cdf, levels, side="left"), 255)
    previous = tf.gather(tf.concat([[0.0], cdf], 0), upper)
    current = tf.gather(cdf, upper)
    within = (levels - previous) / tf.maximum(current - previous, 1e-6)
    return tf.cast(upper, tf.float32) - 0.5 + tf.clip_by_value(within, 0.0, 1.0)


def _lookup(table: tf.Tensor, positions: tf.Tensor) -> tf.Tensor:
    """Linear interpolation in a 1-D table at fractional positions (clipped to its range)."""
    last = tf.cast(tf.shape(table)[0] - 1, tf.float32)
    positions = tf.clip_by_value(positions, 0.0, last)
    below = tf.floor(positions)
    fraction = positions - below
    below = tf.cast(below, tf.int32)
    above = tf.minimum(below + 1, tf.cast(last, tf.int32))
    return tf.gather(table, below) * (1.0 - fraction) + tf.gather(table, above) * fraction


def _square_box(body: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    """Bounding box of a [FINE_GRID, FINE_GRID] mask, in input pixels, widened to a centred square with a margin:
    [y0, x0, y1, x1] float32 (may extend beyond the image). The whole image when the mask is empty."""
    height, width = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    rows = tf.cast(tf.where(tf.reduce_any(body > 0, axis=1))[:, 0], tf.float32)
    cols = tf.cast(tf.where(tf.reduce_any(body > 0, axis=0))[:, 0], tf.float32)
    found = tf.size(rows) > 0
    scale_y, scale_x = height / FINE_GRID, width / FINE_GRID
    y0 = tf.cond(found, lambda: tf.reduce_min(rows) * scale_y, lambda: 0.0)
    y1 = tf.cond(found, lambda: (tf.reduce_max(rows) + 1.0) * scale_y, lambda: height)
    x0 = tf.cond(found, lambda: tf.reduce_min(cols) * scale_x, lambda: 0.0)
    x1 = tf.cond(found, lambda: (tf.reduce_max(cols) + 1.0) * scale_x, lambda: width)
    side = tf.maximum(y1 - y0, x1 - x0) * (1.0 + 2.0 * BODY_MARGIN)
    cy, cx = (y0 + y1) / 2.0, (x0 + x1) / 2.0
    return tf.stack([cy - side / 2.0, cx - side / 2.0, cy + side / 2.0, cx + side / 2.0])


def _crop_square(gray: tf.Tensor, box: tf.Tensor, size: int) -> tf.Tensor:
    """Resamples [H, W, 1] inside the square ``box`` (input pixels, sub-pixel exact; black outside the image) to
    [size, size, 1]. Large inputs are first downscaled with antialiasing so the box is about ``size`` across."""
    shape = tf.shape(gray)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    scale = tf.minimum(1.0, size / (box[2] - box[0]))
    new_height = tf.maximum(tf.round(height * scale), 2.0)
    new_width = tf.maximum(tf.round(width * scale), 2.0)
    image = tf.cond(scale < 1.0,
                    lambda: tf.image.resize(gray, tf.cast(tf.stack([new_height, new_width]), tf.int32),
                                            method="bilinear", antialias=True),
                    lambda: gray)
    image_height, image_width = tf.cast(tf.shape(image)[0], tf.float32), tf.cast(tf.shape(image)[1], tf.float32)
    return tf.clip_by_value(_resample(image, box * tf.stack([image_height / height, image_width / width] * 2),
                                      size), 0.0, 255.0)


def _resample(image: tf.Tensor, box: tf.Tensor, size: int) -> tf.Tensor:
    """Bilinear samples of [h, w, C] at the centres of a size x size grid over ``box`` (continuous pixel
    coordinates: pixel i spans [i, i + 1]); 0 outside the image."""
    shape = tf.cast(tf.shape(image), tf.float32)
    step_y, step_x = (box[2] - box[0]) / size, (box[3] - box[1]) / size
    # crop_and_resize samples from y1 to y2 inclusive, in units of pixel-centre indices over (h - 1).
    first_y, last_y = box[0] + 0.5 * step_y - 0.5, box[2] - 0.5 * step_y - 0.5
    first_x, last_x = box[1] + 0.5 * step_x - 0.5, box[3] - 0.5 * step_x - 0.5
    span_y, span_x = tf.maximum(shape[0] - 1, 1.0), tf.maximum(shape[1] - 1, 1.0)  # a 1-pixel side: no division
    boxes = tf.stack([first_y / span_y, first_x / span_x, last_y / span_y, last_x / span_x])[None]
    return tf.image.crop_and_resize(image[None], boxes, [0], [size, size], extrapolation_value=0.0)[0]


def _mask_in_box(mask: tf.Tensor, box: tf.Tensor, height: tf.Tensor, width: tf.Tensor, size: int) -> tf.Tensor:
    """A [GRID, GRID] mask of the whole image, resampled inside ``box`` (input pixels) to [size, size, 1]."""
    to_grid = tf.stack([GRID / tf.cast(height, tf.float32), GRID / tf.cast(width, tf.float32)] * 2)
    return _resample(mask[..., None], box * to_grid, size)


def canonicalise(rgb: tf.Tensor) -> dict[str, tf.Tensor]:
    """One decoded uint8 [H, W, 3] image -> canonical geometry and the statistics the input check reads.

    Returns float32 tensors: ``gray`` [S, S, 1] 0..255 (the body cropped to a square, not yet intensity-
    normalised), ``body`` [S, S, 1] {0,1} (body with what it encloses), ``crop_box`` [4] (y0, x0, y1, x1 of the
    square in input pixels), ``body_fraction`` (the body's share of the image), ``enclosed_dark_fraction`` (the
    share of the body, with what it encloses, that is dark: the lungs and airways of a chest slice),
    ``colour_fraction``, ``contrast`` (standard deviation of the gray levels, 0..255), ``height`` and ``width``;
    S = IMAGE_SIZE.
    """
    gray = to_grayscale(rgb)
    shape = tf.shape(gray)
    height, width = shape[0], shape[1]
    coarse = tf.image.resize(gray, [GRID, GRID], method="area")[..., 0]
    threshold = otsu_threshold(coarse)
    tissue = tf.cast(coarse > threshold, tf.float32)
    tissue *= tf.cast(tf.reduce_min(coarse) <= threshold, tf.float32)  # a uniform image has no body
    opened = _dilate(_erode(tissue)) * tissue
    component = largest_component(opened)
    filled = fill_enclosed(component)
    body = _dilate(filled)
    # The box is measured on a finer grid, within the coarse component: exact to a pixel at 512 a side.
    fine = tf.image.resize(gray, [FINE_GRID, FINE_GRID], method="area")[..., 0] > threshold
    near = tf.image.resize(_dilate(component)[..., None], [FINE_GRID, FINE_GRID], method="nearest")[..., 0] > 0
    box = _square_box(tf.cast(fine & near, tf.float32), height, width)
    size = features.IMAGE_SIZE
    return {
        "gray": _crop_square(gray, box, size),
        "body": tf.cast(_mask_in_box(body, box, height, width, size) > 0.5, tf.float32),
        features.CROP_BOX_KEY: box,
        "body_fraction": tf.reduce_mean(component),
        "enclosed_dark_fraction": tf.reduce_sum(filled - component) / tf.maximum(tf.reduce_sum(filled), 1.0),
        "colour_fraction": colour_fraction(rgb),
        "contrast": tf.math.reduce_std(gray),
        "height": tf.cast(height, tf.float32),
        "width": tf.cast(width, tf.float32),
    }


def body_quantiles(gray: tf.Tensor, body: tf.Tensor) -> tf.Tensor:
    """The intensity quantile function of the body's pixels: [QUANTILE_LEVELS] gray levels."""
    return _quantile_function(_body_cdf(gray, body))


def _body_cdf(gray: tf.Tensor, body: tf.Tensor) -> tf.Tensor:
    bins = tf.cast(tf.clip_by_value(tf.round(tf.reshape(gray, [-1])), 0, 255), tf.int32)
    weights = tf.reshape(body, [-1])
    histogram = tf.math.unsorted_segment_sum(weights, bins, 256) + 1e-3  # never flat: a strictly rising CDF
    return tf.cumsum(histogram) / tf.reduce_sum(histogram)


def match_intensities(gray: tf.Tensor, body: tf.Tensor, reference: tf.Tensor) -> tf.Tensor:
    """Histogram matching inside the body: each pixel's rank among the body's pixels -> the reference quantile
    function at that rank. Invariant to any monotone change of the input's gray levels. Black outside the body."""
    cdf = _body_cdf(gray, body)
    # The mid-rank of gray level v: halfway between the shares below and at v (ties share one rank).
    mid_rank = cdf - 0.5 * (cdf - tf.concat([[0.0], cdf[:-1]], 0))
    rank = _lookup(mid_rank, gray)
    matched = _lookup(tf.cast(reference, tf.float32), rank * (QUANTILE_LEVELS - 1))
    return tf.clip_by_value(matched, 0.0, 255.0) * body


def vgg_preprocess(gray: tf.Tensor) -> tf.Tensor:
    """Turns [..., 1] grayscale 0..255 into VGG16's caffe input: 3 channels (BGR) minus the ImageNet means."""
    gray = tf.cast(gray, tf.float32)
    return tf.concat([gray - mean for mean in features.VGG_MEAN_BGR], axis=-1)


INPUT_STATS = (features.CROP_BOX_KEY, "body_fraction", "enclosed_dark_fraction", "colour_fraction", "contrast",
               "height", "width")


def canonical_batch(image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
    """A batch of encoded images [N] (or [N, 1]) -> ``canonicalise``'s outputs stacked, plus ``quantiles``
    [N, QUANTILE_LEVELS] (each image's body quantile function, what the reference is the mean of)."""
    image_bytes = tf.reshape(image_bytes, [-1])
    size = features.IMAGE_SIZE

    def one(encoded):
        result = canonicalise(decode_rgb(encoded))
        result["quantiles"] = body_quantiles(result["gray"], result["body"])
        return result

    scalar = tf.TensorSpec([], tf.float32)
    signature = {
        "gray": tf.TensorSpec([size, size, 1], tf.float32), "body": tf.TensorSpec([size, size, 1], tf.float32),
        features.CROP_BOX_KEY: tf.TensorSpec([4], tf.float32),
        "quantiles": tf.TensorSpec([QUANTILE_LEVELS], tf.float32),
        **{key: scalar for key in INPUT_STATS if key != features.CROP_BOX_KEY},
    }
    return tf.map_fn(one, image_bytes, fn_output_signature=signature)


def model_pixels(canonical: dict[str, tf.Tensor], reference: tf.Tensor) -> tf.Tensor:
    """``canonical_batch``'s output -> VGG16 input [N, S, S, 3], intensities matched to ``reference``."""
    matched = tf.map_fn(lambda item: match_intensities(item[0], item[1], reference),
                        (canonical["gray"], canonical["body"]), fn_output_signature=tf.float32)
    return vgg_preprocess(matched)


def preprocess_batch(image_bytes: tf.Tensor, reference: tf.Tensor) -> tf.Tensor:
    """A batch of encoded images [N] (or [N, 1]) -> float32 [N, IMAGE_SIZE, IMAGE_SIZE, 3], ready for VGG16."""
    return model_pixels(canonical_batch(image_bytes), reference)
