import json
import socket
import threading
import time

import pytest
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from pipelines import kubeflow_runner
from pipelines.configs import PipelineOptions

pytestmark = pytest.mark.slow  # TFX and KFP: imports alone take seconds

EXPECTED_TASKS = {"CtExampleGen", "LeakageAudit", "StatisticsGen", "SchemaGen", "ExampleValidator", "Transform",
                  "Trainer", "Evaluator", "Pusher", "MlflowRegistrar"}


def _compile(tmp_path):
    options = PipelineOptions(data_root="s3://bucket/chest-ct", model_base="s3://bucket/models",
                              mlflow_tracking_uri="http://mlflow:5000", training={"seed": 3},
                              beam_pipeline_args=["--runner=FlinkRunner", "--parallelism=4"])
    return kubeflow_runner.compile_pipeline(output_file=str(tmp_path / "radassist.json"),
                                            image="registry.example/radassist-train:1.2.3",
                                            pipeline_root="s3://bucket/root", options=options)


def test_compiled_spec_parses_as_a_kfp_pipeline_spec(tmp_path):
    spec_dict = kubeflow_runner.pipeline_spec(_compile(tmp_path))
    spec = json_format.ParseDict(spec_dict, pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
    tasks = set(spec.root.dag.tasks)
    assert tasks >= EXPECTED_TASKS
    assert any(name.startswith("latest_blessed_model_resolver") for name in tasks)
    text = json.dumps(spec_dict)
    assert "registry.example/radassist-train:1.2.3" in text
    assert "--runner=FlinkRunner" in text  # Beam options reach the data components
    assert "s3://bucket/chest-ct" in text


def test_the_segmenter_compiles_from_the_same_create_pipeline(tmp_path):
    options = PipelineOptions(data_root="s3://bucket/lidc-crops", model_base="s3://bucket/models",
                              mlflow_tracking_uri="http://mlflow:5000", task="segmenter", training={"epochs": 4})
    path = kubeflow_runner.compile_pipeline(output_file=str(tmp_path / "seg.json"),
                                            image="registry.example/radassist-train:1.2.3",
                                            pipeline_root="s3://bucket/root", options=options)
    spec_dict = kubeflow_runner.pipeline_spec(path)
    spec = json_format.ParseDict(spec_dict, pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
    tasks = set(spec.root.dag.tasks)
    assert tasks >= EXPECTED_TASKS - {"CtExampleGen", "LeakageAudit"} | {"NoduleExampleGen"}
    assert not tasks & {"CtExampleGen", "LeakageAudit"} and spec.pipeline_info.name == "radassist-seg"
    text = json.dumps(spec_dict)
    for expected in ("components.segmentation.run_fn.run_fn", "components.segmentation.preprocessing",
                     "radassist-seg", "s3://bucket/lidc-crops", "SliceDice"):
        assert expected in text, expected


class _FakeKfpClient:
    """Stands in for a Kubeflow cluster, which tests cannot run; records what would be sent."""

    calls: list = []

    def __init__(self, host):
        self.host = host

    def create_experiment(self, name):
        self.calls.append(("experiment", self.host, name))
        return type("Experiment", (), {"experiment_id": "exp-1"})()

    def create_run_from_pipeline_package(self, package, arguments, run_name, experiment_name, service_account):
        with open(package) as handle:
            self.calls.append(("run", json.load(handle)["pipelineInfo"]["name"], run_name, service_account))
        return type("Run", (), {"run_id": "run-1"})()

    def create_recurring_run(self, experiment_id, job_name, cron_expression, pipeline_package_path, enabled,
                             service_account):
        with open(pipeline_package_path) as handle:
            self.calls.append(("recurring", experiment_id, cron_expression, "root" in json.load(handle),
                               service_account))
        return type("Job", (), {"recurring_run_id": "job-1"})()


def test_submit_sends_the_pipeline_spec_as_a_run_or_a_schedule(tmp_path):
    job = _compile(tmp_path)
    _FakeKfpClient.calls = []
    assert kubeflow_runner.submit(job, "http://kfp:8888", client_factory=_FakeKfpClient) == "run-1"
    assert kubeflow_runner.submit(job, "http://kfp:8888", schedule="0 0 3 * * 0",
                                  client_factory=_FakeKfpClient) == "job-1"
    assert ("run", "radassist", "radassist-run", "radassist-pipeline") in _FakeKfpClient.calls
    assert ("recurring", "exp-1", "0 0 3 * * 0", True, "radassist-pipeline") in _FakeKfpClient.calls


def test_submitting_to_a_cluster_that_never_answers_times_out(tmp_path):
    """The real kfp.Client against a socket that accepts and never replies: a TimeoutError after the deadline,
    not a hang (kfp.Client has no timeout of its own)."""
    job = _compile(tmp_path)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted = []
    threading.Thread(target=lambda: accepted.extend(listener.accept() for _ in range(8)), daemon=True).start()
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError, match="no answer within 2 s"):
            kubeflow_runner.submit(job, f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=2)
    finally:
        listener.close()
    assert 2 <= time.monotonic() - started < 10 and accepted


def test_the_monitoring_pipeline_compiles_to_a_recurring_run_with_a_moving_window(tmp_path, monkeypatch):
    """`radassist monitor --compile`: the window stays a duration (resolved when each scheduled run starts), and
    the spec carries the cluster's paths and the monitoring components."""
    from pipelines import cli as pipeline_cli
    from radassist import cli

    job = tmp_path / "monitoring.json"
    monkeypatch.setenv("RADASSIST_MONITOR_WEBHOOK_URL", "https://hooks.example/T0KEN-secret")
    assert cli.main(["monitor", "--window", "24h", "--compile", str(job), "--logs", "s3://logs/predictions",
                     "--model-base", "s3://bucket/models", "--data", "s3://bucket/chest-ct", "--publish-dir",
                     "/mnt/monitoring", "--image", "registry.example/radassist-train:1.2.3",
                     "--baseline-cache", "s3://bucket/monitoring-baselines",
                     "--feedback", "s3://bucket/feedback/labels.csv"]) == 0
    spec_dict = kubeflow_runner.pipeline_spec(str(job))
    spec = json_format.ParseDict(spec_dict, pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
    assert set(spec.root.dag.tasks) == {"PredictionLogExampleGen", "BaselineExampleGen", "window_statistics",
                                        "baseline_statistics", "FeedbackEvaluator", "DriftValidator"}
    assert spec.pipeline_info.name == "radassist-monitoring"
    text = json.dumps(spec_dict)
    for expected in ('"24h"', "s3://logs/predictions", "s3://bucket/chest-ct", "s3://bucket/models/radassist",
                     "/mnt/monitoring", "s3://bucket/monitoring-baselines", "registry.example/radassist-train:1.2.3",
                     "s3://bucket/feedback/labels.csv"):
        assert expected in text, expected
    # The webhook's URL (it may carry a token) is read by the step from its environment, never written in the spec.
    assert "T0KEN-secret" not in text and "env:RADASSIST_MONITOR_WEBHOOK_URL" in text
    _FakeKfpClient.calls = []
    assert kubeflow_runner.submit(str(job), "http://kfp:8888", schedule="0 0 2 * * *",
                                  experiment="radassist-monitoring", client_factory=_FakeKfpClient,
                                  service_account="radassist-monitoring") == "job-1"
    assert ("recurring", "exp-1", "0 0 2 * * *", True, "radassist-monitoring") in _FakeKfpClient.calls
    assert ("experiment", "http://kfp:8888", "radassist-monitoring") in _FakeKfpClient.calls
    assert pipeline_cli.EXIT_DRIFT == 3
