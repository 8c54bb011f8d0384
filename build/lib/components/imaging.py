"""Image preprocessing shared by Transform (training) and every serving signature: input canonicalisation.

Written in TensorFlow ops only, so the same graph runs in tf.Transform and inside the SavedModel. Canonicalisation
maps the same anatomy to the same pixels whatever the export did:

1. Body and lungs: the body is found on a coarse grid (Otsu threshold, a 3x3 opening that drops thin lines and text
   strokes, the largest connected component); the lungs are the dark parts it encloses.
2. Geometry: the slice is deskewed (the tilt of the body's major axis, from its second moments, up to
   MAX_DESKEW_DEGREES) and framed on the lungs: a square LUNG_FRAME times their longer extent (measured on a finer
   grid, in the deskewed frame) around their centre, black where it leaves the image. The lungs, unlike the body
   outline, stay whole when another site's export pads, crops its borders or reconstructs a smaller field of view;
   padding, borders, text and the table go. Without lungs (not a chest slice; the gate says so) the square holds
   the body instead.
3. Intensity: histogram matching. Each pixel's rank among the pixels of the body inside the lungs' box is mapped
   through a reference quantile function, the mean of the training images' quantile functions (a Transform
   analyzer). Any monotone change of the window (level, width, gamma, contrast, brightness) gives the same ranks,
   so the same pixels. Outside the body, and beyond LUNG_SURROUND times the lungs' box (the chest wall stays, the
   arms and the table go), is black.

The same pass measures what the input check of the out-of-distribution gate needs (``INPUT_STATS``).
"""

import math

import tensorflow as tf

from components import features

GRID = 128                 # side of the coarse grid on which the body is found
FINE_GRID = 512            # side of the grid on which the lungs' (or body's) extent is measured
QUANTILE_LEVELS = 65       # points of the intensity quantile functions (uniform in 0..1)
BODY_MARGIN = 0.02         # of the body's longer side, around its box when the frame falls back to the body
LUNG_FRAME = 1.35          # side of the canonical square / the lungs' longer extent (the body is about 1.55x)
LUNG_SURROUND = 1.2        # what the model sees: the lungs' box scaled by this about its centre (black beyond)
MIN_FRAMING_LUNGS = 0.005  # enclosed dark share of the body under which the frame falls back to the body
MAX_DESKEW_DEGREES = 15.0  # the largest tilt canonicalisation undoes
DESKEW_ELONGATION = (1.1, 1.4)  # body's moment ratio: no deskew below the first, full above the second
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


