"""The viewer's pixels: full resolution from the stored upload (HU for CT DICOM, grey for PNG/JPEG), windows
rendered on the server, and nobody else's scan from any viewer URL (SQLite and PostgreSQL)."""

import io

import numpy as np
import pydicom
import pytest
from conftest import upload_files, user_id
from PIL import Image
from pydicom.data import get_testdata_file

from portal import viewer
from portal.models import Scan, db


def _upload(app, auth, client, files) -> list[int]:
    patient = user_id(app, "patient@example.org")
    auth.login("doctor@example.org")
    page = f"/doctor/patients/{patient}"
    assert upload_files(client, page, f"{page}/scans", files).status_code == 200
    with app.app_context():
        return list(db.session.scalars(db.select(Scan.id).order_by(Scan.id)))


def _large_png() -> bytes:
    """A 2000 x 1800 picture (the model sees a 224-pixel square of it): the viewer shows every pixel."""
    pixels = (np.add.outer(np.arange(1800), np.arange(2000)) % 256).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture()
def scans(app, auth, client):
    path = get_testdata_file("CT_small.dcm", download=False)
    with open(path, "rb") as handle:
        dicom = handle.read()
    return dict(zip(("dicom", "png"), _upload(app, auth, client, [("ct.dcm", dicom), ("big.png", _large_png())]),
                    strict=True))


def test_dicom_pixels_are_hounsfield_units_at_full_resolution(scans, client):
    described = client.get(f"/scans/{scans['dicom']}/viewer.json").get_json()
    source = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
    assert (described["rows"], described["columns"]) == (source.Rows, source.Columns)
    assert described["unit"] == "HU" and described["default"] == "lung"
    assert [preset[0] for preset in described["presets"]] == ["lung", "mediastinum", "bone"]
    assert described["pixel_spacing_mm"] == [float(v) for v in source.PixelSpacing]
    raw = client.get(described["pixels_url"])
    assert raw.headers["Cache-Control"] == "no-store"
    values = np.frombuffer(raw.data, "<i2").reshape(source.Rows, source.Columns)
    hounsfield = source.pixel_array * float(source.RescaleSlope) + float(source.RescaleIntercept)
    np.testing.assert_array_equal(values, np.round(hounsfield).astype(np.int16))


def test_the_window_changes_the_rendered_pixels(scans, client):
    url = f"/scans/{scans['dicom']}/rendered.png"
    lung = np.asarray(Image.open(io.BytesIO(client.get(url).data)))
    bone = np.asarray(Image.open(io.BytesIO(client.get(f"{url}?centre=400&width=1800").data)))
    soft = np.asarray(Image.open(io.BytesIO(client.get(f"{url}?centre=40&width=400").data)))
    assert lung.shape == bone.shape == soft.shape
    assert not np.array_equal(lung, bone) and not np.array_equal(bone, soft)
    assert bone.mean() < soft.mean()  # a higher level shows the same tissue darker
    for query in ("centre=40", "centre=a&width=400", "centre=40&width=0", "centre=nan&width=400"):
        response = client.get(f"{url}?{query}")
        assert response.status_code == 400 and "error" in response.get_json(), query


def test_png_pixels_are_the_upload_at_full_resolution(scans, client):
    described = client.get(f"/scans/{scans['png']}/viewer.json").get_json()
    assert (described["rows"], described["columns"]) == (1800, 2000)
    assert described["unit"] == "grey" and described["pixel_spacing_mm"] is None and described["default"] == "full"
    values = np.frombuffer(client.get(described["pixels_url"]).data, "<i2").reshape(1800, 2000)
    np.testing.assert_array_equal(values, np.add.outer(np.arange(1800), np.arange(2000)) % 256)


def test_every_viewer_url_is_404_for_anyone_else(scans, client, auth):
    urls = [f"/scans/{scan}/{name}" for scan in scans.values()
            for name in ("viewer.json", "pixels.bin", "rendered.png", "thumbnail.png")]
    assert all(client.get(url).status_code == 200 for url in urls)
    auth.logout()
    for email in ("other@example.org", "patient2@example.org"):
        auth.login(email)
        assert [client.get(url).status_code for url in urls] == [404] * len(urls), email
        auth.logout()
    auth.login("patient@example.org")  # the patient's own scans
    assert client.get(urls[0]).status_code == 200


def test_window_parsing_and_presets():
    image = viewer.ViewerImage(np.array([[-1000, 0], [400, 1200]], np.int16), "HU", (0.7, 0.7), viewer.CT_PRESETS,
                               "lung")
    assert viewer.parse_window(None, None, image) == viewer.CT_PRESETS["lung"]
    assert viewer.parse_window("40", "400", image) == (40.0, 400.0)
    with pytest.raises(viewer.WindowError):
        viewer.parse_window("40", "-5", image)
    rendered = np.asarray(Image.open(io.BytesIO(viewer.render_png(image, 40, 400))))
    np.testing.assert_array_equal(rendered, [[0, 102], [255, 255]])  # (0 + 160) / 400 * 255 = 102
