import glob
import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance

from components import features, imaging

SAMPLE = os.path.join(os.path.dirname(__file__), "..", "data", "sample", "chest-ct")
# A fixed reference quantile function (a plain ramp): the invariances hold for any reference.
REFERENCE = tf.linspace(0.0, 255.0, imaging.QUANTILE_LEVELS)


def _encode(image: Image.Image | np.ndarray, mode: str = "L", fmt: str = "PNG") -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


def _slices() -> list[Image.Image]:
    """Real slices of the committed sample: one per class, from the test split."""
    paths = [sorted(glob.glob(os.path.join(SAMPLE, "test", name, "*")))[0] for name in features.CLASS_NAMES]
    return [Image.open(path).convert("L") for path in paths]


def _canonical(encoded: list[bytes]) -> tuple[np.ndarray, dict]:
    canonical = imaging.canonical_batch(tf.constant(encoded))
    pixels = imaging.model_pixels(canonical, REFERENCE).numpy()[..., 0] + features.VGG_MEAN_BGR[0]
    return pixels, {key: value.numpy() for key, value in canonical.items()}


def _pad(image: Image.Image, fraction: float) -> Image.Image:
    canvas = Image.new("L", (round(image.width * (1 + 2 * fraction)), round(image.height * (1 + 2 * fraction))))
    canvas.paste(image, (round(image.width * fraction), round(image.height * fraction)))
    return canvas


VARIANTS = {
    "black padding 15 %": lambda im: _pad(im, 0.15),
    "padding on one side": lambda im: _pad(im, 0.2).crop((0, 0, round(im.width * 1.2), round(im.height * 1.2))),
    "gamma 1.6": lambda im: im.point(lambda v: round(255 * (v / 255) ** 1.6)),
    "gamma 0.6": lambda im: im.point(lambda v: round(255 * (v / 255) ** 0.6)),
    "contrast x0.7": lambda im: ImageEnhance.Contrast(im).enhance(0.7),
    "level +20": lambda im: im.point(lambda v: min(255, v + 20)),
    "rotated 10 degrees": lambda im: im.rotate(10, resample=Image.BILINEAR),
    "rotated -7 degrees": lambda im: im.rotate(-7, resample=Image.BILINEAR),
}


@pytest.mark.slow  # ten canonicalisations through TF ops: half a minute on 2 cores
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_export_variants_of_one_slice_give_near_identical_pixels(variant):
    originals = _slices()
    pixels, _ = _canonical([_encode(im) for im in originals] + [_encode(VARIANTS[variant](im)) for im in originals])
    count = len(originals)
    for index in range(count):
        same, changed = pixels[index], pixels[count + index]
        difference = np.abs(same - changed).mean()
        correlation = np.corrcoef(same.ravel(), changed.ravel())[0, 1]
        # Not zero: 8-bit exports merge gray levels (gamma 0.6 squeezes the bright quarter into 31 levels), which
        # moves the ranks histogram matching reads, and the body's outline moves by a pixel or two.
        assert difference < 9.5 and correlation > 0.95, (variant, index, difference, correlation)


def test_without_canonicalisation_the_same_variants_differ_a_lot():
    """The check above means something: the raw pixels of these variants are far apart."""
    original = np.asarray(_slices()[0], np.float32)
    darker = np.asarray(VARIANTS["gamma 1.6"](_slices()[0]), np.float32)
    assert np.abs(original - darker).mean() > 15.0


def test_a_border_crop_that_leaves_the_lungs_whole_keeps_the_frame():
    """Another site's smaller field of view cuts the body outline; the lungs, and so the square, stay."""
    originals = _slices()[:3]  # the fourth, a tightly framed normal slice, loses part of its lungs to a 10 % crop
    cropped = [im.crop((round(im.width * 0.1), round(im.height * 0.1), round(im.width * 0.9), round(im.height * 0.9)))
               for im in originals]
    pixels, canonical = _canonical([_encode(im) for im in originals + cropped])
    sides = canonical[features.CROP_BOX_KEY][:, 2] - canonical[features.CROP_BOX_KEY][:, 0]
    np.testing.assert_allclose(sides[3:], sides[:3], rtol=0.03)
    for index in range(3):
        assert np.corrcoef(pixels[index].ravel(), pixels[3 + index].ravel())[0, 1] > 0.9


def test_without_deskewing_a_rotated_slice_would_differ():
    """The rotation variants above mean something: the upright and the rotated slice are far apart as they are."""
    original = _slices()[1]
    rotated = np.asarray(original.rotate(10, resample=Image.BILINEAR), np.float32)
    assert np.corrcoef(np.asarray(original, np.float32).ravel(), rotated.ravel())[0, 1] < 0.9


def test_the_square_turns_with_the_slice():
    originals = _slices()
    _, canonical = _canonical([_encode(im) for im in originals] +
                              [_encode(im.rotate(10, resample=Image.BILINEAR)) for im in originals])
    angles = canonical[features.CROP_ANGLE_KEY]
    count = len(originals)
    # PIL turns the picture counter-clockwise on screen; the square follows it (our angles are clockwise).
    np.testing.assert_allclose(angles[count:] - angles[:count], -10.0, atol=2.0)
    assert np.abs(angles[:count]).max() < imaging.MAX_DESKEW_DEGREES


