"""The monitoring pipeline's own TFX components (pipelines/monitoring.py wires them with TFX's StatisticsGen).

- ``PredictionLogExampleGen``: a window of the model server's prediction logs -> one tf.Example of monitored
  features per distinct image (split ``window``);
- ``BaselineExampleGen``: the same features of the reference images (held-out splits) of the model version that
  served most of the window (split ``baseline``), cached per version (components/monitoring/baseline.py);
- ``FeedbackEvaluator``: TFMA over the window's calls that doctors labelled at sign-off (the portal's feedback
  export), sliced by window, model version, source and scanner (components/monitoring/labelled.py) -> a
  ModelEvaluation artifact (TFMA's output, ``labelled.json``, ``evaluation.html``);
- ``DriftValidator``: TFDV's ``validate_statistics`` with drift comparators against the baseline's statistics,
  the permutation tests and the embedding's MMD (components/monitoring/drift.py) -> a DriftReport artifact
  (summary JSON with the labelled calls' accuracy, anomalies, schema, HTML views),
  published for the portal, MLflow, Prometheus and a webhook
  (components/monitoring/publish.py).
"""

import collections
import json
import logging
import os

import numpy as np
import tensorflow as tf
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact, artifact_utils, standard_artifacts

from components import feedback as feedback_export
from components.monitoring import baseline, drift, features, labelled, logs, publish
from radassist.contract import MODEL_INFO_PATH, ModelInfo

log = logging.getLogger(__name__)

WINDOW_SPLIT, BASELINE_SPLIT = "window", "baseline"
EXAMPLES_FILE = "data_tfrecord-00000-of-00001.gz"
LABELLED_FILE = "labelled.json"  # FeedbackEvaluator's result, in its ModelEvaluation artifact
STATISTICS_FILE = "FeatureStats.pb"


class DriftReport(artifact.Artifact):
    """A window's drift verdict: ``summary.json``, ``anomalies.pbtxt``, ``schema.pbtxt``, ``report.html``; the alert
    and the group scores as ML Metadata custom properties."""

    TYPE_NAME = "radassist.DriftReport"  # KFP v2 wants "<namespace>.<Name>"


def _write_split(examples: artifact.Artifact, split: str, rows: dict[str, np.ndarray]) -> None:
    examples.split_names = artifact_utils.encode_split_names([split])
    baseline.write_examples(os.path.join(artifact_utils.get_split_uri([examples], split), EXAMPLES_FILE), rows)


ENVIRONMENT_REFERENCE = "env:"  # a parameter "env:NAME" is read from the step's environment when it runs


def resolve(value: str) -> str:
    """A parameter's value, or for ``env:NAME`` the running step's $NAME (a compiled KFP spec names the variable, so
    a webhook URL with a token stays in the cluster's secret instead of the spec)."""
    if value.startswith(ENVIRONMENT_REFERENCE):
        return os.environ.get(value.removeprefix(ENVIRONMENT_REFERENCE), "")
    return value


def _write_files(folder: str, files: dict[str, str]) -> None:
    for name, text in files.items():
        with tf.io.gfile.GFile(os.path.join(folder, name), "w") as handle:
            handle.write(text)


def read_split(examples: artifact.Artifact, split: str) -> dict[str, np.ndarray]:
    paths = sorted(tf.io.gfile.glob(os.path.join(artifact_utils.get_split_uri([examples], split), "*")))
    return baseline.read_examples(paths)


def read_statistics(statistics: artifact.Artifact, split: str):
    import tensorflow_data_validation as tfdv

    return tfdv.load_stats_binary(os.path.join(artifact_utils.get_split_uri([statistics], split), STATISTICS_FILE))


def window_rows(log_prefix: str, model_name: str, window: logs.Window) -> tuple[dict[str, np.ndarray], dict]:
    """The distinct images of a window's logged classifier calls as feature rows, and counts of what was read."""
    files = logs.log_files(log_prefix, model_name, window)
    called = logs.calls(logs.read_records(files))
    counts = {"log_files": len(files), "calls": len(called), "skipped_records": called.skipped}
    if not len(called):
        return {}, {**counts, "images": 0, "repeats": 0}
    rows = drift.distinct(features.feature_columns(called.images, called.outputs, called.versions,
                                                   called.signatures))
    images = len(rows[features.SHA256])
    return rows, {**counts, "images": images, "repeats": len(called) - images}


