"""Upload intake: sniff each file's type from its content, unpack ZIPs safely, turn every scan into a PNG.

Accepted: PNG, JPEG and DICOM (CT in Hounsfield units is shown with a lung window), one by one or inside a
ZIP. Every rejected file gets a reason; accepted files are kept even when others in the same upload fail.
ZIP entry names are labels only, never file-system paths.
"""

import dataclasses
import hashlib
import io
import logging
import math
import zipfile
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
from PIL import Image

from radassist.contract import IMAGE_LIMITS, ImageRejected

log = logging.getLogger(__name__)
MAX_FILE_BYTES = IMAGE_LIMITS.max_bytes
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
    # DICOM: ``original`` is the de-identified file; this is the PatientID it named (kept only long enough to be
    # hashed and compared with the portal patient's earlier scans, never stored).
    source_patient_id: str | None = None
    # DICOM: mm between the centres of the stored PNG's rows and columns (PixelSpacing, scaled when the PNG was
    # stored downscaled); None when the file does not say.
    pixel_spacing_mm: tuple[float, float] | None = None
    # DICOM: how the slice was acquired (ACQUISITION_KEYWORDS present in the file): what monitoring slices drift by.
    acquisition: dict | None = None

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


def _png(gray: np.ndarray | Image.Image) -> bytes:
    """The 8-bit grayscale PNG the model and the reports use, at most IMAGE_LIMITS.max_stored_side a side."""
    image = Image.fromarray(gray) if isinstance(gray, np.ndarray) else gray  # a PIL image is downscaled in place
    side = IMAGE_LIMITS.max_stored_side
    if max(image.size) > side:
        image.thumbnail((side, side), Image.Resampling.LANCZOS, reducing_gap=2.0)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # lossless; level 6 is 5x slower
    return buffer.getvalue()


def _from_image(name: str, data: bytes, kind: str) -> AcceptedScan:
    with IMAGE_LIMITS.open_image(data, count_frames=True) as image:
        width, height = image.size
        png = _png(image.convert("L"))  # decodes (a damaged file fails here); no extra copy of the pixels
    return AcceptedScan(name, kind, data, png, width, height)


def window(hounsfield: np.ndarray, centre: float, width: float) -> np.ndarray:
    low, high = centre - width / 2, centre + width / 2
    return (np.clip((hounsfield - low) / (high - low), 0, 1) * 255).round().astype(np.uint8)


# The acquisition attributes a scan keeps for monitoring (all of them also kept in its de-identified DICOM): which
# scanner, reconstruction and protocol, never who or where.
ACQUISITION_KEYWORDS = ("Modality", "Manufacturer", "ManufacturerModelName", "ConvolutionKernel", "SliceThickness",
                        "KVP", "BodyPartExamined")


def acquisition(dataset) -> dict:
    """ACQUISITION_KEYWORDS present in ``dataset``, as short strings (multi-valued ones joined by ``\\``)."""
    from pydicom.multival import MultiValue

    found = {}
    for keyword in ACQUISITION_KEYWORDS:
        value = dataset.get(keyword)
        if value is None or value == "":
            continue
        text = "\\".join(str(v) for v in value) if isinstance(value, MultiValue) else str(value)
        found[keyword] = text.strip()[:64]
    return found


