"""Lesion measurement maths (components/segmentation/lesions.py): known shapes give known sizes, and the graph's
components and diameters agree with scipy's labelling and brute-force calipers."""

import math

import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage

from components.segmentation import lesions


def _measure(probability: np.ndarray, threshold: float = 0.5, **kwargs) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in lesions.measure(tf.constant(probability, tf.float32), threshold,
                                                     **kwargs).items()}


def disc(size: int, centre: tuple[float, float], diameter_px: float) -> np.ndarray:
    y, x = np.mgrid[:size, :size] + 0.5  # pixel centres
    return ((y - centre[0]) ** 2 + (x - centre[1]) ** 2 <= (diameter_px / 2) ** 2).astype(np.float32)


@pytest.mark.parametrize(("diameter_mm", "spacing_mm"), [(6.0, 0.7), (12.5, 0.625), (30.0, 0.9), (4.0, 0.5)])
def test_a_disc_measures_its_diameter_and_area_in_mm(diameter_mm, spacing_mm):
    """A round nodule of D mm drawn at the scan's pixel spacing: long and short axis D, area pi D^2 / 4, to within
    a pixel of outline (what drawing it on a pixel grid costs)."""
    diameter_px = diameter_mm / spacing_mm
    found = _measure(disc(128, (60.3, 70.8), diameter_px))
    assert found["count"] == 1
    assert found["long_axis"][0] * spacing_mm == pytest.approx(diameter_mm, abs=spacing_mm)
    assert found["short_axis"][0] * spacing_mm == pytest.approx(diameter_mm, abs=spacing_mm)
    area_mm2 = found["area"][0] * spacing_mm ** 2
    assert area_mm2 == pytest.approx(math.pi * diameter_mm ** 2 / 4, abs=math.pi * diameter_mm * spacing_mm / 2)
    np.testing.assert_allclose(found["centroid"][0] + 0.5, (60.3, 70.8), atol=0.5)


def test_an_ellipse_at_an_angle_has_its_long_and_short_axis_and_direction():
    y, x = np.mgrid[:200, :200] + 0.5
    angle = math.radians(30)  # long axis 30 degrees below the x axis (y grows downwards)
    u = (x - 100) * math.cos(angle) + (y - 100) * math.sin(angle)
    v = -(x - 100) * math.sin(angle) + (y - 100) * math.cos(angle)
    ellipse = ((u / 40) ** 2 + (v / 15) ** 2 <= 1).astype(np.float32)
    found = _measure(ellipse)
    assert found["long_axis"][0] == pytest.approx(80, abs=1.5)
    assert found["short_axis"][0] == pytest.approx(30, abs=1.5)
    assert found["long_axis_angle"][0] == pytest.approx(30, abs=2)


def _brute_force(component: np.ndarray) -> tuple[float, float]:
    """The largest distance between two pixel centres, and the centres' spread perpendicular to it (each plus the
    one pixel the definition adds)."""
    centres = np.argwhere(component).astype(float)
    distances = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    i, j = np.unravel_index(np.argmax(distances), distances.shape)
    if distances[i, j] == 0:
        return 1.0, 1.0
    direction = (centres[j] - centres[i]) / distances[i, j]
    across = centres @ np.array([-direction[1], direction[0]])
    return distances[i, j] + 1, across.max() - across.min() + 1


def test_random_blobs_agree_with_scipy_and_brute_force_calipers():
    rng = np.random.default_rng(7)
    field = ndimage.gaussian_filter(rng.random((96, 96)), 2.5)
    probability = (field - field.min()) / (field.max() - field.min())
    found = _measure(probability, 0.62, max_lesions=64, min_area=1)
    labels, count = ndimage.label(probability >= 0.62, structure=np.ones((3, 3)))
    assert count > 3 and found["count"] == count
    rows = {(tuple(found["box"][row].astype(int)), int(found["area"][row])): row for row in range(count)}
    for label, (rows_slice, cols_slice) in enumerate(ndimage.find_objects(labels), start=1):
        component = labels == label
        box = (rows_slice.start, cols_slice.start, rows_slice.stop, cols_slice.stop)
        row = rows[(box, int(component.sum()))]
        long_axis, short_axis = _brute_force(component)
        np.testing.assert_allclose(found["centroid"][row], np.argwhere(component).mean(0), atol=1e-4)
        assert found["long_axis"][row] == pytest.approx(long_axis, rel=0.002, abs=0.01)
        assert found["short_axis"][row] == pytest.approx(short_axis, abs=0.5)  # across a 2-degree step


def test_largest_first_padded_with_the_true_count_and_speckle_dropped():
    probability = np.zeros((64, 64), np.float32)
    probability[5:15, 5:15] = 0.9     # 100 px
    probability[40:44, 40:46] = 0.7   # 24 px
    probability[30, 30] = 0.99        # a one-pixel speck: below MIN_AREA_PIXELS
    found = _measure(probability, 0.5, max_lesions=1)
    assert found["count"] == 2 and found["area"].tolist() == [100.0]
    np.testing.assert_allclose(found["box"][0], [5, 5, 15, 15])
    assert found["mean_probability"][0] == pytest.approx(0.9) and found["max_probability"][0] == pytest.approx(0.9)
    none = _measure(np.zeros((32, 48), np.float32))
    assert none["count"] == 0 and none["area"].shape == (lesions.MAX_LESIONS,) and not none["area"].any()


def test_diagonal_neighbours_are_one_lesion_and_a_spiral_is_followed_to_its_end():
    diagonal = np.zeros((16, 16), np.float32)
    for i in range(2, 12):
        diagonal[i, i] = 1.0
    found = _measure(diagonal)
    assert found["count"] == 1 and found["area"][0] == 10
    assert found["long_axis"][0] == pytest.approx(math.hypot(9, 9) + 1, abs=0.05)
    spiral = np.zeros((41, 41), np.float32)  # one long, winding component: many propagation rounds
    y, x, dy, dx, length = 20, 20, 0, 1, 1
    while 0 < y < 40 and 0 < x < 40:
        for _ in range(2):
            for _ in range(length):
                spiral[y, x] = 1.0
                y, x = y + dy, x + dx
                if not (0 < y < 40 and 0 < x < 40):
                    break
            dy, dx = dx, -dy
        length += 2
    labels, count = ndimage.label(spiral > 0, structure=np.ones((3, 3)))
    assert _measure(spiral)["count"] == count
