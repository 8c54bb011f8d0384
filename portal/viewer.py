"""The report page's image viewer: the stored scan's pixels at full resolution (never the model's downscaled
input), in Hounsfield units for CT DICOM and as grey values otherwise, with the windows a radiologist uses.

The browser windows the pixels itself (``pixels``: little-endian int16, row by row) so dragging the window is
smooth; ``render_png`` windows them here for clients without JavaScript and for tests.
"""

import dataclasses
import io

import numpy as np
from PIL import Image

from portal.intake import dicom_pixels, pixel_spacing, window
from radassist.contract import IMAGE_LIMITS

# Centre, width in HU: the presets of CT viewers (lung parenchyma; mediastinum and soft tissue; bone).
CT_PRESETS = {"lung": (-600.0, 1500.0), "mediastinum": (40.0, 400.0), "bone": (400.0, 1800.0)}
GREY_PRESETS = {"full": (127.5, 255.0)}   # every grey value of a PNG/JPEG, as it was exported
MIN_WIDTH, MAX_WIDTH = 1.0, 65536.0


class WindowError(ValueError):
    """A window the viewer cannot use (shown to the caller as a 400)."""


@dataclasses.dataclass(frozen=True)
class ViewerImage:
    values: np.ndarray                            # int16 [rows, columns]
    unit: str                                     # "HU" (CT DICOM) or "grey" (0..255 or DICOM stored values)
    pixel_spacing_mm: tuple[float, float] | None  # (row, column) of these pixels
    presets: dict[str, tuple[float, float]]
    default: str                                  # the preset shown first

    @property
    def rows(self) -> int:
        return int(self.values.shape[0])

    @property
    def columns(self) -> int:
        return int(self.values.shape[1])

    def describe(self) -> dict:
        """What the viewer script needs besides the pixels."""
        return {"rows": self.rows, "columns": self.columns, "unit": self.unit,
                "pixel_spacing_mm": list(self.pixel_spacing_mm) if self.pixel_spacing_mm else None,
                "presets": [[name, *values] for name, values in self.presets.items()],  # in order: keys 1, 2, 3
                "default": self.default,
                "range": [int(self.values.min()), int(self.values.max())]}


def viewer_image(kind: str, original: bytes) -> ViewerImage:
    """The pixels of a stored upload (``kind`` png | jpeg | dicom, its original bytes as kept)."""
    if kind == "dicom":
        import pydicom

        dataset = pydicom.dcmread(io.BytesIO(original))
        pixels, hounsfield = dicom_pixels(dataset)
        values = np.clip(np.round(pixels), -32768, 32767).astype(np.int16)
        spacing = pixel_spacing(dataset)
        if hounsfield:
            return ViewerImage(values, "HU", spacing, CT_PRESETS, "lung")
        low, high = np.percentile(values, [0.5, 99.5])
        return ViewerImage(values, "grey", spacing, {"auto": ((low + high) / 2, max(high - low, 1.0))}, "auto")
    with IMAGE_LIMITS.open_image(original, count_frames=True) as image:
        values = np.asarray(image.convert("L"), dtype=np.int16)
    return ViewerImage(values, "grey", None, GREY_PRESETS, "full")


def pixels(image: ViewerImage) -> bytes:
    return image.values.astype("<i2").tobytes()


def parse_window(centre: str | None, width: str | None, image: ViewerImage) -> tuple[float, float]:
    """The requested window, or the image's default preset when none is given."""
    if centre is None and width is None:
        return image.presets[image.default]
    try:
        values = float(centre), float(width)
    except (TypeError, ValueError):
        raise WindowError("centre and width must both be numbers") from None
    if not all(np.isfinite(values)) or not MIN_WIDTH <= values[1] <= MAX_WIDTH or abs(values[0]) > 100_000:
        raise WindowError(f"width must be {MIN_WIDTH:g}..{MAX_WIDTH:g} and the centre within +-100000")
    return values


def render_png(image: ViewerImage, centre: float, width: float) -> bytes:
    """The pixels through the window ``centre``, ``width`` as an 8-bit grey PNG at full resolution."""
    buffer = io.BytesIO()
    Image.fromarray(window(image.values.astype(np.float32), centre, width)).save(buffer, format="PNG",
                                                                                 compress_level=1)
    return buffer.getvalue()
