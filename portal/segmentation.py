"""The segmenter's answer in reports: lesion measurements in mm where the scan's pixel spacing is known, the outline
picture, the lesion mask and the DICOM Segmentation object that opens over the original series (OHIF, 3D Slicer).

Sizes come from the model in pixels of the stored image (serving.client.Segmentation). With DICOM's PixelSpacing
(rows, columns in mm) a diameter along angle a from the x axis is ``px * hypot(cos(a) * column_mm, sin(a) *
row_mm)`` (exact for anisotropic pixels too) and an area ``px * row_mm * column_mm``; without it the report says
"pixels" and gives no mm.
"""

import dataclasses
import io
import json
import math

import numpy as np
from PIL import Image, ImageDraw

OUTLINE_COLOUR = (255, 214, 0)   # amber: apart from the Grad-CAM ramp and from the grey of the scan
OUTLINE_SIDE = 1024              # the outline picture's longer side at most (pixels), as the Grad-CAM overlay's
NO_NODULE = "No nodule found"


@dataclasses.dataclass(frozen=True)
class LesionMeasurement:
    """One lesion: the model's measurements (pixels of the stored image) and, with a pixel spacing, in mm."""

    number: int                       # 1 = the largest
    area_px: float
    long_axis_px: float
    short_axis_px: float
    long_axis_angle: float            # degrees from the x axis (y down)
    centroid: tuple[float, float]     # (y, x) px
    box: tuple[float, float, float, float]  # (y0, x0, y1, x1) px
    mean_probability: float
    max_probability: float
    long_axis_mm: float | None = None
    short_axis_mm: float | None = None
    area_mm2: float | None = None


@dataclasses.dataclass(frozen=True)
class SegmentationResult:
    """What a report keeps of the segmenter's answer, or why there is none (``error``)."""

    model_name: str | None = None
    model_version: int | None = None
    threshold: float | None = None
    lesion_count: int = 0             # all lesions found (``lesions`` holds the largest, up to the model's max)
    lesions: tuple[LesionMeasurement, ...] = ()
    pixel_spacing_mm: tuple[float, float] | None = None  # (row, column) of the stored image
    error: str | None = None

    @property
    def available(self) -> bool:
        return self.error is None

    @property
    def in_mm(self) -> bool:
        return self.pixel_spacing_mm is not None

    @property
    def summary(self) -> str:
        """One line for people: "No nodule found", "2 lesions; largest 12.3 x 8.1 mm", or why none was run."""
        if not self.available:
            return f"Segmentation not available: {self.error}"
        if not self.lesion_count:
            return NO_NODULE
        largest = self.lesions[0]
        unit = "mm" if self.in_mm else "px"
        long_axis = largest.long_axis_mm if self.in_mm else largest.long_axis_px
        short_axis = largest.short_axis_mm if self.in_mm else largest.short_axis_px
        count = f"{self.lesion_count} lesion{'s' if self.lesion_count != 1 else ''}"
        return f"{count}; largest {long_axis:.1f} x {short_axis:.1f} {unit} (long x short axis)"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "SegmentationResult":
        values = json.loads(text)
        values["lesions"] = tuple(LesionMeasurement(**{**lesion, "centroid": tuple(lesion["centroid"]),
                                                       "box": tuple(lesion["box"])})
                                  for lesion in values.get("lesions", ()))
        if values.get("pixel_spacing_mm") is not None:
            values["pixel_spacing_mm"] = tuple(values["pixel_spacing_mm"])
        return cls(**values)


def _diameter_mm(pixels: float, angle_degrees: float, spacing: tuple[float, float]) -> float:
    angle = math.radians(angle_degrees)
    return pixels * math.hypot(math.cos(angle) * spacing[1], math.sin(angle) * spacing[0])


def measured(segmentation, pixel_spacing_mm: tuple[float, float] | None) -> SegmentationResult:
    """A serving.client.Segmentation of the stored image as the report keeps it (mm where ``pixel_spacing_mm``)."""
    lesions = []
    for number, lesion in enumerate(segmentation.lesions, start=1):
        in_mm = {}
        if pixel_spacing_mm:
            angle = float(lesion.long_axis_angle)
            in_mm = {"long_axis_mm": round(_diameter_mm(float(lesion.long_axis), angle, pixel_spacing_mm), 2),
                     "short_axis_mm": round(_diameter_mm(float(lesion.short_axis), angle + 90, pixel_spacing_mm), 2),
                     "area_mm2": round(float(lesion.area) * pixel_spacing_mm[0] * pixel_spacing_mm[1], 2)}
        lesions.append(LesionMeasurement(
            number=number, area_px=float(lesion.area), long_axis_px=round(float(lesion.long_axis), 2),
            short_axis_px=round(float(lesion.short_axis), 2), long_axis_angle=round(float(lesion.long_axis_angle), 1),
            centroid=tuple(round(float(v), 1) for v in lesion.centroid),
            box=tuple(round(float(v), 1) for v in lesion.box),
            mean_probability=round(float(lesion.mean_probability), 4),
            max_probability=round(float(lesion.max_probability), 4), **in_mm))
    return SegmentationResult(model_name=segmentation.model_name, model_version=segmentation.model_version,
                              threshold=float(segmentation.threshold), lesion_count=int(segmentation.lesion_count),
                              lesions=tuple(lesions), pixel_spacing_mm=pixel_spacing_mm)


def unavailable(reason: str) -> SegmentationResult:
    return SegmentationResult(error=reason[:300])


