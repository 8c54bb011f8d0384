import io

import numpy as np
import tensorflow as tf
from PIL import Image

from components import features, imaging


def _encode(array: np.ndarray, mode: str, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


def test_pad_to_square_keeps_aspect_and_centres():
    image = tf.ones([10, 40, 1], tf.uint8) * 200
    square = imaging.pad_to_square(image).numpy()
    assert square.shape == (40, 40, 1)
    rows_with_content = np.where(square[:, :, 0].max(axis=1) > 0)[0]
    assert rows_with_content.tolist() == list(range(15, 25))  # 15 black rows above, 15 below


def test_preprocess_gives_vgg_input_for_every_mode():
    gray = np.tile(np.linspace(0, 255, 300, dtype=np.uint8), (120, 1))
    outputs = [
        imaging.preprocess_image(tf.constant(_encode(gray, mode, fmt))).numpy()
        for mode, fmt in [("L", "PNG"), ("RGB", "PNG"), ("RGBA", "PNG"), ("RGB", "JPEG")]
    ]
    for output in outputs:
        assert output.shape == (features.IMAGE_SIZE, features.IMAGE_SIZE, 3)
    # Lossless modes agree exactly; JPEG within compression noise.
    np.testing.assert_allclose(outputs[0], outputs[1])
    np.testing.assert_allclose(outputs[0], outputs[2])
    assert np.abs(outputs[0] - outputs[3]).mean() < 2.0
    # Padding is black (0) before the mean is subtracted, and the channels are the caffe BGR means apart.
    corner = outputs[0][0, 0]
    np.testing.assert_allclose(corner, [-m for m in features.VGG_MEAN_BGR], atol=1e-4)


def test_preprocess_batch_accepts_schema_shaped_input():
    png = _encode(np.full((50, 80), 128, np.uint8), "L")
    batch = imaging.preprocess_batch(tf.constant([[png], [png]]))
    assert batch.shape == (2, features.IMAGE_SIZE, features.IMAGE_SIZE, 3)
