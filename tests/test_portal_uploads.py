"""Scan uploads: real PNG slices, real DICOM (pydicom's test files), ZIPs, and every kind of bad input."""

import dataclasses
import glob
import hashlib
import io
import os
import pathlib
import re
import tracemalloc
import zipfile

import numpy as np
import pydicom.data
import pydicom.pixels
import pytest
from conftest import SAMPLE_DIR, upload_files, user_id
from PIL import Image

from portal import intake
from portal.extensions import blobs
from portal.models import AuditEvent, Job, Scan, db


def _intake(files):
    """Uploaded (name, bytes) pairs split into accepted scans and rejected files, as the upload view sees them."""
    results = list(intake.intake_stream(files))
    return ([r for r in results if isinstance(r, intake.AcceptedScan)],
            [r for r in results if isinstance(r, intake.RejectedFile)])


def _dicom(name: str) -> bytes:
    with open(pydicom.data.get_testdata_file(name, download=False), "rb") as handle:
        return handle.read()


def _slice() -> tuple[str, bytes]:
    path = sorted(glob.glob(os.path.join(SAMPLE_DIR, "test", "adenocarcinoma", "*.png")))[0]
    with open(path, "rb") as handle:
        return os.path.basename(path), handle.read()


def _zip(entries: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_ct_dicom_is_converted_from_hounsfield_units_with_a_lung_window():
    accepted, rejected = _intake([("ct.dcm", _dicom("CT_small.dcm"))])
    assert not rejected
    scan = accepted[0]
    assert (scan.kind, scan.modality, scan.width, scan.height) == ("dicom", "CT", 128, 128)
    dataset = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm", download=False))
    hounsfield = dataset.pixel_array * float(dataset.RescaleSlope) + float(dataset.RescaleIntercept)
    expected = intake.window(hounsfield, *intake.LUNG_WINDOW)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(scan.png))), expected)


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "MR_small_RLE.dcm", "SC_rgb_jpeg_dcmtk.dcm"])
def test_compressed_dicom_syntaxes_are_accepted(name):
    accepted, rejected = _intake([(name, _dicom(name))])
    assert not rejected and accepted[0].kind == "dicom"
    assert Image.open(io.BytesIO(accepted[0].png)).mode == "L"


def test_type_is_sniffed_from_content_not_the_name():
    name, png = _slice()
    accepted, rejected = _intake([("looks-like.dcm", png), ("scan.png", b"%PDF-1.7 not an image")])
    assert accepted[0].kind == "png"
    assert rejected[0].reason == "not a PNG, JPEG, DICOM or ZIP file"


def test_undecodable_dicom_gets_a_clear_reason():
    _, rejected = _intake([("lossy12.dcm", _dicom("JPEG-lossy.dcm"))])
    assert "cannot be decoded" in rejected[0].reason