def mask_png(mask: np.ndarray) -> bytes:
    """The lesion mask as a PNG (255 = lesion) at the stored image's size."""
    buffer = io.BytesIO()
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def read_mask(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("L")) > 127


def outline_image(scan_png: bytes, mask: np.ndarray, result: SegmentationResult) -> bytes:
    """The scan with each lesion's outline drawn (the mask's boundary pixels) and its number beside it, as a PNG
    of at most OUTLINE_SIDE a side: what the report shows when "lesion outlines" is chosen."""
    with Image.open(io.BytesIO(scan_png)) as opened:
        scan = opened.convert("RGB")
    boundary = mask & ~_eroded(mask)
    pixels = np.asarray(scan).copy()
    pixels[boundary] = OUTLINE_COLOUR
    picture = Image.fromarray(pixels)
    scale = 1.0
    if max(picture.size) > OUTLINE_SIDE:
        scale = OUTLINE_SIDE / max(picture.size)
        # Outlines are one pixel wide: shrink with max-pooling of the outline, so none vanishes.
        picture = picture.resize((round(picture.width * scale), round(picture.height * scale)),
                                 Image.Resampling.BOX)
        small = Image.fromarray(boundary.astype(np.uint8) * 255).resize(picture.size, Image.Resampling.BOX)
        drawn = np.asarray(picture).copy()
        drawn[np.asarray(small) > 0] = OUTLINE_COLOUR
        picture = Image.fromarray(drawn)
    draw = ImageDraw.Draw(picture)
    for lesion in result.lesions:
        y0, x0, _, x1 = (v * scale for v in lesion.box)
        label_x = x1 + 2 if x1 + 14 < picture.width else max(x0 - 12, 0)
        draw.text((label_x, max(y0 - 2, 0)), str(lesion.number), fill=OUTLINE_COLOUR)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _eroded(mask: np.ndarray) -> np.ndarray:
    """The mask less its boundary: pixels whose 4 neighbours are all in the mask (the image's edge counts as out)."""
    padded = np.pad(mask, 1)
    return (padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])


class DicomSegUnavailable(ValueError):
    """No DICOM SEG can be made for this scan (not a DICOM upload, a multi-frame source, no segmentation)."""


# The patient and study attributes a DICOM object must carry (type 2: present, may be empty). The portal keeps the
# de-identified copy of an upload (portal/intake.py), which has none of them: downloads get these, with the portal's
# pseudonym as PatientID, so the slice and its segmentation load together as one patient's study.
_PATIENT_STUDY_KEYWORDS = ("PatientName", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                           "ReferringPhysicianName", "StudyID", "AccessionNumber")


def downloadable_dicom(source_dicom: bytes, patient_pseudonym: str):
    """The stored de-identified DICOM (a pydicom Dataset) with the portal's pseudonym as PatientID and empty
    type-2 patient and study attributes: what ``scan.dcm`` serves and the segmentation references."""
    import pydicom
    from pydicom.uid import generate_uid

    source = pydicom.dcmread(io.BytesIO(source_dicom))
    source.PatientID = patient_pseudonym
    if "FrameOfReferenceUID" not in source:  # scans stored before intake kept one: derived, stable per study
        source.FrameOfReferenceUID = generate_uid(entropy_srcs=[str(source.StudyInstanceUID), "FrameOfReferenceUID"])
    for keyword in _PATIENT_STUDY_KEYWORDS:
        if keyword not in source:
            setattr(source, keyword, "")
    return source


def dicom_bytes(dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def dicom_seg(source_dicom: bytes, mask: np.ndarray, result: SegmentationResult, patient_pseudonym: str) -> bytes:
    """A DICOM Segmentation (binary, one segment: "Nodule" in the lung) of the lesion mask over the source slice (the
    portal's de-identified copy, as ``downloadable_dicom`` serves it), referencing its study, series and instance,
    so OHIF or 3D Slicer overlays it on that series.

    Raises:
      DicomSegUnavailable: the source is multi-frame, or its pixels and the mask cannot be matched.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    source = downloadable_dicom(source_dicom, patient_pseudonym)
    if int(source.get("NumberOfFrames") or 1) > 1:
        raise DicomSegUnavailable("the source DICOM is multi-frame; the segmentation covers its middle frame only")
    rows, columns = int(source.Rows), int(source.Columns)
    if mask.shape != (rows, columns):
        resized = Image.fromarray(mask.astype(np.uint8) * 255).resize((columns, rows), Image.Resampling.NEAREST)
        mask = np.asarray(resized) > 127
    algorithm = hd.AlgorithmIdentificationSequence(
        name=f"RadAssist {result.model_name}", version=str(result.model_version),
        family=codes.cid7162.ArtificialIntelligence)
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label="Nodule",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Nodule,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        anatomic_regions=[codes.SCT.Lung])
    try:
        seg = hd.seg.Segmentation(
            source_images=[source], pixel_array=mask[None].astype(np.uint8),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=[segment],
            series_instance_uid=hd.UID(), series_number=9001, sop_instance_uid=hd.UID(), instance_number=1,
            manufacturer="RadAssist", manufacturer_model_name=str(result.model_name),
            software_versions=str(result.model_version), device_serial_number="radassist",
            series_description="RadAssist nodule segmentation (decision support)")
    except (ValueError, AttributeError, TypeError) as error:
        raise DicomSegUnavailable(f"the source DICOM lacks what a Segmentation needs: {error}") from error
    return dicom_bytes(seg)