def dicom_pixels(dataset) -> tuple[np.ndarray, bool]:
    """The one frame of a DICOM dataset the portal reads (the middle one of a multi-frame object: a small file
    cannot make us decode many), as float64 [rows, columns]: Hounsfield units for CT with a rescale (True), else
    the stored values (False). Sizes are checked against IMAGE_LIMITS before any pixel is decoded."""
    from pydicom.pixels import pixel_array

    rows, columns = int(dataset.get("Rows") or 0), int(dataset.get("Columns") or 0)
    frames = int(dataset.get("NumberOfFrames") or 1)
    IMAGE_LIMITS.check_size(columns, rows, frames)
    try:
        pixels = pixel_array(dataset, index=frames // 2) if frames > 1 else dataset.pixel_array
    except Exception as error:  # noqa: BLE001 - pydicom raises many types for unsupported encodings
        raise ImageRejected(f"its pixel data cannot be decoded ({dataset.file_meta.TransferSyntaxUID.name})") from error
    if pixels.ndim == 3 and pixels.shape[-1] == 3:  # colour (secondary capture): to gray
        pixels = pixels.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    elif pixels.ndim != 2:
        raise ImageRejected(f"its pixel data has an unexpected shape {list(pixels.shape)}")
    pixels = pixels.astype(np.float64)
    if str(dataset.get("Modality", "")) == "CT" and "RescaleSlope" in dataset:
        return pixels * float(dataset.RescaleSlope) + float(dataset.RescaleIntercept), True
    return pixels, False


def _from_dicom(name: str, data: bytes) -> AcceptedScan:
    import pydicom

    dataset = pydicom.dcmread(io.BytesIO(data))
    pixels, hounsfield = dicom_pixels(dataset)
    modality = str(dataset.get("Modality", "")) or None
    if hounsfield:
        gray = window(pixels, *LUNG_WINDOW)
    else:
        low, high = np.percentile(pixels, [0.5, 99.5])
        gray = window(pixels, (low + high) / 2, max(high - low, 1.0))
    patient_id = str(dataset.get("PatientID", "") or "").strip() or None  # read before de-identification
    png = _png(gray)
    spacing = pixel_spacing(dataset)
    if spacing is not None:
        with Image.open(io.BytesIO(png)) as stored:  # the header only: downscaled when the slice was very large
            spacing = (spacing[0] * gray.shape[0] / stored.height, spacing[1] * gray.shape[1] / stored.width)
    acquired = acquisition(dataset)  # read before de-identification (which keeps these attributes anyway)
    return AcceptedScan(name, "dicom", deidentify(dataset), png, gray.shape[1], gray.shape[0], modality,
                        source_patient_id=patient_id, pixel_spacing_mm=spacing, acquisition=acquired)


def pixel_spacing(dataset) -> tuple[float, float] | None:
    """(row, column) spacing in mm: PixelSpacing, or the enhanced (multi-frame) objects' shared pixel measures;
    None when absent or not two positive numbers."""
    value = dataset.get("PixelSpacing")
    if value is None:
        try:
            value = dataset.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
        except (AttributeError, IndexError, KeyError):
            return None
    try:
        row, column = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return (row, column) if row > 0 and column > 0 and math.isfinite(row) and math.isfinite(column) else None


# What a de-identified DICOM keeps (PS3.15 Annex E, Basic Application Level Confidentiality Profile, in spirit:
# keep-lists are safer than remove-lists): the pixels and how to read them, and the acquisition's technical
# description, which monitoring and the model's domain need. Names, IDs, dates, institutions, free text, private
# tags and the original UIDs go; new UIDs are made up so the file stays valid.
KEPT_DICOM_KEYWORDS = frozenset({
    "SpecificCharacterSet", "ImageType", "SOPClassUID", "Modality", "Manufacturer", "ManufacturerModelName",
    "BodyPartExamined", "SliceThickness", "KVP", "SpacingBetweenSlices", "DataCollectionDiameter",
    "ReconstructionDiameter", "GantryDetectorTilt", "XRayTubeCurrent", "Exposure", "ConvolutionKernel",
    "PatientPosition", "ImagePositionPatient", "ImageOrientationPatient", "SliceLocation", "SamplesPerPixel",
    "PhotometricInterpretation", "NumberOfFrames", "Rows", "Columns", "PixelSpacing", "BitsAllocated", "BitsStored",
    "HighBit", "PixelRepresentation", "PlanarConfiguration", "WindowCenter", "WindowWidth", "RescaleIntercept",
    "RescaleSlope", "RescaleType", "LossyImageCompression", "LossyImageCompressionRatio",
    "LossyImageCompressionMethod", "PixelData", "FloatPixelData", "DoubleFloatPixelData", "SmallestImagePixelValue",
    "LargestImagePixelValue", "RedPaletteColorLookupTableDescriptor", "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor", "RedPaletteColorLookupTableData", "GreenPaletteColorLookupTableData",
    "BluePaletteColorLookupTableData", "PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence",
})


def deidentify(dataset) -> bytes:
    """``dataset`` with only KEPT_DICOM_KEYWORDS (and the file meta), marked as de-identified, as file bytes."""
    from pydicom.uid import generate_uid

    replaced = ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")
    uids = {keyword: dataset.get(keyword) for keyword in replaced}
    for element in list(dataset):
        if element.keyword not in KEPT_DICOM_KEYWORDS:
            del dataset[element.tag]
    # New UIDs derived from the old (one-way): the same upload gives the same file, so a repeat is recognised.
    pixels = hashlib.sha256(bytes(dataset.get("PixelData") or b"")).hexdigest()
    for keyword in replaced:  # the frame of reference ties a segmentation's geometry to the slice's
        setattr(dataset, keyword, generate_uid(entropy_srcs=[str(uids[keyword] or pixels), keyword]))
    dataset.PatientIdentityRemoved = "YES"
    dataset.DeidentificationMethod = "RadAssist intake: keep-list of technical attributes, new UIDs"
    if "MediaStorageSOPInstanceUID" in dataset.file_meta:
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


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
    except ImageRejected as error:
        return RejectedFile(name, str(error))
    except Exception as error:  # noqa: BLE001 - whatever a corrupt file raises, the user gets a reason
        log.info("rejected %s (%s): %s: %s", name, kind, type(error).__name__, error)
        return RejectedFile(name, f"not a readable {kind.upper()} image (the file is damaged or its encoding is "
                                  "not supported)")
    return RejectedFile(name, "not a PNG, JPEG, DICOM or ZIP file")


def _unzip(name: str, data: bytes | BinaryIO) -> Iterator[AcceptedScan | RejectedFile]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data) if isinstance(data, bytes) else data)
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


def intake_stream(files: list[tuple[str, bytes | BinaryIO]]) -> Iterator[AcceptedScan | RejectedFile]:
    """Each uploaded (name, bytes or binary file) pair (or ZIP entry) as an accepted scan or a rejected file, one at a
    time. Files are read from their start: a ZIP is unpacked entry by entry from the file, anything else is read
    only when it is within the size limit, so no upload is ever held in memory whole."""
    for name, data in files:
        if isinstance(data, bytes):
            kind, size = sniff(data), len(data)
        else:
            size = data.seek(0, io.SEEK_END)
            data.seek(0)
            kind = sniff(data.read(140))
            data.seek(0)
        if kind == "zip":
            yield from _unzip(name, data)
        elif size > MAX_FILE_BYTES:
            yield RejectedFile(name, f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MB")
        else:
            yield _single(name, data if isinstance(data, bytes) else data.read())
