"""Checks on encoded image inputs before they reach a batch (so one bad image fails only its own request)."""

import io

import numpy as np
from PIL import Image

from serving import errors

IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM")
DEFAULT_MAX_IMAGE_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_PIXELS = 64_000_000
IMAGE_INPUT_NAMES = {"images", "image"}


def check_images(name: str, values: np.ndarray, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Raises InvalidInput naming the first empty, oversized, non-image or decompression-bomb element."""
    for index, value in enumerate(np.asarray(values).reshape(-1)):
        data = value if isinstance(value, bytes) else str(value).encode()
        where = f"input '{name}'[{index}]"
        if not data:
            raise errors.InvalidInput(f"{where} is empty")
        if len(data) > max_bytes:
            raise errors.InvalidInput(f"{where} is {len(data)} bytes, more than the {max_bytes} allowed")
        if not data.startswith(IMAGE_MAGIC):
            raise errors.InvalidInput(f"{where} is not a PNG, JPEG, GIF or BMP image")
        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            raise errors.InvalidInput(f"{where} is not a readable image: {error}") from error
        if width * height > max_pixels:
            raise errors.InvalidInput(f"{where} has {width}x{height} pixels, more than {max_pixels}")