def test_corrupt_empty_and_bomb_images_are_rejected_with_reasons():
    _, png = _slice()
    bomb = io.BytesIO()
    Image.new("L", (9000, 9000)).save(bomb, format="PNG")  # 81 MP of zeros: a tiny file, a huge image
    accepted, rejected = _intake([("cut.png", png[: len(png) // 3]), ("empty.png", b""),
                                        ("bomb.png", bomb.getvalue()), ("good.png", png)])
    reasons = {r.name: r.reason for r in rejected}
    assert [a.name for a in accepted] == ["good.png"]
    assert "not a readable PNG" in reasons["cut.png"] and reasons["empty.png"] == "empty file"
    assert "pixels" in reasons["bomb.png"]


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_images_of_odd_shape_or_size_are_refused_from_the_header_before_decoding():
    tracemalloc.start()
    _, rejected = _intake([("strip.png", _png(100, 40000)), ("wide.png", _png(2000, 450)),
                                 ("tall.png", _png(2500, 1250))])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    reasons = {r.name: r.reason for r in rejected}
    assert "longer side is more than the 2048" in reasons["strip.png"]
    assert "more than 4 times the other" in reasons["wide.png"]
    assert "longer side" in reasons["tall.png"]
    assert peak < 16 * 1024 * 1024  # small files declaring up to 6 MP: nothing was decoded


def _dicom_declaring(frames: int, side: int) -> bytes:
    """CT_small.dcm with its header claiming ``frames`` frames of side x side pixels (the data stays 32 KB)."""
    dataset = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm", download=False))
    dataset.NumberOfFrames, dataset.Rows, dataset.Columns = frames, side, side
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue()


def test_multi_frame_dicom_bombs_are_refused_without_decoding_their_frames():
    tracemalloc.start()
    _, rejected = _intake([("frames.dcm", _dicom_declaring(150, 2048)),
                                 ("many.dcm", _dicom_declaring(5000, 512))])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    reasons = {r.name: r.reason for r in rejected}
    assert "cannot be decoded" in reasons["frames.dcm"]  # only its middle frame was tried
    assert "5000 frames is more than the 1024 allowed" in reasons["many.dcm"]
    assert peak < 64 * 1024 * 1024  # 150 frames of 2048 x 2048 would be 1.2 GB


def test_a_real_multi_frame_dicom_gives_its_middle_frame():
    accepted, rejected = _intake([("two.dcm", _dicom("SC_rgb_rle_2frame.dcm"))])
    assert not rejected and (accepted[0].width, accepted[0].height) == (100, 100)
    expected = pydicom.pixels.pixel_array(pydicom.dcmread(pydicom.data.get_testdata_file(
        "SC_rgb_rle_2frame.dcm", download=False)), index=1).astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    low, high = np.percentile(expected, [0.5, 99.5])
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(accepted[0].png))),
                                  intake.window(expected, (low + high) / 2, max(high - low, 1.0)))


def test_zip_entries_are_labels_never_paths_and_bad_entries_do_not_sink_good_ones(tmp_path):
    name, png = _slice()
    archive = _zip({"../../etc/evil.png": png, "scans/a.dcm": _dicom("CT_small.dcm"), "notes.txt": b"hello",
                    "inner.zip": _zip({"x.png": png})})
    accepted, rejected = _intake([("batch.zip", archive)])
    assert sorted(a.name for a in accepted) == ["batch.zip: ../../etc/evil.png", "batch.zip: scans/a.dcm"]
    reasons = {r.name: r.reason for r in rejected}
    assert "ZIP files inside a ZIP" in reasons["batch.zip: inner.zip"]
    assert "not a PNG" in reasons["batch.zip: notes.txt"]
    assert not os.path.exists("/etc/evil.png")


def test_zip_bombs_are_refused(monkeypatch):
    zeros = _zip({f"z{i}.png": b"\0" * (2 * 1024 * 1024) for i in range(3)})  # 6 MB that packs to a few KB
    monkeypatch.setattr(intake, "MAX_ZIP_TOTAL_BYTES", 5 * 1024 * 1024)
    _, rejected = _intake([("bomb.zip", zeros)])
    assert "unpacks to" in rejected[0].reason
    monkeypatch.setattr(intake, "MAX_ZIP_ENTRIES", 2)
    _, rejected = _intake([("many.zip", zeros)])
    assert "at most 2 are allowed" in rejected[0].reason


def test_doctor_bulk_upload_keeps_good_files_lists_rejects_and_stores_by_content(app, auth, client):
    patient_id = user_id(app, "patient@example.org")
    auth.login("doctor@example.org")
    name, png = _slice()
    page = f"/doctor/patients/{patient_id}"
    response = upload_files(client, page, f"{page}/scans",
                       [(name, png), ("ct.dcm", _dicom("CT_small.dcm")), ("report.txt", b"text"),
                        ("batch.zip", _zip({"b.png": png}))])
    body = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "2 accepted, 2 rejected" in body and "report.txt" in body and "twice in this upload" in body
    with app.app_context():
        scans = db.session.scalars(db.select(Scan).where(Scan.patient_id == patient_id)).all()
        assert len(scans) == 2 and not any(s.self_submitted for s in scans)
        store = app.config["SCAN_STORE"]
        for scan in scans:  # content addressed: the file name is the sha256 of its bytes
            assert os.path.exists(os.path.join(store, scan.original_sha256[:2], scan.original_sha256))
    image_ids = re.findall(r"/scans/(\d+)/image.png", client.get(page).get_data(as_text=True))
    assert len(image_ids) == 2
    again = upload_files(client, page, f"{page}/scans", [(name, png)])  # a retry of an upload that got through
    assert again.status_code == 400 and "already uploaded for this patient (scan " in again.get_data(as_text=True)
    shown = client.get(f"/scans/{image_ids[0]}/image.png")
    assert shown.status_code == 200 and shown.data.startswith(b"\x89PNG")


