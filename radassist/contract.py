"""What every part of RadAssist agrees on and nothing else: dependency-free, imported by the pipeline, the model
server and the portal alike.

``IMAGE_LIMITS`` is the one policy for the images any entry point accepts (ExampleGen, the portal's intake, the
model server's input check): checked on the header before anything is decoded, so a small file cannot declare a
large image.
"""

import dataclasses


class ImageRejected(ValueError):
    """An image breaks ``ImageLimits``; the message says which limit, in words a user understands."""


@dataclasses.dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 50 * 1024 * 1024   # encoded file (a ZIP entry, a request element)
    max_pixels: int = 2048 * 2048       # width x height of the decoded image (one frame); CT is 512-1024 a side
    max_side: int = 2048                # the longer side, in pixels
    max_stored_side: int = 2048         # the portal keeps and analyses larger images downscaled to this (the
                                        # model sees a 224-pixel square): equal to max_side while that is 2048
    max_aspect: float = 4.0             # longer side / shorter side (CT slices are roughly square)
    max_frames: int = 1024              # frames a multi-frame DICOM may declare (only one is decoded)

    def check_bytes(self, size: int) -> None:
        if size > self.max_bytes:
            raise ImageRejected(f"{size} bytes is more than the {self.max_bytes} allowed")

    def check_size(self, width: int, height: int, frames: int = 1) -> None:
        """Raises ImageRejected when a header's dimensions break a limit (before the pixels are decoded)."""
        if width < 1 or height < 1:
            raise ImageRejected(f"{width}x{height} pixels: the image has no pixels")
        if width * height > self.max_pixels:
            raise ImageRejected(f"{width}x{height} pixels is more than the {self.max_pixels} allowed")
        if max(width, height) > self.max_side:
            raise ImageRejected(f"{width}x{height} pixels: the longer side is more than the {self.max_side} allowed")
        if max(width, height) > self.max_aspect * min(width, height):
            raise ImageRejected(f"{width}x{height} pixels: one side is more than {self.max_aspect:g} times the "
                                "other (not a CT slice)")
        if frames > self.max_frames:
            raise ImageRejected(f"{frames} frames is more than the {self.max_frames} allowed")

    def open_image(self, data: bytes, count_frames: bool = False):
        """``data`` opened with Pillow (its header read, no pixel decoded) once its dimensions (and, with
        ``count_frames``, its frame count) pass; ImageRejected otherwise, Pillow's own bomb check included. Pillow
        raises OSError for data it cannot read. Pillow is imported here, so this module stays dependency-free."""
        import io

        from PIL import Image

        try:
            image = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise ImageRejected(f"more than {self.max_pixels} pixels (possible decompression bomb)") from error
        try:
            self.check_size(*image.size, getattr(image, "n_frames", 1) if count_frames else 1)
        except ImageRejected:
            image.close()
            raise
        return image


IMAGE_LIMITS = ImageLimits()
