"""RadAssist's monitoring pipeline: one window of a served model's traffic against its training images.

  PredictionLogExampleGen (the window's logged calls -> feature rows)
    -> BaselineExampleGen (the same features of the served version's reference images, cached per version)
    -> StatisticsGen (window) + StatisticsGen (baseline)
    -> FeedbackEvaluator (TFMA over the window's calls that doctors labelled at sign-off)
    -> DriftValidator (TFDV drift comparators + permutation tests + embedding MMD -> summary, alert, publishing)

Run locally by ``radassist monitor --window 24h`` (cron-able) and compiled for Kubeflow by ``radassist monitor
compile`` (a recurring run whose window is a duration resolved when each run starts).
"""

import json
import os

from tfx import v1 as tfx

from components.monitoring.component import (
    BaselineExampleGen,
    DriftReport,
    DriftValidator,
    FeedbackEvaluator,
    PredictionLogExampleGen,
)
from components.monitoring.publish import SUMMARY_FILE
from pipelines.metadata import read_only_store


def create_monitoring_pipeline(
    *,
    pipeline_name: str,
    pipeline_root: str,
    log_prefix: str,
    model_name: str,
    model_dir: str,
    data_root: str,
    window: str,
    thresholds: dict,
    baseline_cache_dir: str = "",
    reference_splits: str = "test",
    publish_dir: str = "",
    mlflow_tracking_uri: str = "",
    webhook_url: str = "",
    pushgateway_url: str = "",
    feedback: str = "",
    metadata_connection_config=None,
    beam_pipeline_args: list[str] | None = None,
) -> tfx.dsl.Pipeline:
    """Builds the monitoring pipeline; pure (reads no environment). ``window`` is START/END or a duration (24h);
    ``feedback`` is the portal's feedback export (CSV path, local or S3; empty: no labelled calls)."""
    logged = PredictionLogExampleGen(log_prefix=log_prefix, model_name=model_name, window=window)
    reference = BaselineExampleGen(window_examples=logged.outputs["examples"], model_dir=model_dir,
                                   data_root=data_root, cache_dir=baseline_cache_dir,
                                   reference_splits=reference_splits)
    window_statistics = tfx.components.StatisticsGen(examples=logged.outputs["examples"]).with_id(
        "window_statistics")
    baseline_statistics = tfx.components.StatisticsGen(examples=reference.outputs["examples"]).with_id(
        "baseline_statistics")
    labelled = FeedbackEvaluator(window_examples=logged.outputs["examples"], model_name=model_name,
                                 model_dir=model_dir, feedback=feedback)
    validator = DriftValidator(
        baseline_examples=reference.outputs["examples"], window_examples=logged.outputs["examples"],
        baseline_statistics=baseline_statistics.outputs["statistics"],
        window_statistics=window_statistics.outputs["statistics"], evaluation=labelled.outputs["evaluation"],
        model_name=model_name, thresholds_json=json.dumps(thresholds, sort_keys=True), publish_dir=publish_dir,
        mlflow_tracking_uri=mlflow_tracking_uri, webhook_url=webhook_url, pushgateway_url=pushgateway_url,
    )
    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=[logged, reference, window_statistics, baseline_statistics, labelled, validator],
        enable_cache=False,  # the window moves; the baseline has its own cache, keyed by model version and data
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args or [],
    )


def latest_report(metadata_path: str) -> tuple[dict, str]:
    """The newest DriftReport in a local run's ML Metadata: its summary and its folder."""
    reports = read_only_store(metadata_path).get_artifacts_by_type(DriftReport.TYPE_NAME)
    if not reports:
        raise FileNotFoundError(f"no drift report in {metadata_path}")
    newest = max(reports, key=lambda report: report.id)
    with open(os.path.join(newest.uri, SUMMARY_FILE), encoding="utf-8") as handle:
        return json.load(handle), newest.uri