def test_patient_self_upload_is_marked_not_reviewed_and_private(app, auth, client):
    auth.login("patient@example.org")
    name, png = _slice()
    assert upload_files(client, "/me/", "/me/scans", [(name, png)]).status_code == 200
    assert "not yet reviewed" in client.get("/me/").get_data(as_text=True)
    with app.app_context():
        scan = db.session.scalar(db.select(Scan))
        assert scan.self_submitted
    auth.logout()
    auth.login("other@example.org")  # another doctor: the scan does not exist for them
    assert client.get(f"/scans/{scan.id}/image.png").status_code == 404
    auth.logout()
    auth.login("patient2@example.org")  # another patient: neither
    assert client.get(f"/scans/{scan.id}/image.png").status_code == 404
    auth.logout()
    auth.login("doctor@example.org")  # the patient's doctor sees it
    assert client.get(f"/scans/{scan.id}/image.png").status_code == 200


def test_wrong_roles_cannotupload_files(app, auth, client):
    theirs = user_id(app, "patient2@example.org")
    auth.login("doctor@example.org")
    name, png = _slice()
    response = upload_files(client, "/doctor/patients", f"/doctor/patients/{theirs}/scans", [(name, png)])
    assert response.status_code == 404
    auth.logout()
    auth.login("patient@example.org")
    assert upload_files(client, "/me/", f"/doctor/patients/{theirs}/scans", [(name, png)]).status_code == 403


def test_an_upload_with_only_bad_files_is_a_400_with_reasons(app, auth, client):
    auth.login("patient@example.org")
    response = upload_files(client, "/me/", "/me/scans", [("a.txt", b"not a scan")])
    assert response.status_code == 400 and "0 accepted, 1 rejected" in response.get_data(as_text=True)


def test_scan_storage_down_is_a_503_and_stores_nothing(app, auth, client, monkeypatch):
    for name, value in {"AWS_ENDPOINT_URL": "http://127.0.0.1:1", "AWS_ACCESS_KEY_ID": "x",
                        "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    app.config["SCAN_STORE"] = "s3://radassist-scans/scans"
    blobs.init_app(app)  # the store is made once per app: make it again for the new location
    patient_id = user_id(app, "patient@example.org")
    auth.login("doctor@example.org")
    page = f"/doctor/patients/{patient_id}"
    response = upload_files(client, page, f"{page}/scans", [_slice()])
    assert response.status_code == 503 and "Scan storage is not reachable" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(Scan)) == 0


def test_dicom_is_stored_de_identified_and_a_different_patient_id_is_flagged(app, auth, client):
    patient_id = user_id(app, "patient@example.org")
    auth.login("doctor@example.org")
    page = f"/doctor/patients/{patient_id}"
    original = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm", download=False))
    assert original.PatientName and original.PatientID and original.InstitutionName
    assert upload_files(client, page, f"{page}/scans", [("ct.dcm", _dicom("CT_small.dcm"))]).status_code == 200
    with app.app_context():
        scan = db.session.scalar(db.select(Scan).where(Scan.kind == "dicom"))
        with open(os.path.join(app.config["SCAN_STORE"], scan.original_sha256[:2], scan.original_sha256), "rb") as f:
            stored = f.read()
        assert scan.deidentified and len(scan.dicom_patient_hash) == 64
        assert str(original.PatientID) not in scan.dicom_patient_hash
    kept = pydicom.dcmread(io.BytesIO(stored))
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "InstitutionName", "StudyDate",
                    "ReferringPhysicianName", "AccessionNumber"):
        assert keyword not in kept, keyword
    assert str(original.PatientName).encode() not in stored and str(original.PatientID).encode() not in stored
    assert kept.PatientIdentityRemoved == "YES" and kept.SOPInstanceUID != original.SOPInstanceUID
    np.testing.assert_array_equal(kept.pixel_array, original.pixel_array)  # the image itself is untouched
    assert kept.RescaleSlope == original.RescaleSlope and kept.PixelSpacing == original.PixelSpacing

    # Another patient's DICOM uploaded for this patient: saved, but the doctor is warned and it is audited.
    other = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm", download=False))
    other.PatientID, other.PixelData = "SOMEONE-ELSE-42", bytes(reversed(other.PixelData))
    buffer = io.BytesIO()
    other.save_as(buffer)
    response = upload_files(client, page, f"{page}/scans", [("other.dcm", buffer.getvalue())])
    body = response.get_data(as_text=True)
    assert response.status_code == 200 and "its DICOM patient ID differs from earlier scans" in body
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(AuditEvent).where(
            AuditEvent.action == "dicom_patient_mismatch")) == 1


