"""Lesions from a nodule probability map, in TensorFlow ops (they run inside the SavedModel's ``segment`` signature).

A lesion is an 8-connected component of the pixels at or above the threshold. Each is measured the way radiologists
report a nodule on an axial slice: the long axis is its largest in-plane diameter (the caliper or Feret diameter),
the short axis its width perpendicular to the long axis, plus area and centroid. A diameter is the spread of the
pixel centres along its direction plus one pixel: a one-pixel lesion measures 1 x 1 px, and a disc drawn on the
pixel grid measures its true diameter to within a pixel (the squares' corners would overstate it by more than one).
The portal converts pixels to mm with the scan's pixel spacing.
"""

import math

import tensorflow as tf

MAX_LESIONS = 16            # lesions reported per image, largest first (the count says how many there were)
MIN_AREA_PIXELS = 3         # smaller components are speckle, not lesions
FERET_ANGLES = 90           # caliper directions, every 2 degrees: the largest diameter is off by < 0.02 %
_MAX_PROPAGATION_STEPS = 4096
_POOLS_PER_STEP = 4


def _spread_along_runs(labels: tf.Tensor, inside: tf.Tensor) -> tf.Tensor:
    """Every pixel of each horizontal run of the mask takes the run's largest label (one step along a whole run)."""
    height, width = tf.shape(labels)[0], tf.shape(labels)[1]
    starts = inside * (1.0 - tf.pad(inside[:, :-1], [[0, 0], [1, 0]]))
    run = tf.cast(tf.cumsum(starts, axis=1) * inside, tf.int32)  # 1, 2, ... along each row; 0 outside the mask
    runs_per_row = width // 2 + 2
    segments = tf.where(inside > 0, tf.range(height)[:, None] * runs_per_row + run, 0)
    largest = tf.math.unsorted_segment_max(labels, segments, height * runs_per_row)
    return tf.gather(tf.maximum(largest, 0.0), segments) * inside


def _max_3x3(labels: tf.Tensor) -> tf.Tensor:
    """Each pixel's largest label in its 3x3 neighbourhood, for labels >= 0: two passes of shifted maxima (a 3x3
    max_pool2d on one channel is much slower on CPUs)."""
    padded = tf.pad(labels, [[1, 1], [1, 1]])
    rows = tf.maximum(tf.maximum(padded[:-2], padded[1:-1]), padded[2:])
    return tf.maximum(tf.maximum(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:])


def connected_components(mask: tf.Tensor) -> tf.Tensor:
    """8-connected components of a bool [H, W] mask: int32 labels 1..K (0 outside the mask), K the count.

    Every pixel starts with its own id; the largest id spreads along whole runs of each row and column and through
    3x3 neighbourhoods (the diagonal steps) inside the mask until nothing changes: a few rounds for any compact
    lesion, and at most about one per bend of a winding one (one-pixel steps would take as many rounds as the
    lesion is long, which a large blob on an unusual image makes slow).
    """
    shape = tf.shape(mask)
    inside = tf.cast(mask, tf.float32)
    ids = tf.reshape(tf.range(1, shape[0] * shape[1] + 1, dtype=tf.float32), shape) * inside  # exact below 2^24

    inside_t = tf.transpose(inside)

    def step(i, labels, _):
        spread = _spread_along_runs(labels, inside)
        spread = tf.transpose(_spread_along_runs(tf.transpose(spread), inside_t))
        for _ in range(_POOLS_PER_STEP):  # cheap 3x3 steps between the costlier run steps: mazes converge too
            spread = _max_3x3(spread) * inside
        return i + 1, spread, tf.reduce_any(tf.not_equal(spread, labels))

    _, labels, _ = tf.while_loop(lambda i, _, changed: changed & (i < _MAX_PROPAGATION_STEPS), step,
                                 (tf.constant(0), ids, tf.constant(True)))
    flat = tf.reshape(labels, [-1])
    _, compact = tf.unique(tf.concat([[0.0], flat], 0))  # 0 first, so background keeps index 0
    return tf.reshape(compact[1:], shape)


def measure(probability: tf.Tensor, threshold: float | tf.Tensor, max_lesions: int = MAX_LESIONS,
            min_area: int = MIN_AREA_PIXELS) -> dict[str, tf.Tensor]:
    """The lesions of one float [H, W] probability map, largest first, padded to ``max_lesions`` rows.

    Returns ``count`` (int32, all lesions of at least ``min_area`` pixels, even beyond ``max_lesions``), and per row
    (zeros past the count): ``area`` (px), ``centroid`` ([y, x] px), ``long_axis`` and ``short_axis`` (px),
    ``long_axis_angle`` (degrees from the image's x axis, y down), ``box`` ([y0, x0, y1, x1) px) and
    ``mean_probability`` and ``max_probability`` over the lesion.
    """
    labels = connected_components(probability >= threshold)
    count_all = tf.reduce_max(labels) + 1
    where = tf.where(labels > 0)
    segment = tf.gather_nd(labels, where)
    yx = tf.cast(where, tf.float32)
    values = tf.gather_nd(probability, where)
    area = tf.math.unsorted_segment_sum(tf.ones_like(values), segment, count_all)
    centroid = tf.math.unsorted_segment_sum(yx, segment, count_all) / tf.maximum(area, 1.0)[:, None]
    angles = tf.range(FERET_ANGLES, dtype=tf.float32) * (math.pi / FERET_ANGLES)
    cos, sin = tf.cos(angles), tf.sin(angles)
    projection = yx[:, 1:2] * cos + yx[:, 0:1] * sin  # [pixels, angles]
    extent = (tf.math.unsorted_segment_max(projection, segment, count_all)
              - tf.math.unsorted_segment_min(projection, segment, count_all) + 1.0)
    longest = tf.argmax(extent, axis=1, output_type=tf.int32)
    long_axis = tf.reduce_max(extent, axis=1)
    perpendicular = (longest + FERET_ANGLES // 2) % FERET_ANGLES
    short_axis = tf.gather(extent, perpendicular, batch_dims=1)
    low = tf.math.unsorted_segment_min(yx, segment, count_all)
    high = tf.math.unsorted_segment_max(yx, segment, count_all) + 1.0
    lesions = {
        "area": area, "centroid": centroid, "long_axis": long_axis, "short_axis": short_axis,
        "long_axis_angle": tf.gather(angles, longest) * (180.0 / math.pi),
        "box": tf.concat([low, high], axis=1),
        "mean_probability": tf.math.unsorted_segment_sum(values, segment, count_all) / tf.maximum(area, 1.0),
        "max_probability": tf.math.unsorted_segment_max(values, segment, count_all),
    }
    kept = tf.where(area[1:] >= min_area)[:, 0] + 1  # index 0 is the background
    order = tf.gather(kept, tf.argsort(tf.gather(area, kept), direction="DESCENDING", stable=True))
    shown = order[:max_lesions]
    padding = max_lesions - tf.shape(shown)[0]
    result = {"count": tf.shape(order)[0]}
    for name, value in lesions.items():
        rows = tf.gather(value, shown)
        pad = [[0, padding]] + [[0, 0]] * (len(value.shape) - 1)
        result[name] = tf.pad(rows, pad)
    return result
