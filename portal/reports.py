"""Reports: the model's draft for a scan, the doctor's findings and sign-off, amendments, PDF rendering.

A report version is a row in ``reports``. Version 1 is written by the model (calibrated probabilities, the
Grad-CAM overlay, model name and version). A doctor edits the findings of a draft and signs it off; a final
report is never changed again (the model refuses it): an amendment is a new version that supersedes it.
"""

import datetime as dt
import io
import json
import os

import numpy as np
from PIL import Image

from portal import segmentation as segmentation_results
from portal.models import NOT_ASSESSABLE, Report, ReportStatus, Scan, User, db, utcnow
from portal.storage import BlobStore

NOTICE = ("Decision support, not a diagnosis. The classification and the highlighted region come from a machine "
          "learning model and must be reviewed by a qualified radiologist before any clinical use.")
DEFAULT_UNCERTAIN_BELOW = 0.6  # for models exported without their own review line
# What the heat map is worth, measured (benchmarks/results/segmentation.json, gradcam_pointing_game): said wherever it
# is shown, so no one reads it as the nodule's place.
GRADCAM_CAVEAT = ("Grad-CAM shows what drove the classification, not where a nodule is: on whole LIDC-IDRI slices its "
                  "maximum fell inside the nodule on none of 108. Use the lesion outlines to locate nodules.")
NOT_ANALYSED = "Not analysed: outside the images this model was validated on"
# The model's machine-readable out-of-distribution reasons (components/trainer/ood.py), for people.
OOD_REASONS = {
    "not_greyscale": "the image is in colour; CT slices are greyscale",
    "blank": "the image is blank or almost uniform",
    "too_small": "the image is too small to be a CT slice",
    "odd_shape": "the image's proportions are unlike a CT slice",
    "no_body": "no body outline was found in the image",
    "no_lungs": "no lungs were found inside the body (not a chest slice at lung level)",
    "unlike_training_images": "it differs too much from the chest CT slices the model was trained and validated on",
}


def ood_explanation(reason: str | None) -> str:
    if not reason:
        return "the model flagged it as outside its validated domain"
    return OOD_REASONS.get(reason, reason.replace("_", " "))


class ReportError(ValueError):
    """A report action that is not allowed in the report's state (shown to the user)."""


def _heat_lut() -> tuple[np.ndarray, np.ndarray]:
    """256-entry colour and opacity tables: a blue-green-yellow-red ramp, more opaque where the map is hotter."""
    heat = np.linspace(0.0, 1.0, 256, dtype=np.float32)
    colours = np.stack([np.clip(1.5 - np.abs(4 * heat - c), 0, 1) for c in (3, 2, 1)], axis=-1)
    return (colours * 255).astype(np.float32), (0.55 * heat)[:, None].astype(np.float32)


_COLOURS, _ALPHA = _heat_lut()


OVERLAY_SIDE = 1024  # the overlay picture's longer side at most (pixels)


