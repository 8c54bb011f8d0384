import io
import os

import pytest
from PIL import Image

from components import features
from components.ct_example_gen import SkippedFile, read_scan_image


def _write(path, data: bytes) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    return str(path)


def _png(size=(64, 48), mode="RGBA") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color=(90, 90, 90, 255) if mode == "RGBA" else 90).save(buffer, format="PNG")
    return buffer.getvalue()


def test_long_kaggle_folder_names_map_to_classes():
    assert features.class_from_folder("adenocarcinoma_left.lower.lobe_T2_N0_M0_Ib") == "adenocarcinoma"
    assert features.class_from_folder("large.cell.carcinoma_left.hilum_T2_N2_M0_IIIa") == "large.cell.carcinoma"
    assert features.class_from_folder("squamous.cell.carcinoma") == "squamous.cell.carcinoma"
    assert features.class_from_folder("normal") == "normal"
    assert features.class_from_folder("notes") is None


def test_reads_image_with_metadata(tmp_path):
    path = _write(tmp_path / "train" / "squamous.cell.carcinoma_left.hilum_T1_N2_M0_IIIa" / "a.png", _png())
    scan = read_scan_image(path, str(tmp_path))
    assert scan.label == features.CLASS_NAMES.index("squamous.cell.carcinoma")
    assert (scan.width, scan.height) == (64, 48)
    assert scan.filename == "train/squamous.cell.carcinoma_left.hilum_T1_N2_M0_IIIa/a.png"
    assert len(scan.sha256) == 64
    example = scan.to_example()
    assert example.features.feature[features.IMAGE_KEY].bytes_list.value[0] == scan.encoded


def test_jpeg_named_png_is_kept_as_jpeg(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (30, 20), (10, 10, 10)).save(buffer, format="JPEG")
    scan = read_scan_image(_write(tmp_path / "train" / "normal" / "n7.png", buffer.getvalue()), str(tmp_path))
    assert scan.encoded[:3] == b"\xff\xd8\xff"


def test_other_formats_are_reencoded_as_png(tmp_path):
    buffer = io.BytesIO()
    Image.new("L", (30, 20), 10).save(buffer, format="BMP")
    scan = read_scan_image(_write(tmp_path / "test" / "normal" / "x.bmp", buffer.getvalue()), str(tmp_path))
    assert scan.encoded.startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("relative", "data", "reason"),
    [
        ("train/normal/corrupt.png", b"\x89PNG\r\n\x1a\n" + b"garbage" * 50, "not_an_image"),
        ("train/normal/notes.txt", b"radiology notes, not an image", "not_an_image"),
        ("train/normal/empty.png", b"", "empty"),
        ("train/unknown_class/a.png", None, "unknown_class"),
    ],
)
def test_bad_files_are_skipped_with_a_reason(tmp_path, relative, data, reason):
    path = _write(tmp_path / relative, _png() if data is None else data)
    with pytest.raises(SkippedFile) as skipped:
        read_scan_image(path, str(tmp_path))
    assert skipped.value.reason == reason


def test_truncated_png_is_skipped(tmp_path):
    data = _png(size=(400, 400), mode="L")
    path = _write(tmp_path / "train" / "normal" / "cut.png", data[: len(data) // 2])
    with pytest.raises(SkippedFile):
        read_scan_image(path, str(tmp_path))