def test_an_upload_that_fails_part_way_says_what_was_saved_and_leaves_no_orphans(app, auth, client):
    """Storage fails on the last of 9 files: the 8 saved (and queued) are reported as saved, the 9th leaves no blob,
    the audit log has the upload, and uploading all 9 again only adds the missing one."""
    patient_id = user_id(app, "patient@example.org")
    files = [(os.path.basename(p), pathlib.Path(p).read_bytes()) for p in sorted(glob.glob(
        os.path.join(SAMPLE_DIR, "*", "*", "*.png")))[:9]]
    accepted, _ = _intake(files)
    first_eight = {digest[:2] for item in accepted[:8] for digest in (item.sha256, hashlib.sha256(
        item.png).hexdigest())}
    last = accepted[8]
    blocked = hashlib.sha256(last.png).hexdigest()[:2]  # its original is written first, then its PNG fails
    assert blocked not in first_eight | {last.sha256[:2]}, "choose other sample files: their blobs share a folder"
    store = app.config["SCAN_STORE"]
    os.makedirs(store, exist_ok=True)
    with open(os.path.join(store, blocked), "wb"):  # a file where the 9th blob's folder would go: writes fail
        pass
    auth.login("doctor@example.org")
    page = f"/doctor/patients/{patient_id}"
    response = upload_files(client, page, f"{page}/scans", files)
    body = response.get_data(as_text=True)
    assert response.status_code == 207 and "8 accepted" in body
    assert "scan storage stopped answering after 8 of the accepted files were saved" in body
    with app.app_context():
        scans = db.session.scalars(db.select(Scan).where(Scan.patient_id == patient_id)).all()
        assert len(scans) == 8 and {s.original_sha256 for s in scans} == {a.sha256 for a in accepted[:8]}
        assert db.session.scalar(db.select(db.func.count()).select_from(Job)) == 8
        event = db.session.scalar(db.select(AuditEvent).where(AuditEvent.action == "scans_uploaded"))
        assert event.detail == "8 accepted, 0 rejected (interrupted)"
    assert not os.path.exists(os.path.join(store, last.sha256[:2], last.sha256))  # the 9th's original was removed
    os.unlink(os.path.join(store, blocked))  # storage is back
    retry = upload_files(client, page, f"{page}/scans", files)
    assert retry.status_code == 200 and "1 accepted, 8 rejected" in retry.get_data(as_text=True)


def test_large_images_are_kept_and_analysed_downscaled(monkeypatch):
    monkeypatch.setattr(intake, "IMAGE_LIMITS", dataclasses.replace(intake.IMAGE_LIMITS, max_stored_side=1024))
    pixels = np.random.default_rng(1).integers(0, 256, (1000, 1500, 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    (scan,), rejected = _intake([("large.png", buffer.getvalue())])
    stored = Image.open(io.BytesIO(scan.png))
    assert not rejected and (scan.width, scan.height) == (1500, 1000)  # the scan's own size, for the record
    assert stored.size == (1024, 683) and stored.mode == "L" and scan.original == buffer.getvalue()