def overlay_image(scan_png: bytes, heatmap: np.ndarray, crop_box: tuple[float, ...] | None = None,
                  crop_angle: float | None = None) -> bytes:
    """The scan with the Grad-CAM map blended on top, as a JPEG (a picture for people; the PDF embeds it as is).

    The map covers the square the model saw: ``crop_box`` (y0, x0, y1, x1 in the scan's pixels, the model's output; it
    may reach beyond the scan), turned by ``crop_angle`` degrees about its centre (clockwise on screen: the model
    deskews tilted slices). Models without these outputs saw the scan padded to a centred, upright square."""
    image = Image.open(io.BytesIO(scan_png)).convert("L")
    if crop_box is None:
        side = max(image.height, image.width)
        crop_box = ((image.height - side) / 2, (image.width - side) / 2, (image.height + side) / 2,
                    (image.width + side) / 2)
    if max(image.size) > OVERLAY_SIDE:  # drawn at a picture's size: memory and time stay small for any scan
        original_width, original_height = image.size
        image.thumbnail((OVERLAY_SIDE, OVERLAY_SIDE), Image.Resampling.LANCZOS)
        sy, sx = image.height / original_height, image.width / original_width
        crop_box = (crop_box[0] * sy, crop_box[1] * sx, crop_box[2] * sy, crop_box[3] * sx)
    gray = np.asarray(image, dtype=np.float32)
    height, width = gray.shape
    y0, x0, y1, x1 = (float(v) for v in crop_box)
    angle = np.deg2rad(float(crop_angle or 0.0))
    heat8 = (np.clip(np.asarray(heatmap, dtype=np.float32), 0.0, 1.0) * 255).round().astype(np.uint8)
    # Each scan pixel's centre in the square's own frame (turned back by the angle), then as fractional map indices.
    dy = (np.arange(height, dtype=np.float32) + 0.5 - np.float32((y0 + y1) / 2))[:, None]
    dx = (np.arange(width, dtype=np.float32) + 0.5 - np.float32((x0 + x1) / 2))[None, :]
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    along = dx * cos + dy * sin + np.float32((x1 - x0) / 2)
    across = -dx * sin + dy * cos + np.float32((y1 - y0) / 2)
    rows = across / max(y1 - y0, 1e-6) * heat8.shape[0] - 0.5
    cols = along / max(x1 - x0, 1e-6) * heat8.shape[1] - 0.5
    inside = (rows >= -0.5) & (rows <= heat8.shape[0] - 0.5) & (cols >= -0.5) & (cols <= heat8.shape[1] - 0.5)
    heat = _bilinear(heat8.astype(np.float32), np.clip(rows, 0, heat8.shape[0] - 1),
                     np.clip(cols, 0, heat8.shape[1] - 1))
    heat8 = np.where(inside, heat, 0).round().astype(np.uint8)
    alpha = _ALPHA[heat8]
    blended = (1 - alpha) * gray[..., None] + alpha * _COLOURS[heat8]
    buffer = io.BytesIO()
    Image.fromarray(blended.round().astype(np.uint8), mode="RGB").save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def _bilinear(grid: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``grid`` sampled at fractional indices ``rows`` and ``cols`` (arrays of one shape): an array of that shape."""
    r0, c0 = np.floor(rows).astype(int), np.floor(cols).astype(int)
    r1, c1 = np.minimum(r0 + 1, grid.shape[0] - 1), np.minimum(c0 + 1, grid.shape[1] - 1)
    fr, fc = rows - r0, cols - c0
    top = grid[r0, c0] * (1 - fc) + grid[r0, c1] * fc
    bottom = grid[r1, c0] * (1 - fc) + grid[r1, c1] * fc
    return top * (1 - fr) + bottom * fr


def _jpeg(png: bytes) -> io.BytesIO:
    """A high-quality JPEG of an image for the PDF: embedded as is, where a PNG would be re-compressed."""
    buffer = io.BytesIO()
    Image.open(io.BytesIO(png)).save(buffer, format="JPEG", quality=92)
    buffer.seek(0)
    return buffer


def is_uncertain(prediction, uncertain_below: float | None) -> bool:
    """The "uncertain, needs review" flag: the configured line when one is set, else the model's own (its
    ``needs_review`` output), else DEFAULT_UNCERTAIN_BELOW."""
    if uncertain_below is None and prediction.needs_review is not None:
        return bool(prediction.needs_review)
    line = DEFAULT_UNCERTAIN_BELOW if uncertain_below is None else uncertain_below
    return prediction.confidence < line


def create_model_report(scan: Scan, scan_png: bytes, prediction, store: BlobStore,
                        uncertain_below: float | None = None, segmentation=None) -> Report:
    """Version 1 of ``scan``'s report from the model's ``prediction`` (a serving.client.Prediction) for the scan's
    normalised image ``scan_png``, with its PDF. ``segmentation``: the segmenter's answer for the same image (a
    serving.client.Segmentation), or a string saying why there is none."""
    existing = db.session.scalar(db.select(Report).where(Report.scan_id == scan.id, Report.version == 1))
    if existing is not None:  # a job that ran twice (its worker died after writing) must not write twice
        return existing
    overlay = overlay_image(scan_png, prediction.heatmap, prediction.crop_box, prediction.crop_angle)
    segmented, outline, mask_sha256 = None, None, None
    if isinstance(segmentation, str):
        segmented = segmentation_results.unavailable(segmentation)
    elif segmentation is not None:
        segmented = segmentation_results.measured(segmentation, scan.pixel_spacing_mm)
        outline = segmentation_results.outline_image(scan_png, segmentation.mask, segmented)
        mask_sha256 = store.put(segmentation_results.mask_png(segmentation.mask))
    report = Report(
        scan=scan, version=1, status=ReportStatus.DRAFT.value, predicted_class=prediction.class_name,
        probabilities_json=json.dumps({name: round(float(p), 6) for name, p in prediction.probabilities.items()}),
        class_titles_json=json.dumps(prediction.display_names),
        uncertain=is_uncertain(prediction, uncertain_below), in_domain=prediction.in_domain,
        ood_score=None if prediction.ood_score is None else round(float(prediction.ood_score), 4),
        ood_reason=prediction.ood_reason or None, overlay_sha256=store.put(overlay),
        model_name=prediction.model_name, model_version=prediction.model_version, findings="",
        segmentation_json=segmented.to_json() if segmented else None,
        outline_sha256=store.put(outline) if outline else None, lesion_mask_sha256=mask_sha256,
        cancer_probability=None if prediction.cancer_probability is None else round(prediction.cancer_probability, 6),
        lesion_count=segmented.lesion_count if segmented and segmented.available else None,
        created_at=utcnow())
    db.session.add(report)
    db.session.flush()
    report.pdf_sha256 = store.put(render_pdf(report, store, scan_png=scan_png, overlay=overlay, outline=outline))
    return report


def update_findings(report: Report, findings: str, author: User, store: BlobStore) -> None:
    if report.is_final:
        raise ReportError("This report is final. Amend it to make changes.")
    if _newer_version(report) is not None:
        raise ReportError("A newer version of this report exists.")
    report.findings, report.author_id = findings.strip()[:20000], author.id
    report.pdf_sha256 = store.put(render_pdf(report, store))


ASSESSMENTS = ("agree", "disagree", NOT_ASSESSABLE)


def doctor_label(report: Report, assessment: str, confirmed_class: str = "") -> tuple[bool | None, str]:
    """(agrees, confirmed class) from the sign-off form: ``agree`` confirms the model's class; ``disagree`` names
    another of the model's classes (any of them when the model gave none: out of domain); or not assessable."""
    if assessment not in ASSESSMENTS:
        raise ReportError("Say whether you agree with the model, which class you confirm, or that the scan is not "
                          "assessable, before signing off.")
    if assessment == NOT_ASSESSABLE:
        return None, NOT_ASSESSABLE
    if assessment == "agree":
        if report.out_of_domain:
            raise ReportError("The model gave no class for this scan: confirm the class yourself.")
        return True, report.predicted_class
    if confirmed_class not in report.probabilities:
        raise ReportError("Choose the class you confirm.")
    if confirmed_class == report.predicted_class and not report.out_of_domain:
        raise ReportError("That is the model's class: choose 'I agree' instead.")
    return (None if report.out_of_domain else False), confirmed_class


