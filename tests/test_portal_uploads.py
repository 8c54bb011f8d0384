"""Scan uploads: real PNG slices, real DICOM (pydicom's test files), ZIPs, and every kind of bad input."""

import glob
import io
import os
import re
import zipfile

import numpy as np
import pydicom.data
import pytest
from conftest import SAMPLE_DIR, upload_files, user_id
from PIL import Image

from portal import intake
from portal.models import Scan, db


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
    accepted, rejected = intake.intake([("ct.dcm", _dicom("CT_small.dcm"))])
    assert not rejected
    scan = accepted[0]
    assert (scan.kind, scan.modality, scan.width, scan.height) == ("dicom", "CT", 128, 128)
    dataset = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm", download=False))
    hounsfield = dataset.pixel_array * float(dataset.RescaleSlope) + float(dataset.RescaleIntercept)
    expected = intake.window(hounsfield, *intake.LUNG_WINDOW)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(scan.png))), expected)


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "MR_small_RLE.dcm", "SC_rgb_jpeg_dcmtk.dcm"])
def test_compressed_dicom_syntaxes_are_accepted(name):
    accepted, rejected = intake.intake([(name, _dicom(name))])
    assert not rejected and accepted[0].kind == "dicom"
    assert Image.open(io.BytesIO(accepted[0].png)).mode == "L"


def test_type_is_sniffed_from_content_not_the_name():
    name, png = _slice()
    accepted, rejected = intake.intake([("looks-like.dcm", png), ("scan.png", b"%PDF-1.7 not an image")])
    assert accepted[0].kind == "png"
    assert rejected[0].reason == "not a PNG, JPEG, DICOM or ZIP file"


def test_undecodable_dicom_gets_a_clear_reason():
    _, rejected = intake.intake([("lossy12.dcm", _dicom("JPEG-lossy.dcm"))])
    assert "cannot be decoded" in rejected[0].reason


def test_corrupt_empty_and_bomb_images_are_rejected_with_reasons():
    _, png = _slice()
    bomb = io.BytesIO()
    Image.new("L", (9000, 9000)).save(bomb, format="PNG")  # 81 MP of zeros: a tiny file, a huge image
    accepted, rejected = intake.intake([("cut.png", png[: len(png) // 3]), ("empty.png", b""),
                                        ("bomb.png", bomb.getvalue()), ("good.png", png)])
    reasons = {r.name: r.reason for r in rejected}
    assert [a.name for a in accepted] == ["good.png"]
    assert "not a readable PNG" in reasons["cut.png"] and reasons["empty.png"] == "empty file"
    assert "pixels" in reasons["bomb.png"]


def test_zip_entries_are_labels_never_paths_and_bad_entries_do_not_sink_good_ones(tmp_path):
    name, png = _slice()
    archive = _zip({"../../etc/evil.png": png, "scans/a.dcm": _dicom("CT_small.dcm"), "notes.txt": b"hello",
                    "inner.zip": _zip({"x.png": png})})
    accepted, rejected = intake.intake([("batch.zip", archive)])
    assert sorted(a.name for a in accepted) == ["batch.zip: ../../etc/evil.png", "batch.zip: scans/a.dcm"]
    reasons = {r.name: r.reason for r in rejected}
    assert "ZIP files inside a ZIP" in reasons["batch.zip: inner.zip"]
    assert "not a PNG" in reasons["batch.zip: notes.txt"]
    assert not os.path.exists("/etc/evil.png")


def test_zip_bombs_are_refused(monkeypatch):
    zeros = _zip({f"z{i}.png": b"\0" * (2 * 1024 * 1024) for i in range(3)})  # 6 MB that packs to a few KB
    monkeypatch.setattr(intake, "MAX_ZIP_TOTAL_BYTES", 5 * 1024 * 1024)
    _, rejected = intake.intake([("bomb.zip", zeros)])
    assert "unpacks to" in rejected[0].reason
    monkeypatch.setattr(intake, "MAX_ZIP_ENTRIES", 2)
    _, rejected = intake.intake([("many.zip", zeros)])
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
    assert "3 accepted, 1 rejected" in body and "report.txt" in body
    with app.app_context():
        scans = db.session.scalars(db.select(Scan).where(Scan.patient_id == patient_id)).all()
        assert len(scans) == 3 and not any(s.self_submitted for s in scans)
        store = app.config["SCAN_STORE"]
        for scan in scans:  # content addressed: the file name is the sha256 of its bytes
            assert os.path.exists(os.path.join(store, scan.original_sha256[:2], scan.original_sha256))
        # the same slice twice (alone and in the ZIP) is stored once
        assert len({s.original_sha256 for s in scans if s.kind == "png"}) == 1
    image_ids = re.findall(r"/scans/(\d+)/image.png", client.get(page).get_data(as_text=True))
    assert len(image_ids) == 3
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
    patient_id = user_id(app, "patient@example.org")
    auth.login("doctor@example.org")
    page = f"/doctor/patients/{patient_id}"
    response = upload_files(client, page, f"{page}/scans", [_slice()])
    assert response.status_code == 503 and "Scan storage is not reachable" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(Scan)) == 0
