"""The monitoring pipeline end to end: a real model server logs its calls (files closed by age), ``radassist
monitor`` runs the TFX pipeline over a window of them against the model's training images, and the verdict reaches
the published folder, ML Metadata, MLflow, a Pushgateway and a webhook (local HTTP servers standing in for them)."""

import datetime as dt
import glob
import hashlib
import http.server
import json
import os
import shutil
import threading
import time

import pytest
from mlflow.tracking import MlflowClient
from test_monitoring import darker_and_padded, sample_images

from pipelines import configs
from pipelines.metadata import read_only_store
from radassist import cli
from radassist.contract import MODEL_NAME
from serving.client import ServingClient
from serving.model_config import ServedModel, format_model_config
from serving.prediction_log import LoggingConfig

pytestmark = pytest.mark.slow
SAMPLE = os.path.join(os.path.dirname(__file__), "..", "data", "sample", "chest-ct")


class Receiver(http.server.ThreadingHTTPServer):
    """Records every request's method, path and body (the webhook's POST, the Pushgateway's PUT)."""

    def __init__(self):
        self.received = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _record(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.received.append((self.command, self.path, body))
                self.send_response(200)
                self.end_headers()

            do_POST = do_PUT = _record  # noqa: N815 - http.server's names

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture(scope="module")
def traffic(contract_model_base, tmp_path_factory):
    """Two windows of logged traffic: the training images three hours ago, a darker and padded export of them now."""
    from conftest import ServerProcess

    root = tmp_path_factory.mktemp("monitored")
    shutil.copytree(contract_model_base, root / "outputs" / "models")
    logs = root / "outputs" / configs.PREDICTION_LOG_SUBDIR
    config = root / "models.config"
    config.write_text(format_model_config([ServedModel(MODEL_NAME, str(root / "outputs" / "models" / MODEL_NAME),
                                                       logging=LoggingConfig(str(logs), 1.0))]))
    (root / "empty").mkdir()
    server = ServerProcess(str(root / "empty"), "--model-config-file", str(config),
                           "--prediction-log-file-seconds", "1").start()
    images = sample_images("train")
    earlier = time.time() - 3 * 3600
    answers = {}
    try:
        with ServingClient(server.address, MODEL_NAME, timeout=60) as client:
            for start in range(0, len(images), 8):
                batch = images[start:start + 8]
                for image, prediction in zip(batch, client.predict(batch), strict=True):
                    answers[hashlib.sha256(image).hexdigest()] = prediction.class_name
            closed = _wait_for_closed_files(logs, 1)
            for path in closed:  # as if logged three hours ago
                os.utime(path, (earlier, earlier))
            shifted = [darker_and_padded(image) for image in images]
            for start in range(0, len(shifted), 8):
                client.predict(shifted[start:start + 8])
            _wait_for_closed_files(logs, len(closed) + 1)  # closed by age while the server runs on
    finally:
        server.stop()
    moment = dt.datetime.fromtimestamp(earlier, dt.UTC)
    distinct = len({hashlib.sha256(image).digest() for image in images})  # the sample repeats one slice
    return {"root": root, "output": root / "outputs", "logs": logs, "count": distinct, "answers": answers,
            "earlier": "/".join((moment + dt.timedelta(minutes=m)).isoformat() for m in (-5, 5))}


def _wait_for_closed_files(logs, count: int, timeout: float = 30.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        closed = sorted(glob.glob(str(logs / MODEL_NAME / "*" / "*.tfrecord.gz")))
        if len(closed) >= count and not glob.glob(str(logs / MODEL_NAME / "*" / "*.partial")):
            return closed
        time.sleep(0.2)
    raise AssertionError(f"the server closed no log file within {timeout} s (by age)")


def _monitor(traffic, window: str, *extra: str) -> int:
    # The reference is the training split here: the quiet window replays it, the other is its shifted export.
    return cli.main(["monitor", "--window", window, "--data", SAMPLE, "--reference-splits", "train",
                     "--output", str(traffic["output"]),
                     "--thresholds-json", json.dumps({"permutations": 200}), *extra])


def _summaries(traffic) -> dict[str, dict]:
    found = {}
    for path in glob.glob(str(traffic["output"] / configs.MONITORING_SUBDIR / MODEL_NAME / "*" / "summary.json")):
        with open(path) as handle:
            found[os.path.basename(os.path.dirname(path))] = json.load(handle)
    return found


def feedback_export(path, answers: dict[str, str]) -> str:
    """Doctors' readings of six of the window's images, as `radassist feedback export` writes them: four agree with
    the model, one confirms another class, one is not assessable (and an older reading of the first is superseded)."""
    from portal.feedback import COLUMNS, to_csv

    classes = ("adenocarcinoma", "large.cell.carcinoma", "squamous.cell.carcinoma", "normal")
    digests = sorted(answers)[:6]
    confirmed = [answers[d] for d in digests[:4]] + [next(c for c in classes if c != answers[digests[4]]),
                                                     "not_assessable"]
    rows = [{name: "" for name in COLUMNS} | {
        "report_id": i, "report_version": 1, "image_sha256": digest, "scan_kind": "png", "source": "doctor_upload",
        "model_name": MODEL_NAME, "model_version": 1, "predicted_class": answers[digest], "confirmed_class": label,
        "signed_at": "2026-12-01T10:00:00Z"} for i, (digest, label) in enumerate(zip(digests, confirmed, strict=True))]
    rows.append(rows[0] | {"report_version": 0, "confirmed_class": confirmed[4], "signed_at": "2026-11-01T10:00:00Z"})
    path.write_text(to_csv(rows))
    return str(path)


def test_monitor_finds_the_shifted_window_only_and_delivers_its_verdict(traffic, monkeypatch, tmp_path):
    receiver = Receiver()
    monkeypatch.setenv("RADASSIST_MONITOR_WEBHOOK_URL", receiver.url + "/hook")
    monkeypatch.setenv("RADASSIST_PUSHGATEWAY_URL", receiver.url)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    labels = feedback_export(tmp_path / "labels.csv", traffic["answers"])

    assert _monitor(traffic, traffic["earlier"], "--fail-on-drift", "--feedback", labels) == 0
    (quiet,) = _summaries(traffic).values()
    assert quiet["images"] == traffic["count"] and not quiet["alert"], quiet["verdict"]
    # TFMA over the window's doctor-labelled calls: 4 of 5 readable ones agree.
    labelled = quiet["feedback"]
    assert (labelled["labelled"], labelled["not_a_class"], labelled["accuracy"]) == (5, 1, 0.8)
    assert labelled["slices"]["model_version=1"]["example_count"] == 5
    assert labelled["slices"]["source=doctor_upload"]["accuracy"] == 0.8
    page = (traffic["output"] / configs.MONITORING_SUBDIR / MODEL_NAME / quiet["window"]["label"]
            / "evaluation.html").read_text()
    assert "model_version=1" in page and "0.800" in page
    assert quiet["baseline"] == {"model_version": 1, "images": traffic["count"]}
    assert quiet["model_versions"] == {"1": traffic["count"]} and quiet["delivery"]["pushgateway"] == "ok"
    assert not [r for r in receiver.received if r[1] == "/hook"]  # no alert, no webhook

    assert _monitor(traffic, "30m", "--fail-on-drift") == cli_exit_drift()
    moved = next(s for s in _summaries(traffic).values() if s["alert"])
    assert {"intensity", "geometry"} <= set(moved["drifted_groups"]), moved["verdict"]
    assert moved["groups"]["intensity"]["features"]["intensity_q50"]["value"] > moved["thresholds"]["jensen_shannon"]
    (hook,) = [json.loads(body) for _, path, body in receiver.received if path == "/hook"]
    assert hook["summary"]["window"] == moved["window"] and "drift" in hook["text"]
    pushed = [body.decode() for method, path, body in receiver.received if method == "PUT"]
    assert len(pushed) == 2 and 'radassist_drift_alert{model="radassist"} 1.0' in pushed[-1]
    assert f"/metrics/job/radassist-monitor/model/{MODEL_NAME}" in [p for m, p, _ in receiver.received if m == "PUT"]
    folder = traffic["output"] / configs.MONITORING_SUBDIR / MODEL_NAME / moved["window"]["label"]
    page = (folder / "report.html").read_text()
    assert "drift: " in page and "<script" not in page and "http" not in page.split("<body>", 1)[1]

    # Both runs are in ML Metadata and MLflow; the second reused the first's baseline.
    store = read_only_store(str(traffic["output"] / "tfx" / configs.MONITORING_METADATA_FILE))
    reports = store.get_artifacts_by_type("radassist.DriftReport")
    assert sorted(r.custom_properties["alert"].int_value for r in reports) == [0, 1]
    baselines = [a for a in store.get_artifacts_by_type("Examples") if "cache" in a.custom_properties]
    assert len({a.custom_properties["cache"].string_value for a in baselines}) == 1
    assert len(glob.glob(str(traffic["output"] / configs.MONITORING_BASELINE_SUBDIR / MODEL_NAME / "1-*"))) == 1
    tracking = MlflowClient("sqlite:///" + str(traffic["output"] / "mlflow" / "mlflow.db"))
    experiment = tracking.get_experiment_by_name("radassist-monitoring")
    runs = tracking.search_runs([experiment.experiment_id])
    assert sorted(run.data.metrics["alert"] for run in runs) == [0.0, 1.0]
    assert sorted(run.data.metrics["labelled_calls"] for run in runs) == [0.0, 5.0]
    assert 'radassist_labelled_accuracy{model="radassist"} 0.8' in pushed[0]
    evaluations = [a for a in store.get_artifacts_by_type("ModelEvaluation") if "labelled" in a.custom_properties]
    assert sorted(a.custom_properties["labelled"].int_value for a in evaluations) == [0, 5]


def test_a_window_without_traffic_gives_no_verdict_and_no_error(traffic):
    assert _monitor(traffic, "2020-01-01T00:00/2020-01-02T00:00") == 0
    empty = _summaries(traffic)["20200101T000000-20200102T000000"]
    assert empty["images"] == 0 and not empty["alert"] and empty["verdict"].startswith("too few")


def cli_exit_drift() -> int:
    from pipelines.cli import EXIT_DRIFT

    return EXIT_DRIFT