def sign_off(report: Report, doctor: User, store: BlobStore, assessment: str, confirmed_class: str = "") -> None:
    """Makes ``report`` final with the doctor's label (``doctor_label``)."""
    if report.is_final:
        raise ReportError("This report is already final.")
    if _newer_version(report) is not None:
        raise ReportError("A newer version of this report exists.")
    # One flush for the whole sign-off: rendering may lazy-load the scan, and an autoflush between the status and
    # the PDF would write the report as final first and then refuse its PDF as a change to a final report.
    with db.session.no_autoflush:
        report.doctor_agrees, report.confirmed_class = doctor_label(report, assessment, confirmed_class)
        report.status, report.signed_by_id, report.signed_at = ReportStatus.FINAL.value, doctor.id, utcnow()
        report.signed_by = doctor
        report.pdf_sha256 = store.put(render_pdf(report, store))


def amend(report: Report, doctor: User, reason: str, store: BlobStore) -> Report:
    """A new draft version correcting final ``report``; the final one stays as it was."""
    if not report.is_final:
        raise ReportError("Only final reports are amended; edit the draft instead.")
    if _newer_version(report) is not None:
        raise ReportError("This version has already been amended; amend the newest version.")
    if not reason.strip():
        raise ReportError("Say why the report is amended.")
    amendment = Report(
        scan_id=report.scan_id, version=report.version + 1, supersedes_id=report.id,
        status=ReportStatus.DRAFT.value, predicted_class=report.predicted_class,
        probabilities_json=report.probabilities_json, class_titles_json=report.class_titles_json,
        uncertain=report.uncertain, in_domain=report.in_domain,
        ood_score=report.ood_score, ood_reason=report.ood_reason, overlay_sha256=report.overlay_sha256,
        model_name=report.model_name, model_version=report.model_version,
        segmentation_json=report.segmentation_json, outline_sha256=report.outline_sha256,
        lesion_mask_sha256=report.lesion_mask_sha256, cancer_probability=report.cancer_probability,
        lesion_count=report.lesion_count,
        findings=report.findings, amendment_reason=reason.strip()[:2000], author_id=doctor.id, created_at=utcnow())
    db.session.add(amendment)
    db.session.flush()
    amendment.pdf_sha256 = store.put(render_pdf(amendment, store))
    return amendment