@component
def PredictionLogExampleGen(  # noqa: N802 - TFX components are named like classes
    examples: OutputArtifact[standard_artifacts.Examples],
    log_prefix: Parameter[str],
    model_name: Parameter[str],
    window: Parameter[str],
):
    """The window's logged calls of ``model_name`` (``window``: START/END or a duration back from the run's start,
    such as 24h) as monitored-feature examples; an empty window gives an empty split."""
    span = logs.Window.parse(window)
    rows, counts = window_rows(log_prefix, model_name, span)
    _write_split(examples, WINDOW_SPLIT, rows)
    examples.set_string_custom_property("window_start", span.start.isoformat())
    examples.set_string_custom_property("window_end", span.end.isoformat())
    for name, value in counts.items():
        examples.set_int_custom_property(name, value)
    if rows:
        versions = collections.Counter(rows[features.MODEL_VERSION].tolist())
        examples.set_string_custom_property("model_versions", json.dumps(dict(versions)))
    log.info("PredictionLogExampleGen: %s in %s", counts, span.label)


def baseline_version(window_examples: artifact.Artifact) -> int | None:
    """The model version that answered most of the window's images (the newer on a tie); None for an empty window."""
    text = window_examples.get_string_custom_property("model_versions")
    if not text:
        return None
    versions = {int(version): count for version, count in json.loads(text).items()}
    return max(versions, key=lambda version: (versions[version], version))


@component
def BaselineExampleGen(  # noqa: N802
    window_examples: InputArtifact[standard_artifacts.Examples],
    examples: OutputArtifact[standard_artifacts.Examples],
    model_dir: Parameter[str],
    data_root: Parameter[str],
    cache_dir: Parameter[str] = "",
    reference_splits: Parameter[str] = baseline.REFERENCE_SPLITS_TEXT,
):
    """The monitored features of the reference images of the window's model version (the newest without traffic)."""
    splits = tuple(split.strip() for split in reference_splits.split(",") if split.strip())
    rows, cached = baseline.baseline_columns(model_dir, baseline_version(window_examples), data_root, cache_dir,
                                             splits=splits)
    _write_split(examples, BASELINE_SPLIT, rows)
    examples.set_int_custom_property("model_version", int(rows[features.MODEL_VERSION][0]))
    examples.set_int_custom_property("images", len(rows[features.SHA256]))
    examples.set_string_custom_property("cache", cached)


def model_classes(model_dir: str, version: int) -> tuple[str, ...]:
    """A model version's class order, from its own info (empty when the version or its info is gone)."""
    path = os.path.join(model_dir, str(version), MODEL_INFO_PATH)
    if not tf.io.gfile.exists(path):
        return ()
    with tf.io.gfile.GFile(path, "r") as handle:
        return ModelInfo.from_json(handle.read()).class_names


@component
def FeedbackEvaluator(  # noqa: N802
    window_examples: InputArtifact[standard_artifacts.Examples],
    evaluation: OutputArtifact[standard_artifacts.ModelEvaluation],
    model_name: Parameter[str],
    model_dir: Parameter[str],
    feedback: Parameter[str] = "",
):
    """TFMA over the window's calls that carry a doctor's reading in the feedback export ``feedback`` (a CSV, local
    or S3; empty: none configured, nothing labelled)."""
    window = read_split(window_examples, WINDOW_SPLIT)
    readings = feedback_export.read_export(feedback) if feedback else {}
    versions = sorted({int(v) for v in window.get(features.MODEL_VERSION, [])})
    class_names = {version: model_classes(model_dir, version) for version in versions}
    label = publish.window_label(window_examples.get_string_custom_property("window_start"),
                                 window_examples.get_string_custom_property("window_end"))
    rows, counts = labelled.labelled_rows(window, readings, class_names, label)
    result = labelled.evaluate(rows, evaluation.uri)
    names = class_names[versions[-1]] if versions else ()
    files = {LABELLED_FILE: json.dumps(labelled.summary(result, counts), indent=2),
             publish.EVALUATION_FILE: labelled.render_html(result, counts, model_name, label, names)}
    _write_files(evaluation.uri, files)
    evaluation.set_int_custom_property("labelled", result["labelled"])
    if result["accuracy"] is not None:
        evaluation.set_float_custom_property("accuracy", result["accuracy"])
    log.info("FeedbackEvaluator: %s labelled calls, accuracy %s", result["labelled"], result["accuracy"])


