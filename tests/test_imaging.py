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
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_export_variants_of_one_slice_give_near_identical_pixels(variant):
    originals = _slices()
    pixels, _ = _canonical([_encode(im) for im in originals] + [_encode(VARIANTS[variant](im)) for im in originals])
    count = len(originals)
    for index in range(count):
        same, changed = pixels[index], pixels[count + index]
        difference = np.abs(same - changed).mean()
        correlation = np.corrcoef(same.ravel(), changed.ravel())[0, 1]
        assert difference < 6.0 and correlation > 0.97, (variant, index, difference, correlation)


def test_without_canonicalisation_the_same_variants_differ_a_lot():
    """The check above means something: the raw pixels of these variants are far apart."""
    original = np.asarray(_slices()[0], np.float32)
    darker = np.asarray(VARIANTS["gamma 1.6"](_slices()[0]), np.float32)
    assert np.abs(original - darker).mean() > 15.0


def test_border_crop_keeps_the_anatomy_in_place():
    original = _slices()[1]
    cropped = original.crop((round(original.width * 0.05), round(original.height * 0.05),
                             round(original.width * 0.95), round(original.height * 0.95)))
    pixels, _ = _canonical([_encode(original), _encode(cropped)])
    assert np.corrcoef(pixels[0].ravel(), pixels[1].ravel())[0, 1] > 0.85


def test_every_mode_gives_the_same_pixels():
    gray = _slices()[3]
    pixels, _ = _canonical([_encode(gray, mode, fmt) for mode, fmt in
                            [("L", "PNG"), ("RGB", "PNG"), ("RGBA", "PNG"), ("RGB", "JPEG")]])
    np.testing.assert_allclose(pixels[0], pixels[1], atol=1.0)
    np.testing.assert_allclose(pixels[0], pixels[2], atol=1.0)
    assert np.abs(pixels[0] - pixels[3]).mean() < 4.0


def test_crop_box_is_the_square_around_the_body_in_input_pixels():
    # A grey ellipse (the body) with dark lungs, off-centre on a 300 x 200 canvas, and a text-like block far away.
    yy, xx = np.mgrid[:200, :300]
    body = ((xx - 190) / 70.0) ** 2 + ((yy - 110) / 50.0) ** 2 < 1
    lungs = (((xx - 165) / 18.0) ** 2 + ((yy - 110) / 25.0) ** 2 < 1) | (((xx - 215) / 18.0) ** 2 + ((yy - 110) /
                                                                                                  25.0) ** 2 < 1)
    image = np.where(body, 170, 0) - np.where(lungs, 140, 0)
    image[5:12, 5:30] = 255  # a label in the corner
    _, canonical = _canonical([_encode(image.astype(np.uint8))])
    y0, x0, y1, x1 = canonical[features.CROP_BOX_KEY][0]
    assert (y0 + y1) / 2 == pytest.approx(110, abs=3) and (x0 + x1) / 2 == pytest.approx(190, abs=3)
    assert x1 - x0 == pytest.approx(y1 - y0) and x1 - x0 == pytest.approx(140 * 1.04, abs=5)
    assert canonical["body_fraction"][0] == pytest.approx(body.mean() - lungs.mean(), abs=0.03)
    # The body with its lungs fills the canonical square; the corner label is gone.
    assert canonical["body"][0].mean() == pytest.approx(np.pi / 4 * 50 / 70, abs=0.08)


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