def _newer_version(report: Report) -> Report | None:
    return db.session.scalar(db.select(Report).where(Report.scan_id == report.scan_id,
                                                     Report.version > report.version).limit(1))


def versions(scan_id: int) -> list[Report]:
    return list(db.session.scalars(db.select(Report).where(Report.scan_id == scan_id).order_by(Report.version)))


def latest_reports(scan_ids: list[int], viewer: User | None = None) -> dict[int, Report]:
    """scan id -> its newest report version (the newest ``viewer`` may see, when given)."""
    newest: dict[int, Report] = {}
    if scan_ids:
        for report in db.session.scalars(db.select(Report).where(Report.scan_id.in_(scan_ids))
                                         .order_by(Report.version)):
            if viewer is None or report.visible_to(viewer):
                newest[report.scan_id] = report
    return newest


def scan_table(scans: list[Scan], viewer: User) -> dict:
    """Template context for a list of scans: the newest report each viewer may see, and the latest job."""
    from portal.jobs import latest_jobs

    ids = [scan.id for scan in scans]
    return {"scans": scans, "reports": latest_reports(ids, viewer), "jobs": latest_jobs(ids)}


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _font_file() -> str:
    """DejaVu Sans (shipped with matplotlib, already installed with TFX): full Unicode for patient names."""
    import matplotlib

    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf")


def lesion_rows(result) -> tuple[list[str], list[list[str]]]:
    """The lesion table's header and rows (page and PDF alike): mm and mm² when the pixel spacing is known,
    pixels otherwise, the unit in every header."""
    unit, area = ("mm", "mm²") if result.in_mm else ("px", "px²")
    header = ["#", f"Long axis ({unit})", f"Short axis ({unit})", f"Area ({area})", "Centre (x, y px)",
              "Mean probability"]
    rows = []
    for lesion in result.lesions:
        sizes = ((lesion.long_axis_mm, lesion.short_axis_mm, lesion.area_mm2) if result.in_mm
                 else (lesion.long_axis_px, lesion.short_axis_px, lesion.area_px))
        rows.append([str(lesion.number), f"{sizes[0]:.1f}", f"{sizes[1]:.1f}", f"{sizes[2]:.1f}",
                     f"{lesion.centroid[1]:.0f}, {lesion.centroid[0]:.0f}", f"{lesion.mean_probability:.2f}"])
    return header, rows