@component
def DriftValidator(  # noqa: N802
    baseline_examples: InputArtifact[standard_artifacts.Examples],
    window_examples: InputArtifact[standard_artifacts.Examples],
    baseline_statistics: InputArtifact[standard_artifacts.ExampleStatistics],
    window_statistics: InputArtifact[standard_artifacts.ExampleStatistics],
    evaluation: InputArtifact[standard_artifacts.ModelEvaluation],
    report: OutputArtifact[DriftReport],
    model_name: Parameter[str],
    thresholds_json: Parameter[str] = "{}",
    publish_dir: Parameter[str] = "",
    mlflow_tracking_uri: Parameter[str] = "",
    mlflow_experiment: Parameter[str] = publish.MLFLOW_EXPERIMENT,
    webhook_url: Parameter[str] = "",
    pushgateway_url: Parameter[str] = "",
):
    """Scores the window against the baseline, writes the report and sends it where configured."""
    from google.protobuf import text_format

    thresholds = drift.Thresholds(**json.loads(thresholds_json))
    window = read_split(window_examples, WINDOW_SPLIT)
    reference = read_split(baseline_examples, BASELINE_SPLIT)
    window_stats = read_statistics(window_statistics, WINDOW_SPLIT) if window else None
    result = drift.window_report(reference, window or publish.empty_columns(), thresholds,
                                 read_statistics(baseline_statistics, BASELINE_SPLIT), window_stats)
    anomalies, schema = result.pop("_anomalies", None), result.pop("_schema", None)
    summary = publish.summary(
        result, model_name=model_name,
        window={"start": window_examples.get_string_custom_property("window_start"),
                "end": window_examples.get_string_custom_property("window_end")},
        counts={name: window_examples.get_int_custom_property(name)
                for name in ("log_files", "calls", "skipped_records", "repeats")},
        baseline={"model_version": baseline_examples.get_int_custom_property("model_version"),
                  "images": baseline_examples.get_int_custom_property("images")},
        window_columns=window, baseline_columns=reference)
    with tf.io.gfile.GFile(os.path.join(evaluation.uri, LABELLED_FILE)) as handle:
        summary["feedback"] = json.load(handle)
    html = publish.render_html(summary, reference, window)
    with tf.io.gfile.GFile(os.path.join(evaluation.uri, publish.EVALUATION_FILE)) as handle:
        evaluation_html = handle.read()
    files = {publish.SUMMARY_FILE: json.dumps(summary, indent=2), publish.REPORT_FILE: html,
             publish.EVALUATION_FILE: evaluation_html}
    if anomalies is not None:
        files["anomalies.pbtxt"] = text_format.MessageToString(anomalies)
        files["schema.pbtxt"] = text_format.MessageToString(schema)
    _write_files(report.uri, files)
    report.set_int_custom_property("alert", int(summary["alert"]))
    report.set_int_custom_property("images", summary["images"])
    report.set_string_custom_property("verdict", summary["verdict"])
    for group, scores in summary["groups"].items():
        report.set_float_custom_property(f"{group}_score", scores["score"])
    if summary["embedding"]:
        report.set_float_custom_property("embedding_mmd2", summary["embedding"]["mmd2"])
    if summary["feedback"]["accuracy"] is not None:
        report.set_float_custom_property("labelled_accuracy", summary["feedback"]["accuracy"])
    publish.send(summary, html, evaluation_html, publish_dir=publish_dir, mlflow_tracking_uri=mlflow_tracking_uri,
                 mlflow_experiment=mlflow_experiment, webhook_url=resolve(webhook_url),
                 pushgateway_url=resolve(pushgateway_url),
                 report_dir=report.uri)
    with tf.io.gfile.GFile(os.path.join(report.uri, publish.SUMMARY_FILE), "w") as handle:
        json.dump(summary, handle, indent=2)  # now with where it was delivered
    log.info("DriftValidator: %s (%d images)", summary["verdict"], summary["images"])