def test_every_mode_gives_the_same_pixels():
    gray = _slices()[3]
    pixels, _ = _canonical([_encode(gray, mode, fmt) for mode, fmt in
                            [("L", "PNG"), ("RGB", "PNG"), ("RGBA", "PNG"), ("RGB", "JPEG")]])
    np.testing.assert_allclose(pixels[0], pixels[1], atol=1.0)
    np.testing.assert_allclose(pixels[0], pixels[2], atol=1.0)
    # JPEG's artefacts in the lung texture (the sample slices are 160 pixels wide, magnified about 2x)
    assert np.abs(pixels[0] - pixels[3]).mean() < 7.0
    assert np.corrcoef(pixels[0].ravel(), pixels[3].ravel())[0, 1] > 0.97


def _phantom(angle: float = 0.0, lungs: bool = True) -> np.ndarray:
    """A grey ellipse (the body, 140 x 100) with two dark lungs, off-centre on a 300 x 200 canvas, turned ``angle``
    degrees clockwise on screen about (190, 110), and a text-like block in a corner."""
    yy, xx = np.mgrid[:200, :300].astype(np.float64)
    turn = np.deg2rad(angle)
    # Coordinates in the phantom's own frame: the canvas point turned back by the angle.
    u = (xx - 190) * np.cos(turn) + (yy - 110) * np.sin(turn)
    v = -(xx - 190) * np.sin(turn) + (yy - 110) * np.cos(turn)
    body = (u / 70.0) ** 2 + (v / 50.0) ** 2 < 1
    lung_mask = ((u + 25) / 18.0) ** 2 + (v / 25.0) ** 2 < 1
    lung_mask |= ((u - 25) / 18.0) ** 2 + (v / 25.0) ** 2 < 1
    image = np.where(body, 170, 0) - np.where(lung_mask & lungs, 140, 0)
    image[5:12, 5:30] = 255  # a label in the corner
    return image.astype(np.uint8)


def test_the_square_is_framed_on_the_lungs_in_input_pixels():
    _, canonical = _canonical([_encode(_phantom())])
    y0, x0, y1, x1 = canonical[features.CROP_BOX_KEY][0]
    assert (y0 + y1) / 2 == pytest.approx(110, abs=2) and (x0 + x1) / 2 == pytest.approx(190, abs=2)
    # The lungs span 86 x 50 pixels: the square is LUNG_FRAME times the longer side, upright.
    assert x1 - x0 == pytest.approx(y1 - y0) and x1 - x0 == pytest.approx(86 * imaging.LUNG_FRAME, abs=5)
    assert canonical[features.CROP_ANGLE_KEY][0] == pytest.approx(0.0, abs=0.5)
    body = _phantom(lungs=False) > 0
    assert canonical["body_fraction"][0] == pytest.approx(body.mean() - (_phantom() == 30).mean(), abs=0.03)
    # The corner label is gone: the canonical body is the ellipse, cut at the square's sides.
    assert 0.3 < canonical["body"][0].mean() < 0.7


def test_a_tilted_phantom_is_deskewed_and_a_lungless_one_framed_on_the_body():
    _, canonical = _canonical([_encode(_phantom(12.0)), _encode(_phantom(-30.0)), _encode(_phantom(lungs=False))])
    angles, boxes = canonical[features.CROP_ANGLE_KEY], canonical[features.CROP_BOX_KEY]
    assert angles[0] == pytest.approx(12.0, abs=1.0)
    assert angles[1] == pytest.approx(-imaging.MAX_DESKEW_DEGREES, abs=0.1)  # beyond the limit: turned only so far
    np.testing.assert_allclose(boxes[0][2] - boxes[0][0], 86 * imaging.LUNG_FRAME, atol=6)
    # No lungs: the square holds the body (140 pixels across) with its margin.
    assert boxes[2][2] - boxes[2][0] == pytest.approx(140 * (1 + 2 * imaging.BODY_MARGIN), abs=5)


def test_statistics_for_the_input_check():
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 255, size=(120, 160, 3), dtype=np.uint8)
    blank = np.full((100, 100), 128, np.uint8)
    slice_png = _encode(_slices()[0])
    _, canonical = _canonical([_encode(photo, "RGB"), _encode(blank), slice_png])
    assert canonical["colour_fraction"][0] > 0.5 and canonical["colour_fraction"][2] == 0.0
    assert canonical["contrast"][1] == pytest.approx(0.0, abs=1e-3) and canonical["contrast"][2] > 20
    assert canonical["body_fraction"][1] == 0.0 and canonical["body_fraction"][2] > 0.2
    assert canonical["height"].tolist() == [120, 100, _slices()[0].height]


def test_batches_accept_the_schema_shape_and_give_vgg_input():
    png = _encode(_slices()[2])
    batch = imaging.preprocess_batch(tf.constant([[png], [png]]), REFERENCE)
    assert batch.shape == (2, features.IMAGE_SIZE, features.IMAGE_SIZE, 3)
    # Outside the body is black (0) before the caffe means are subtracted.
    np.testing.assert_allclose(batch[0, 0, 0].numpy(), [-m for m in features.VGG_MEAN_BGR], atol=1e-4)


def test_tiny_and_extreme_shapes_give_finite_pixels():
    """Odd shapes reach the graph before any check can refuse them; they must come out as numbers, not errors."""
    rng = np.random.default_rng(0)
    shapes = [np.zeros((1, 1), np.uint8), np.full((1, 1), 200, np.uint8),
              rng.integers(0, 255, (2, 500), dtype=np.uint8), rng.integers(0, 255, (3000, 7), dtype=np.uint8)]
    pixels, canonical = _canonical([_encode(array) for array in shapes])
    assert np.isfinite(pixels).all() and np.isfinite(canonical[features.CROP_BOX_KEY]).all()
    assert canonical["body_fraction"][:2].tolist() == [0.0, 0.0]