def render_pdf(report: Report, store: BlobStore, scan_png: bytes | None = None, overlay: bytes | None = None,
               outline: bytes | None = None) -> bytes:
    """The report as a PDF: identifiers, result, probabilities, images, nodule segmentation (outlines and the
    lesion table), findings, sign-off, notice.

    ``scan_png``, ``overlay`` and ``outline`` are read from ``store`` unless the caller already holds them."""
    from fpdf import FPDF

    scan = report.scan
    pdf = FPDF(format="A4")
    pdf.set_title(f"RadAssist report {report.id} v{report.version}")
    pdf.set_creator("RadAssist")
    pdf.set_creation_date(_aware(report.created_at))
    free_text = (scan.patient.name, scan.name, report.findings or "", report.amendment_reason or "",
                 report.signed_by.name if report.signed_by else "")
    if all(_latin1(text) for text in free_text):
        family = "helvetica"  # a PDF core font: nothing to embed (the common case, and much faster)
    else:
        family = "DejaVu"
        pdf.add_font(family, "", _font_file())
    pdf.add_page()
    pdf.set_auto_page_break(True, margin=15)

    def line(text: str, size: int = 10, height: float = 5.5) -> None:
        pdf.set_font(family, size=size)
        pdf.multi_cell(0, height, text, new_x="LMARGIN", new_y="NEXT")

    line("RadAssist chest CT report", size=16, height=9)
    state = "FINAL" if report.is_final else "DRAFT, not signed off"
    line(f"Report {report.id}, version {report.version} ({state})", size=11)
    if report.amendment_reason:
        line(f"Amends version {report.version - 1}: {report.amendment_reason}")
    line(f"Patient: {scan.patient.name} (patient id {scan.patient_id})")
    line(f"Scan: {scan.id}, {scan.name}, {scan.kind.upper()} {scan.width}x{scan.height}, "
         f"uploaded {scan.created_at:%Y-%m-%d %H:%M} UTC")
    if scan.self_submitted:
        line("Submitted by the patient; not yet reviewed by a doctor." if not report.is_final
             else "Submitted by the patient; reviewed by a doctor.")
    line(f"Model: {report.model_name} version {report.model_version}; report created "
         f"{report.created_at:%Y-%m-%d %H:%M} UTC")
    pdf.ln(2)
    if report.out_of_domain:
        line(f"{NOT_ANALYSED.upper()}", size=13, height=7)
        line(f"Reason: {ood_explanation(report.ood_reason)} (out-of-distribution score "
             f"{report.ood_score if report.ood_score is not None else 'n/a'}; 1.0 is the model's limit).", size=10)
        line("The model's raw output below is not validated for this image and is not a result:", size=9)
    else:
        line(f"Predicted class: {report.class_title(report.predicted_class)} ({report.confidence:.0%})", size=13,
             height=7)
        if report.uncertain:
            line("UNCERTAIN: the model's confidence is low. This scan needs review.", size=11)
    for name, probability in sorted(report.probabilities.items(), key=lambda item: -item[1]):
        line(f"    {report.class_title(name)}: {probability:.1%}")
    pdf.ln(2)
    image_top = pdf.get_y()
    width = 85
    scan_png = scan_png if scan_png is not None else store.get(scan.image_sha256)
    overlay = overlay if overlay is not None else store.get(report.overlay_sha256)
    pdf.image(_jpeg(scan_png), x=pdf.l_margin, y=image_top, w=width)
    pdf.image(io.BytesIO(overlay), x=pdf.l_margin + width + 5, y=image_top, w=width)
    pdf.set_y(image_top + width * scan.height / scan.width + 2)
    line("Left: the scan. Right: regions that drove the raw output (Grad-CAM; not validated for this image)."
         if report.out_of_domain else "Left: the scan. Right: regions that drove the prediction (Grad-CAM).", size=8)
    line(GRADCAM_CAVEAT, size=8)
    pdf.ln(2)
    _segmentation_section(pdf, line, report, store, outline, family)
    line("Findings", size=12, height=7)
    line(report.findings or "(none recorded)")
    pdf.ln(2)
    if report.is_final and report.signed_by is not None:
        line(f"Signed off by {report.signed_by.name} on {report.signed_at:%Y-%m-%d %H:%M} UTC")
    pdf.ln(3)
    line(NOTICE, size=9)
    return bytes(pdf.output())


def _segmentation_section(pdf, line, report: Report, store: BlobStore, outline: bytes | None, family: str) -> None:
    result = report.segmentation
    if result is None:
        return
    line("Nodule segmentation", size=12, height=7)
    if report.out_of_domain:
        line("Raw output: the scan is outside the images the models were validated on.", size=9)
    if not result.available or not result.lesion_count:
        line(result.summary)
        if result.available:
            line(f"Segmentation model: {result.model_name} version {result.model_version}.", size=8)
        pdf.ln(2)
        return
    line(f"{result.summary}. Segmentation model: {result.model_name} version {result.model_version} "
         f"(lesion threshold {result.threshold:.2f}).", size=9)
    line("Sizes in mm from the DICOM pixel spacing." if result.in_mm else
         "Sizes in PIXELS: the scan does not state its pixel spacing (not a DICOM upload).", size=8)
    outline = outline if outline is not None else store.get(report.outline_sha256)
    width = 60
    top = pdf.get_y()
    if pdf.will_page_break(width * report.scan.height / report.scan.width + 4):
        pdf.add_page()
        top = pdf.get_y()
    pdf.image(io.BytesIO(outline), x=pdf.l_margin, y=top, w=width)
    pdf.set_y(top + width * report.scan.height / report.scan.width + 2)
    header, rows = lesion_rows(result)
    pdf.set_font(family, size=8)
    with pdf.table(first_row_as_headings=True, text_align="RIGHT", col_widths=(6, 16, 16, 16, 22, 16)) as table:
        for cells in [header, *rows]:
            row = table.row()
            for cell in cells:
                row.cell(cell)
    pdf.ln(1)
    if result.lesion_count > len(result.lesions):
        line(f"{result.lesion_count - len(result.lesions)} smaller lesions are not listed.", size=8)
    line("Outlines: the segmentation model's lesions, numbered as in the table (decision support; verify).", size=8)
    pdf.ln(2)


def _aware(moment: dt.datetime) -> dt.datetime:
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment
