"""Nodule segmentation in reports: lesion sizes in mm (DICOM pixel spacing) or clearly in pixels, outlines beside
Grad-CAM, "no nodule found", the PDF and FHIR measurements, and a DICOM SEG that references the scan's DICOM.

A real model server serves the contract classifier and the contract segmenter (tests/contract_model.py: white
pixels are "nodule", so a white disc is one lesion of known size); the worker runs in the test process.
"""

import io
import math

import highdicom as hd
import numpy as np
import pydicom
import pydicom.data
import pytest
import tensorflow as tf
from conftest import upload_files, user_id
from contract_model import disc_png
from PIL import Image
from test_portal_reports import drain, make_worker, pdf_text

from components.segmentation import lesions
from portal import segmentation
from portal.extensions import blobs
from portal.models import Report, Scan, db
from portal.worker import Worker
from serving.client import Lesion, Segmentation, ServingClient

CT_SPACING = 0.661468  # mm, CT_small.dcm's PixelSpacing


@pytest.fixture()
def reporting_app(app, model_server):
    app.config.update(MODEL_SERVER=model_server.address, JOB_RETRY_SECONDS=0.05, JOB_MAX_ATTEMPTS=2)
    return app


def _client_lesions(mask: np.ndarray) -> Segmentation:
    """The lesions graph's measurements of a mask, as the client returns them."""
    found = {key: value.numpy() for key, value in lesions.measure(tf.constant(mask, tf.float32), 0.5).items()}
    shown = min(int(found["count"]), lesions.MAX_LESIONS)
    return Segmentation(
        probability=mask.astype(np.float32), lesion_count=int(found["count"]), threshold=0.5, model_name="seg",
        model_version=1, lesions=tuple(Lesion(
            area=float(found["area"][i]), centroid=tuple(found["centroid"][i]), long_axis=float(found["long_axis"][i]),
            short_axis=float(found["short_axis"][i]), long_axis_angle=float(found["long_axis_angle"][i]),
            box=tuple(found["box"][i]), mean_probability=float(found["mean_probability"][i]),
            max_probability=float(found["max_probability"][i])) for i in range(shown)))


def test_known_discs_measure_their_diameter_and_area_in_mm():
    y, x = np.mgrid[:160, :160]
    for radius, spacing in ((6, (0.7, 0.7)), (12, (0.5, 0.5))):
        disc = (y - 80) ** 2 + (x - 70) ** 2 <= radius ** 2
        (lesion,) = segmentation.measured(_client_lesions(disc), spacing).lesions
        diameter_mm = (2 * radius + 1) * spacing[0]  # a disc drawn on the grid spans 2r + 1 pixels
        assert lesion.long_axis_mm == pytest.approx(diameter_mm, abs=spacing[0])
        assert lesion.short_axis_mm == pytest.approx(diameter_mm, abs=spacing[0])
        assert lesion.area_mm2 == pytest.approx(math.pi * (radius * spacing[0]) ** 2, rel=0.08)
        assert lesion.area_px == disc.sum()
    # Anisotropic pixels: 0.5 mm rows, 1.0 mm columns. A 20 mm circle covers 40 rows and 20 columns; in mm both
    # axes are its diameter, whatever its orientation in pixels.
    ellipse = ((y - 80) / 20.0) ** 2 + ((x - 70) / 10.0) ** 2 <= 1
    (lesion,) = segmentation.measured(_client_lesions(ellipse), (0.5, 1.0)).lesions
    assert lesion.long_axis_px == pytest.approx(41, abs=1) and lesion.short_axis_px == pytest.approx(21, abs=1)
    assert lesion.long_axis_mm == pytest.approx(20.5, abs=1) and lesion.short_axis_mm == pytest.approx(21, abs=1)
    assert lesion.area_mm2 == pytest.approx(math.pi * 10 ** 2, rel=0.05)
    in_pixels = segmentation.measured(_client_lesions(ellipse), None)
    assert not in_pixels.in_mm and in_pixels.lesions[0].long_axis_mm is None
    assert "px" in in_pixels.summary and segmentation.SegmentationResult.from_json(in_pixels.to_json()) == in_pixels


def _upload(app, auth, client, files) -> None:
    patient = user_id(app, "patient@example.org")
    auth.login("doctor@example.org")
    page = f"/doctor/patients/{patient}"
    assert upload_files(client, page, f"{page}/scans", files).status_code == 200


def _reports(app) -> dict[str, Report]:
    with app.app_context():
        return {report.scan.name: report.id for report in db.session.scalars(db.select(Report))}


def test_reports_outline_lesions_beside_gradcam_and_size_them_in_pixels_without_spacing(
        reporting_app, auth, client, model_server):
    app = reporting_app
    _upload(app, auth, client, [("nodule.png", disc_png(10)), ("clear.png", disc_png(0, background=100))])
    drain(app, make_worker(app, model_server.address))
    ids = _reports(app)

    page = client.get(f"/reports/{ids['nodule.png']}").get_data(as_text=True)
    assert "1 lesion; largest 21.0 x 21.0 px" in page and 'id="lesion-table"' in page
    assert "Long axis (px)" in page and "Area (px²)" in page and "does not state its pixel spacing" in page
    assert 'id="show-outlines"' in page and 'id="show-gradcam"' in page  # the toggle beside Grad-CAM
    assert "not where a nodule is" in page  # what the heat map is worth, measured
    assert "radassist-seg version 1" in page and "Download DICOM SEG" not in page  # a PNG has no DICOM
    outline = client.get(f"/reports/{ids['nodule.png']}/outline.png")
    assert outline.status_code == 200 and outline.mimetype == "image/png"
    pixels = np.asarray(Image.open(io.BytesIO(outline.data)).convert("RGB"))
    drawn = np.all(pixels == segmentation.OUTLINE_COLOUR, axis=-1)
    rows, columns = np.nonzero(drawn)
    assert 30 < drawn.sum() < 200  # a ring (and the lesion's number), not a filled disc
    assert rows.min() == 50 and columns.min() == 60  # the disc's edge: centre (60, 70), radius 10

    mask = client.get(f"/reports/{ids['nodule.png']}/lesion-mask.png")  # what the viewer outlines
    lesion_pixels = np.asarray(Image.open(io.BytesIO(mask.data))) > 127
    assert mask.status_code == 200 and 250 < lesion_pixels.sum() < 400 and lesion_pixels[60, 70]

    clear = client.get(f"/reports/{ids['clear.png']}").get_data(as_text=True)
    assert "No nodule found" in clear and 'id="lesion-table"' not in clear

    document = client.get(f"/api/reports/{ids['nodule.png']}/fhir").get_json()
    lesion = next(item for item in document["contained"] if item["id"] == "lesion-1")
    assert lesion["bodySite"]["coding"][0]["code"] == "39607008"
    long_axis = next(c for c in lesion["component"] if c["code"]["coding"][0]["code"] == "103339001")
    assert long_axis["valueQuantity"] == {"value": 21.0, "unit": "pixel", "system": "http://unitsofmeasure.org",
                                          "code": "{pixel}"}
    none = client.get(f"/api/reports/{ids['clear.png']}/fhir").get_json()
    assert any(item.get("valueString") == "No nodule found on this slice" for item in none["contained"])
    text = pdf_text(client.get(f"/reports/{ids['nodule.png']}/report.pdf").data)
    assert "Nodule segmentation" in text and "PIXELS" in text and "21.0" in text and "not where a nodule is" in text


def _ct_with_nodule(radius: int = 8) -> bytes:
    """pydicom's CT_small.dcm (real CT headers, 0.66 mm pixels) holding lung-like air with one dense disc (the contract
    segmenter calls the white of the lung window nodule, so the real anatomy would be one big lesion)."""
    dataset = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm", download=False))
    air = round((-900 - float(dataset.RescaleIntercept)) / float(dataset.RescaleSlope))
    pixels = np.full_like(dataset.pixel_array, air)
    y, x = np.mgrid[:pixels.shape[0], :pixels.shape[1]]
    pixels[(y - 64) ** 2 + (x - 50) ** 2 <= radius ** 2] = 3000  # far above the lung window: white
    dataset.PixelData = pixels.tobytes()
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue()


def test_dicom_reports_size_lesions_in_mm_and_export_a_dicom_seg_over_the_scan(
        reporting_app, auth, client, model_server):
    app = reporting_app
    _upload(app, auth, client, [("ct.dcm", _ct_with_nodule(8))])
    drain(app, make_worker(app, model_server.address))
    (report_id,) = _reports(app).values()
    with app.app_context():
        scan = db.session.scalar(db.select(Scan))
        assert scan.pixel_spacing_mm == pytest.approx((CT_SPACING, CT_SPACING))
        result = db.session.get(Report, report_id).segmentation
    (lesion,) = result.lesions
    assert lesion.long_axis_mm == pytest.approx(17 * CT_SPACING, abs=CT_SPACING)
    assert lesion.area_mm2 == pytest.approx(lesion.area_px * CT_SPACING ** 2, rel=1e-3)
    page = client.get(f"/reports/{report_id}").get_data(as_text=True)
    assert "Long axis (mm)" in page and "Area (mm²)" in page and "from the DICOM pixel spacing" in page
    assert f"{lesion.long_axis_mm:.1f}" in page

    seg_file = client.get(f"/reports/{report_id}/segmentation.dcm")
    scan_file = client.get(f"/scans/{scan.id}/scan.dcm")
    assert seg_file.status_code == scan_file.status_code == 200 and seg_file.mimetype == "application/dicom"
    seg, source = pydicom.dcmread(io.BytesIO(seg_file.data)), pydicom.dcmread(io.BytesIO(scan_file.data))
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage
    assert seg.StudyInstanceUID == source.StudyInstanceUID and seg.PatientID == source.PatientID
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == source.SeriesInstanceUID
    assert referenced.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert source.PatientIdentityRemoved == "YES" and not source.PatientName  # the upload's name never leaves
    parsed = hd.seg.Segmentation.from_dataset(seg)
    assert parsed.number_of_segments == 1
    assert parsed.get_segment_description(1).segmented_property_type.value == "27925004"  # Nodule
    with app.app_context():
        mask = segmentation.read_mask(blobs.store.get(db.session.get(Report, report_id).lesion_mask_sha256))
    np.testing.assert_array_equal(seg.pixel_array.astype(bool), mask)
    document = client.get(f"/api/reports/{report_id}/fhir").get_json()
    components = next(item for item in document["contained"] if item["id"] == "lesion-1")["component"]
    assert {c["valueQuantity"]["unit"] for c in components} == {"mm", "mm2"}


def test_a_report_is_written_when_the_segmenter_is_not_served(reporting_app, auth, client, model_server):
    app = reporting_app
    _upload(app, auth, client, [("nodule.png", disc_png(10))])
    lone = ServingClient(model_server.address, timeout=30, retries=0, segmentation_model_name="not-deployed")
    from portal.jobs import DatabaseQueue

    drain(app, Worker(app, lone, queue=DatabaseQueue(poll_seconds=0.01), name="no-seg", sweep_seconds=0))
    (report_id,) = _reports(app).values()
    page = client.get(f"/reports/{report_id}").get_data(as_text=True)
    assert "Segmentation not available" in page and "not-deployed" in page
    assert client.get(f"/reports/{report_id}/outline.png").status_code == 404
    assert client.get(f"/reports/{report_id}/overlay.jpg").status_code == 200  # Grad-CAM alone, as before
