"""Upload intake: sniff each file's type from its content, unpack ZIPs safely, turn every scan into a PNG.

Accepted: PNG, JPEG and DICOM (CT in Hounsfield units is shown with a lung window), one by one or inside a
ZIP. Every rejected file gets a reason; accepted files are kept even when others in the same upload fail.
ZIP entry names are labels only, never file-system paths.
"""

import dataclasses
import hashlib
import io
import zipfile
from collections.abc import Iterator

import numpy as np
from PIL import Image

MAX_FILE_BYTES = 50 * 1024 * 1024
MAX_PIXELS = 40_000_000
MAX_ZIP_ENTRIES = 500
MAX_ZIP_TOTAL_BYTES = 1024 * 1024 * 1024
LUNG_WINDOW = (-600.0, 1500.0)  # centre, width in Hounsfield units


@dataclasses.dataclass(frozen=True)
class AcceptedScan:
    name: str            # what the user called it (display only)
    kind: str            # png | jpeg | dicom
    original: bytes      # the bytes as uploaded
    png: bytes           # 8-bit grayscale PNG the model and the reports use
    width: int
    height: int
    modality: str | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.original).hexdigest()


@dataclasses.dataclass(frozen=True)
class RejectedFile:
    name: str
    reason: str


def sniff(data: bytes) -> str:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(data) > 132 and data[128:132] == b"DICM":
        return "dicom"
    if data.startswith(b"PK\x03\x04") or data.startswith(b"PK\x05\x06"):
        return "zip"
    return "unknown"


def _png(gray: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, format="PNG", compress_level=1)  # lossless; level 6 is 5x slower
    return buffer.getvalue()


def _from_image(name: str, data: bytes, kind: str) -> AcceptedScan:
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow raises DecompressionBombError well before decoding a bomb
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ValueError(f"{width}x{height} pixels is more than the {MAX_PIXELS} allowed")
            gray = np.asarray(image.convert("L"))
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    return AcceptedScan(name, kind, data, _png(gray), width, height)


def window(hounsfield: np.ndarray, centre: float, width: float) -> np.ndarray:
    low, high = centre - width / 2, centre + width / 2
    return (np.clip((hounsfield - low) / (high - low), 0, 1) * 255).round().astype(np.uint8)


def _from_dicom(name: str, data: bytes) -> AcceptedScan:
    import pydicom

    dataset = pydicom.dcmread(io.BytesIO(data))
    rows, columns = int(dataset.get("Rows", 0)), int(dataset.get("Columns", 0))
    if rows * columns > MAX_PIXELS:
        raise ValueError(f"{columns}x{rows} pixels is more than the {MAX_PIXELS} allowed")
    try:
        pixels = dataset.pixel_array
    except Exception as error:  # noqa: BLE001 - pydicom raises many types for unsupported encodings
        raise ValueError(f"its pixel data cannot be decoded ({dataset.file_meta.TransferSyntaxUID.name})") from error
    if pixels.ndim == 3 and pixels.shape[-1] == 3:  # colour (secondary capture): to gray
        pixels = pixels.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    elif pixels.ndim == 3:
        pixels = pixels[pixels.shape[0] // 2]  # multi-frame: the middle frame
    pixels = pixels.astype(np.float64)
    modality = str(dataset.get("Modality", "")) or None
    if modality == "CT" and "RescaleSlope" in dataset:
        hounsfield = pixels * float(dataset.RescaleSlope) + float(dataset.RescaleIntercept)
        gray = window(hounsfield, *LUNG_WINDOW)
    else:
        low, high = np.percentile(pixels, [0.5, 99.5])
        gray = window(pixels, (low + high) / 2, max(high - low, 1.0))
    return AcceptedScan(name, "dicom", data, _png(gray), gray.shape[1], gray.shape[0], modality)


def _single(name: str, data: bytes) -> AcceptedScan | RejectedFile:
    if not data:
        return RejectedFile(name, "empty file")
    if len(data) > MAX_FILE_BYTES:
        return RejectedFile(name, f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MB")
    kind = sniff(data)
    try:
        if kind in ("png", "jpeg"):
            return _from_image(name, data, kind)
        if kind == "dicom":
            return _from_dicom(name, data)
    except Image.DecompressionBombError:
        return RejectedFile(name, f"more than {MAX_PIXELS} pixels (possible decompression bomb)")
    except Exception as error:  # noqa: BLE001 - whatever a corrupt file raises, the user gets a reason
        return RejectedFile(name, f"not a readable {kind.upper()} image: {str(error).splitlines()[0][:200]}")
    return RejectedFile(name, "not a PNG, JPEG, DICOM or ZIP file")


def _unzip(name: str, data: bytes) -> Iterator[AcceptedScan | RejectedFile]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = [e for e in archive.infolist() if not e.is_dir()]
    except zipfile.BadZipFile as error:
        yield RejectedFile(name, f"not a readable ZIP: {error}")
        return
    if len(entries) > MAX_ZIP_ENTRIES:
        yield RejectedFile(name, f"{len(entries)} files in the ZIP; at most {MAX_ZIP_ENTRIES} are allowed")
        return
    declared = sum(e.file_size for e in entries)
    if declared > MAX_ZIP_TOTAL_BYTES:
        yield RejectedFile(name, f"unpacks to {declared} bytes; at most {MAX_ZIP_TOTAL_BYTES} are allowed")
        return
    unpacked = 0
    for entry in entries:
        label = f"{name}: {entry.filename}"
        if entry.file_size > MAX_FILE_BYTES:
            yield RejectedFile(label, f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MB")
            continue
        try:
            with archive.open(entry) as handle:
                content = handle.read(MAX_FILE_BYTES + 1)  # never trust the declared size
        except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError) as error:
            yield RejectedFile(label, f"cannot be unpacked: {error}")
            continue
        unpacked += len(content)
        if len(content) > MAX_FILE_BYTES or unpacked > MAX_ZIP_TOTAL_BYTES:
            yield RejectedFile(label, "unpacks to more than allowed (possible ZIP bomb)")
            break
        if sniff(content) == "zip":
            yield RejectedFile(label, "ZIP files inside a ZIP are not accepted")
            continue
        yield _single(label, content)


def intake_stream(files: list[tuple[str, bytes]]) -> Iterator[AcceptedScan | RejectedFile]:
    """Each uploaded (name, bytes) pair (or ZIP entry) as an accepted scan or a rejected file, one at a time."""
    for name, data in files:
        if sniff(data) == "zip":
            yield from _unzip(name, data)
        else:
            yield _single(name, data)


def intake(files: list[tuple[str, bytes]]) -> tuple[list[AcceptedScan], list[RejectedFile]]:
    """Splits uploaded (name, bytes) pairs into accepted scans and rejected files with reasons."""
    results = list(intake_stream(files))
    accepted = [r for r in results if isinstance(r, AcceptedScan)]
    return accepted, [r for r in results if isinstance(r, RejectedFile)]