def _spread_along_runs(labels: tf.Tensor, mask: tf.Tensor, axis: int) -> tf.Tensor:
    """Every pixel of each run of the mask along ``axis`` (rows: 1, columns: 0) takes the run's largest label."""
    if axis == 0:
        return tf.transpose(_spread_along_runs(tf.transpose(labels), tf.transpose(mask), 1))
    previous = tf.pad(mask[:, :-1], [[0, 0], [1, 0]])
    run = tf.cumsum(mask * (1.0 - previous), axis=1) * mask  # 1, 2, ... along each row; 0 outside the mask
    row = tf.range(GRID, dtype=tf.float32)[:, None] * (GRID // 2 + 1)
    segments = tf.cast(tf.where(mask > 0, row + run, 0.0), tf.int32)
    largest = tf.math.unsorted_segment_max(labels, segments, GRID * (GRID // 2 + 1))
    return tf.gather(largest, segments) * mask


def largest_component(mask: tf.Tensor) -> tf.Tensor:
    """The largest 8-connected component of a float {0,1} [GRID, GRID] mask (all zeros when the mask is empty).

    Every pixel starts with its own id; the largest id spreads along the runs of each row and column and through 3x3
    neighbourhoods (the diagonal steps) inside the mask until nothing changes: a few rounds for any body outline,
    where one-pixel steps would take as many rounds as the outline is long.
    """
    ids = tf.reshape(tf.range(1, GRID * GRID + 1, dtype=tf.float32), [GRID, GRID])
    labels = ids * mask

    def step(i, labels, _):
        spread = _spread_along_runs(_spread_along_runs(labels, mask, 1), mask, 0)
        spread = _dilate(spread) * mask
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


def _orientation(mask: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    """The tilt of a [GRID, GRID] mask's major axis from the horizontal, in radians (image y points down), from its
    second moments in input pixels: folded to the nearest image axis, faded to 0 for a roundish mask (no clear axis)
    and clipped to +-MAX_DESKEW_DEGREES."""
    height, width = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    ys = (tf.range(GRID, dtype=tf.float32) + 0.5) * height / GRID
    xs = (tf.range(GRID, dtype=tf.float32) + 0.5) * width / GRID
    total = tf.maximum(tf.reduce_sum(mask), 1.0)
    cy = tf.reduce_sum(mask * ys[:, None]) / total
    cx = tf.reduce_sum(mask * xs[None, :]) / total
    dy, dx = ys[:, None] - cy, xs[None, :] - cx
    myy, mxx = tf.reduce_sum(mask * dy * dy) / total, tf.reduce_sum(mask * dx * dx) / total
    mxy = tf.reduce_sum(mask * dx * dy) / total
    angle = 0.5 * tf.atan2(2.0 * mxy, mxx - myy)
    quarter = math.pi / 2.0
    angle -= quarter * tf.round(angle / quarter)  # a tall mask's axis is vertical: tilt from the nearest axis
    spread = tf.sqrt(tf.square((mxx - myy) / 2.0) + tf.square(mxy))
    elongation = ((mxx + myy) / 2.0 + spread) / tf.maximum((mxx + myy) / 2.0 - spread, 1e-6)
    clear_axis = tf.clip_by_value((elongation - DESKEW_ELONGATION[0]) / (DESKEW_ELONGATION[1] - DESKEW_ELONGATION[0]),
                                  0.0, 1.0)
    limit = MAX_DESKEW_DEGREES * math.pi / 180.0
    return tf.clip_by_value(angle * clear_axis, -limit, limit)


def _extent(mask: tf.Tensor, height: tf.Tensor, width: tf.Tensor, angle: tf.Tensor) -> tf.Tensor:
    """The extent of a [FINE_GRID, FINE_GRID] mask along axes turned by ``angle``: [centre_y, centre_x (input
    pixels), along, across (lengths)]. Empty masks give the whole image."""
    height, width = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    ys = (tf.range(FINE_GRID, dtype=tf.float32) + 0.5) * height / FINE_GRID
    xs = (tf.range(FINE_GRID, dtype=tf.float32) + 0.5) * width / FINE_GRID
    cos, sin = tf.cos(angle), tf.sin(angle)
    dy, dx = ys[:, None] - height / 2.0, xs[None, :] - width / 2.0
    along = dx * cos + dy * sin        # coordinates in the turned frame, about the image centre
    across = -dx * sin + dy * cos
    inside = mask > 0
    found = tf.reduce_any(inside)
    half_cell = 0.5 * (height + width) / (2.0 * FINE_GRID)

    def span(values):
        low = tf.reduce_min(tf.where(inside, values, math.inf)) - half_cell
        high = tf.reduce_max(tf.where(inside, values, -math.inf)) + half_cell
        return low, high

    def measured():
        a0, a1 = span(along)
        c0, c1 = span(across)
        mid_a, mid_c = (a0 + a1) / 2.0, (c0 + c1) / 2.0
        return tf.stack([height / 2.0 + mid_a * sin + mid_c * cos, width / 2.0 + mid_a * cos - mid_c * sin,
                         a1 - a0, c1 - c0])

    return tf.cond(found, measured, lambda: tf.stack([height / 2.0, width / 2.0, width, height]))


def _resample(image: tf.Tensor, frame: tf.Tensor, size: int, scale_y, scale_x) -> tf.Tensor:
    """Bilinear samples of [h, w, C] on a size x size grid over ``frame`` = [centre_y, centre_x, side, angle] (input
    pixels, radians; the square turned by ``angle`` about its centre); ``image`` pixel (r, c) covers input
    [r / scale_y, (r + 1) / scale_y) x [c / scale_x, (c + 1) / scale_x). 0 outside the image."""
    centre_y, centre_x, side, angle = frame[0], frame[1], frame[2], frame[3]
    step = side / size
    cos, sin = tf.cos(angle), tf.sin(angle)
    first = 0.5 * step - side / 2.0    # the first output pixel centre, relative to the square's centre
    # Output pixel (column j, row i) -> input point (cx + u cos - v sin, cy + u sin + v cos), u = first + j step,
    # v = first + i step; then into the image's index coordinates (pixel centres at integers).
    transform = tf.stack([
        scale_x * step * cos, -scale_x * step * sin, scale_x * (centre_x + first * cos - first * sin) - 0.5,
        scale_y * step * sin, scale_y * step * cos, scale_y * (centre_y + first * sin + first * cos) - 0.5,
        0.0, 0.0])
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=transform[None], output_shape=tf.constant([size, size]), fill_value=0.0,
        interpolation="BILINEAR", fill_mode="CONSTANT")[0]


def _crop_frame(gray: tf.Tensor, frame: tf.Tensor, size: int) -> tf.Tensor:
    """Resamples [H, W, 1] inside ``frame`` (see _resample; black outside the image) to [size, size, 1]. Large inputs
    are first downscaled with antialiasing so the frame is about ``size`` across."""
    shape = tf.shape(gray)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    scale = tf.minimum(1.0, size / frame[2])
    new_height = tf.maximum(tf.round(height * scale), 2.0)
    new_width = tf.maximum(tf.round(width * scale), 2.0)
    image = tf.cond(scale < 1.0,
                    lambda: tf.image.resize(gray, tf.cast(tf.stack([new_height, new_width]), tf.int32),
                                            method="bilinear", antialias=True),
                    lambda: gray)
    image_height, image_width = tf.cast(tf.shape(image)[0], tf.float32), tf.cast(tf.shape(image)[1], tf.float32)
    return tf.clip_by_value(_resample(image, frame, size, image_height / height, image_width / width), 0.0, 255.0)


def _frame(lungs: tf.Tensor, body: tf.Tensor, has_lungs: tf.Tensor, height: tf.Tensor, width: tf.Tensor,
           angle: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The canonical square [centre_y, centre_x, side, angle]: LUNG_FRAME times the lungs' longer extent around
    their centre, in the deskewed frame; the body's extent with a margin where no lungs were found. Also the extent
    [along, across] of the box the intensities are measured in: the lungs' (the whole square without lungs)."""
    def lung_frame():
        extent = _extent(lungs, height, width, angle)
        return extent[:2], LUNG_FRAME * tf.maximum(extent[2], extent[3]), extent[2:]

    def body_frame():
        extent = _extent(body, height, width, angle)
        side = (1.0 + 2.0 * BODY_MARGIN) * tf.maximum(extent[2], extent[3])
        return extent[:2], side, tf.stack([side, side])

    centre, side, measured = tf.cond(has_lungs, lung_frame, body_frame)  # only the extent the frame needs
    side = tf.maximum(side, 2.0)
    measured = tf.where(has_lungs, measured, tf.stack([side, side]))
    return tf.stack([centre[0], centre[1], side, angle]), measured


def _central_box(frame: tf.Tensor, extent: tf.Tensor, size: int) -> tf.Tensor:
    """[size, size, 1] {0,1}: the output pixels within a centred box of ``extent`` [along, across] (input pixels)."""
    positions = (tf.range(size, dtype=tf.float32) + 0.5) / size - 0.5  # output pixel centres, in sides from the centre
    along = tf.abs(positions)[None, :] * frame[2] <= extent[0] / 2.0
    across = tf.abs(positions)[:, None] * frame[2] <= extent[1] / 2.0
    return tf.cast(along & across, tf.float32)[..., None]


def canonicalise(rgb: tf.Tensor) -> dict[str, tf.Tensor]:
    """One decoded uint8 [H, W, 3] image -> canonical geometry and the statistics the input check reads.

    Returns float32 tensors: ``gray`` [S, S, 1] 0..255 (the deskewed square around the lungs, not yet intensity-
    normalised), ``body`` [S, S, 1] {0,1} (the body with what it encloses, within LUNG_SURROUND times the lungs'
    box: what the model sees), ``region`` [S, S, 1] {0,1} (the body within the lungs' box: where intensities are
    measured, the same anatomy however the export framed it), ``crop_box`` [4] (y0, x0, y1, x1 of the square in
    input pixels before it is turned), ``crop_angle`` (degrees the square is turned about its centre,
    clockwise on screen), ``body_fraction`` (the body's share of the image), ``enclosed_dark_fraction`` (the share of
    the body, with what it encloses, that is dark: the lungs and airways of a chest slice), ``colour_fraction``,
    ``contrast`` (standard deviation of the gray levels, 0..255), ``height`` and ``width``; S = IMAGE_SIZE.
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
    lungs = _dilate(_erode(filled - component))  # the opening drops dark specks and thin gaps
    enclosed_dark = tf.reduce_sum(filled - component) / tf.maximum(tf.reduce_sum(filled), 1.0)
    angle = _orientation(filled, height, width)
    # Extents are measured on a finer grid, near the coarse masks: exact to a pixel at 512 a side.
    fine = tf.image.resize(gray, [FINE_GRID, FINE_GRID], method="area")[..., 0]

    def near(mask):
        return tf.image.resize(_dilate(mask)[..., None], [FINE_GRID, FINE_GRID], method="nearest")[..., 0] > 0

    fine_lungs = tf.cast((fine <= threshold) & near(lungs), tf.float32)
    fine_body = tf.cast((fine > threshold) & near(component), tf.float32)
    has_lungs = (enclosed_dark >= MIN_FRAMING_LUNGS) & (tf.reduce_sum(lungs) > 0)
    frame, measured = _frame(fine_lungs, fine_body, has_lungs, height, width, angle)
    size = features.IMAGE_SIZE
    grid_scale_y = GRID / tf.cast(height, tf.float32)
    grid_scale_x = GRID / tf.cast(width, tf.float32)
    half = frame[2] / 2.0
    canonical_body = tf.cast(_resample(body[..., None], frame, size, grid_scale_y, grid_scale_x) > 0.5, tf.float32)
    return {
        "gray": _crop_frame(gray, frame, size),
        "body": canonical_body * _central_box(frame, measured * LUNG_SURROUND, size),
        "region": canonical_body * _central_box(frame, measured, size),
        features.CROP_BOX_KEY: tf.stack([frame[0] - half, frame[1] - half, frame[0] + half, frame[1] + half]),
        features.CROP_ANGLE_KEY: frame[3] * 180.0 / math.pi,
        "body_fraction": tf.reduce_mean(component),
        "enclosed_dark_fraction": enclosed_dark,
        "colour_fraction": colour_fraction(rgb),
        "contrast": tf.math.reduce_std(gray),
        "height": tf.cast(height, tf.float32),
        "width": tf.cast(width, tf.float32),
    }


def body_quantiles(gray: tf.Tensor, region: tf.Tensor) -> tf.Tensor:
    """The intensity quantile function of the region's pixels: [QUANTILE_LEVELS] gray levels."""
    return _quantile_function(_region_cdf(gray, region))


def _region_cdf(gray: tf.Tensor, region: tf.Tensor) -> tf.Tensor:
    bins = tf.cast(tf.clip_by_value(tf.round(tf.reshape(gray, [-1])), 0, 255), tf.int32)
    weights = tf.reshape(region, [-1])
    histogram = tf.math.unsorted_segment_sum(weights, bins, 256) + 1e-3  # never flat: a strictly rising CDF
    return tf.cumsum(histogram) / tf.reduce_sum(histogram)


def match_intensities(gray: tf.Tensor, body: tf.Tensor, region: tf.Tensor, reference: tf.Tensor) -> tf.Tensor:
    """Histogram matching: each pixel's rank among the region's pixels -> the reference quantile function at that
    rank. Invariant to any monotone change of the input's gray levels. Black outside the body."""
    cdf = _region_cdf(gray, region)
    # The mid-rank of gray level v: halfway between the shares below and at v (ties share one rank).
    mid_rank = cdf - 0.5 * (cdf - tf.concat([[0.0], cdf[:-1]], 0))
    rank = _lookup(mid_rank, gray)
    matched = _lookup(tf.cast(reference, tf.float32), rank * (QUANTILE_LEVELS - 1))
    return tf.clip_by_value(matched, 0.0, 255.0) * body


def vgg_preprocess(gray: tf.Tensor) -> tf.Tensor:
    """Turns [..., 1] grayscale 0..255 into VGG16's caffe input: 3 channels (BGR) minus the ImageNet means."""
    gray = tf.cast(gray, tf.float32)
    return tf.concat([gray - mean for mean in features.VGG_MEAN_BGR], axis=-1)


INPUT_STATS = (features.CROP_BOX_KEY, features.CROP_ANGLE_KEY, "body_fraction", "enclosed_dark_fraction",
               "colour_fraction", "contrast",
               "height", "width")


def canonical_batch(image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
    """A batch of encoded images [N] (or [N, 1]) -> ``canonicalise``'s outputs stacked, plus ``quantiles``
    [N, QUANTILE_LEVELS] (each image's body quantile function, what the reference is the mean of)."""
    image_bytes = tf.reshape(image_bytes, [-1])
    size = features.IMAGE_SIZE

    def one(encoded):
        result = canonicalise(decode_rgb(encoded))
        result["quantiles"] = body_quantiles(result["gray"], result["region"])
        return result

    scalar = tf.TensorSpec([], tf.float32)
    signature = {
        **{key: tf.TensorSpec([size, size, 1], tf.float32) for key in ("gray", "body", "region")},
        features.CROP_BOX_KEY: tf.TensorSpec([4], tf.float32),
        "quantiles": tf.TensorSpec([QUANTILE_LEVELS], tf.float32),
        **{key: scalar for key in INPUT_STATS if key != features.CROP_BOX_KEY},
    }
    return tf.map_fn(one, image_bytes, fn_output_signature=signature)


def model_pixels(canonical: dict[str, tf.Tensor], reference: tf.Tensor) -> tf.Tensor:
    """``canonical_batch``'s output -> VGG16 input [N, S, S, 3], intensities matched to ``reference``."""
    matched = tf.map_fn(lambda item: match_intensities(*item, reference),
                        (canonical["gray"], canonical["body"], canonical["region"]), fn_output_signature=tf.float32)
    return vgg_preprocess(matched)


def preprocess_batch(image_bytes: tf.Tensor, reference: tf.Tensor) -> tf.Tensor:
    """A batch of encoded images [N] (or [N, 1]) -> float32 [N, IMAGE_SIZE, IMAGE_SIZE, 3], ready for VGG16."""
    return model_pixels(canonical_batch(image_bytes), reference)
