"""Monitoring (issue 14, part 3): prediction logs read back per window, per-image features, and the drift report
on real slices (the committed sample) with fixed seeds."""

import datetime as dt
import glob
import io
import os

import numpy as np
import pytest
from PIL import Image

from components.monitoring import drift, features, logs
from serving.prediction_log import LoggingConfig, PredictionLogger

SAMPLE = os.path.join(os.path.dirname(__file__), "..", "data", "sample", "chest-ct")
CLASSES = ("adenocarcinoma", "large.cell.carcinoma", "squamous.cell.carcinoma", "normal")


def sample_images(*splits: str) -> list[bytes]:
    return [open(path, "rb").read() for split in splits
            for path in sorted(glob.glob(os.path.join(SAMPLE, split, "*", "*")))]


def darker_and_padded(data: bytes) -> bytes:
    """The same slice as another site exports it: a darker window (gamma 1.6) and 15 % black padding."""
    image = Image.open(io.BytesIO(data)).convert("L").point(lambda v: round(255 * (v / 255) ** 1.6))
    width, height = image.size
    canvas = Image.new("L", (round(width * 1.3), round(height * 1.3)), 0)
    canvas.paste(image, (round(width * 0.15), round(height * 0.15)))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def model_outputs(count: int, seed: int, embedding_shift: float = 0.0) -> dict[str, np.ndarray]:
    """Outputs shaped like a classifier's (contract names); the embedding's centre moves by ``embedding_shift``."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(count, len(CLASSES))) * 2
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return {"probabilities": probabilities.astype(np.float32),
            "class_name": np.asarray([CLASSES[i].encode() for i in probabilities.argmax(1)], object),
            "ood_score": rng.uniform(0.2, 0.9, count).astype(np.float32), "in_domain": np.ones(count, bool),
            "needs_review": probabilities.max(1) < 0.5,
            "embedding": (rng.normal(size=(count, 8)) + embedding_shift).astype(np.float32)}


def test_window_parsing():
    now = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)
    assert logs.Window.parse("24h", now) == logs.Window(now - dt.timedelta(hours=24), now)
    window = logs.Window.parse("2026-12-01T00:00/2026-12-02T00:00")
    assert window.start == dt.datetime(2026, 12, 1, tzinfo=dt.UTC) and window.label == \
        "20261201T000000-20261202T000000"
    for bad in ("yesterday", "12x", "2026-12-02/2026-12-01"):
        with pytest.raises(ValueError):
            logs.Window.parse(bad, now)


def test_logged_calls_are_read_back_per_window_and_unbatched(tmp_path):
    images = sample_images("test")[:6]
    logger = PredictionLogger({"radassist": LoggingConfig(str(tmp_path), 1.0)}, seed=0)
    outputs = model_outputs(6, seed=1)
    assert logger.log("radassist", 7, "explain", {"images": np.asarray(images[:4], object)},
                      {name: value[:4] for name, value in outputs.items()})
    assert logger.log("radassist", 7, "predict_image", {"images": np.asarray(images[4:], object)},
                      {name: value[4:] for name, value in outputs.items()})
    assert logger.log("radassist", 7, "model_info", {"request": np.asarray([b""], object)},
                      {"model_info": np.asarray([b"{}"], object)})
    logger.close()
    now = dt.datetime.now(dt.UTC)
    files = logs.log_files(str(tmp_path), "radassist", logs.Window(now - dt.timedelta(minutes=5),
                                                                   now + dt.timedelta(minutes=1)))
    assert len(files) == 1
    assert logs.log_files(str(tmp_path), "radassist", logs.Window(now - dt.timedelta(days=2),
                                                                  now - dt.timedelta(days=1))) == []
    calls = logs.calls(logs.read_records(files))
    assert len(calls) == 6 and calls.skipped == 1 and calls.images == images
    assert calls.versions == [7] * 6 and calls.signatures == ["explain"] * 4 + ["predict_image"] * 2
    np.testing.assert_allclose(calls.outputs["embedding"], outputs["embedding"])
    columns = features.feature_columns(calls.images, calls.outputs, calls.versions, calls.signatures)
    assert set(features.NUMERIC) <= set(columns) and columns[features.EMBEDDING].shape == (6, 8)
    # Intensity and framing come from the model's canonicalisation: a padded, darker export reads as one.
    shifted = features.input_statistics([darker_and_padded(image) for image in images])
    assert (shifted["intensity_q50"] < columns["intensity_q50"]).all()
    assert (shifted["frame_fraction"] < columns["frame_fraction"]).all()
    # Examples for TFDV and back.
    back = features.from_examples(features.to_examples(columns))
    np.testing.assert_allclose(back["confidence"], columns["confidence"], rtol=1e-6)
    assert list(back[features.PREDICTED_CLASS]) == list(columns[features.PREDICTED_CLASS])


@pytest.fixture(scope="module")
def split():
    """The 120 sample slices shuffled (fixed seed) into a baseline of 80 and an in-distribution window of 40."""
    images = sample_images("train", "valid", "test")
    order = np.random.default_rng(0).permutation(len(images))
    return [images[i] for i in order[:80]], [images[i] for i in order[80:]]


@pytest.fixture(scope="module")
def baseline(split):
    return features.feature_columns(split[0], model_outputs(len(split[0]), seed=2))


def test_drift_fires_on_a_shifted_window_and_not_on_an_unshifted_one(baseline, split):
    thresholds = drift.Thresholds(permutations=200)
    statistics = drift.statistics(baseline)
    images = split[1]
    same = drift.window_report(baseline, features.feature_columns(images, model_outputs(len(images), seed=3)),
                               thresholds, statistics, seed=0)
    assert same["images"] == 40 and not same["alert"], same["verdict"]
    assert same["embedding"]["p_value"] > thresholds.alpha
    moved = drift.window_report(
        baseline, features.feature_columns([darker_and_padded(image) for image in images],
                                           model_outputs(len(images), seed=3, embedding_shift=1.5)),
        thresholds, statistics, seed=0)
    assert moved["alert"] and {"intensity", "geometry", "embedding"} <= set(moved["drifted_groups"])
    assert moved["groups"]["intensity"]["features"]["intensity_q50"]["value"] > thresholds.jensen_shannon
    assert not moved["groups"]["output"]["drifted"]  # the outputs did not move
    assert moved["embedding"]["p_value"] < thresholds.alpha
    # The same image many times is one image: no verdict from a window of repeats.
    repeated = features.feature_columns([images[0]] * 40, model_outputs(40, seed=4))
    report = drift.window_report(baseline, repeated, thresholds, statistics)
    assert report["images"] == 1 and not report["alert"] and report["verdict"].startswith("too few")


def test_embedding_test_holds_its_false_alarm_rate_on_exchangeable_samples():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(300, 8))
    thresholds = drift.Thresholds(permutations=100)
    alarms = [drift.embedding_drift(reference, rng.normal(size=(100, 8)), thresholds, seed=i)["drifted"]
              for i in range(20)]
    assert sum(alarms) <= 1
    moved = drift.embedding_drift(reference, rng.normal(size=(100, 8)) + np.array([0.6] + [0] * 7), thresholds)
    assert moved["drifted"] and moved["p_value"] < 0.01



def test_the_windows_doctor_labelled_calls_are_scored_by_tfma(tmp_path):
    from components.monitoring import labelled

    images = sample_images("test")[:8]
    outputs = model_outputs(8, seed=5)
    window = features.feature_columns(images, outputs, [3] * 6 + [4] * 2)
    predicted = list(window[features.PREDICTED_CLASS])
    digests = list(window[features.SHA256])
    readings = {  # doctors read six of the eight: four agree, one confirms another class, one cannot say
        digests[0]: {"confirmed_class": predicted[0], "source": "doctor_upload", "scanner": "SIEMENS"},
        digests[1]: {"confirmed_class": predicted[1], "source": "doctor_upload", "scanner": ""},
        digests[2]: {"confirmed_class": predicted[2], "source": "patient_upload", "scanner": ""},
        digests[3]: {"confirmed_class": next(c for c in CLASSES if c != predicted[3]), "source": "doctor_upload"},
        digests[6]: {"confirmed_class": predicted[6], "source": "doctor_upload"},
        digests[7]: {"confirmed_class": "not_assessable", "source": "doctor_upload"},
        "f" * 64: {"confirmed_class": "normal"},  # an image outside the window
    }
    rows, counts = labelled.labelled_rows(window, readings, {3: CLASSES, 4: CLASSES}, "W")
    assert counts == {"readings": 7, "labelled": 5, "not_a_class": 1}
    assert [CLASSES[i] for i in rows[labelled.LABEL]][:3] == predicted[:3]
    np.testing.assert_allclose(rows[features.PROBABILITIES][0], outputs["probabilities"][0])
    result = labelled.evaluate(rows, str(tmp_path))
    assert result["labelled"] == 5 and result["accuracy"] == pytest.approx(4 / 5)
    slices = result["slices"]
    assert slices["model_version=3"]["example_count"] == 4 and slices["model_version=3"]["accuracy"] == 0.75
    assert slices["model_version=4"]["accuracy"] == 1.0 and slices["source=patient_upload"]["example_count"] == 1
    assert slices["scanner=SIEMENS"]["example_count"] == 1 and slices["window=W"]["example_count"] == 5
    assert sum(map(sum, result["confusion_matrix"])) == 5
    page = labelled.render_html(result, counts, "radassist", "W", CLASSES)
    assert "model_version=3" in page and "<script" not in page
    # A version whose classes are unknown (deleted) labels nothing; no labelled call: no TFMA run, a clear page.
    assert labelled.labelled_rows(window, readings, {}, "W")[1]["labelled"] == 0
    empty = labelled.evaluate({}, str(tmp_path / "none"))
    assert empty["accuracy"] is None and "No labelled call" in labelled.render_html(empty, {}, "radassist", "W", ())


def test_a_compiled_steps_delivery_urls_come_from_its_environment(monkeypatch):
    from components.monitoring.component import resolve

    monkeypatch.setenv("RADASSIST_MONITOR_WEBHOOK_URL", "https://hooks.example/T0KEN")
    assert resolve("env:RADASSIST_MONITOR_WEBHOOK_URL") == "https://hooks.example/T0KEN"
    assert resolve("env:RADASSIST_UNSET_VARIABLE") == "" and resolve("http://pushgateway:9091") == "http://pushgateway:9091"
