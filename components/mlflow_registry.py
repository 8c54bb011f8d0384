"""MlflowRegistrar: logs every pipeline run to MLflow and registers every pushed model.

Logged: training parameters, the audit counts, TFMA metrics for every slice (overall, leaked=0/1, by
class), the confusion matrix and one-vs-rest ROC plots, and the blessing. A pushed model becomes a new
version of the registered model, tagged with the TFX pipeline run id, the data fingerprint and the
serving version directory.
"""

import contextlib
import json
import logging
import os
import re
import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from tfx import types  # noqa: E402
from tfx.dsl.components.base import base_component, base_executor, executor_spec  # noqa: E402
from tfx.types import artifact_utils, standard_artifacts  # noqa: E402
from tfx.types.component_spec import ChannelParameter, ExecutionParameter  # noqa: E402

from components import evaluation, features  # noqa: E402
from components.leakage_audit import REPORT_FILE, LeakageReport  # noqa: E402
from radassist.contract import MODEL_INFO_PATH  # noqa: E402

log = logging.getLogger(__name__)


def _metric_name(slice_name: str, metric: str) -> str:
    """An MLflow metric name (alphanumerics, ``_-./ :``) for a TFMA slice and metric: ``leaked=0`` ->
    ``leaked_0/accuracy``, ``nodule_size=>=150px`` -> ``nodule_size_ge150px/dice``."""
    clean = slice_name.replace(">=", "ge").replace("<", "lt").replace("=", "_").replace(",", "__")
    return re.sub(r"[^\w\-/ :]", "_", f"{clean}/{metric}".replace(".", "_"))


def plot_confusion(matrix: np.ndarray, title: str, path: str) -> None:
    figure, axes = plt.subplots(figsize=(6, 5))
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(features.NUM_CLASSES), features.CLASS_DISPLAY_NAMES, rotation=30, ha="right")
    axes.set_yticks(range(features.NUM_CLASSES), features.CLASS_DISPLAY_NAMES)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    for (i, j), count in np.ndenumerate(matrix):
        axes.text(j, i, int(count), ha="center", va="center")
    axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def plot_roc(roc: dict, aucs: dict, path: str) -> None:
    figure, axes = plt.subplots(figsize=(6, 5))
    for name, points in roc.items():
        fpr, tpr = zip(*([(0.0, 0.0)] + list(points) + [(1.0, 1.0)]), strict=True)
        axes.plot(fpr, tpr, label=f"{name} (AUC {aucs.get(name, float('nan')):.3f})")
    axes.plot([0, 1], [0, 1], "k--", linewidth=0.5)
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.set_title("One-vs-rest ROC, official test split")
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def read_model_info(model_uri: str) -> dict:
    """The trained model's info file (components/trainer/export.py) under a Trainer's model artifact; {} if none."""
    pattern = os.path.join(model_uri, "*", MODEL_INFO_PATH)
    for path in sorted(tf.io.gfile.glob(pattern)):
        with tf.io.gfile.GFile(path) as handle:
            return json.load(handle)
    return {}


def model_info_params(info: dict) -> dict:
    """The model info's calibration and out-of-distribution gate figures as flat MLflow parameters."""
    gate = info.get("ood_gate", {})
    params = {"model.temperature": info.get("calibration", {}).get("temperature"),
              "model.uncertain_below": info.get("uncertain_below")}
    params.update({f"model.ood_gate.{key}": gate.get(key)
                   for key in ("threshold", "quantile", "train_examples", "held_out_distances", "cross_fit_folds",
                               "ledoit_wolf_shrinkage", "feature_dimensions")})
    return {key: value for key, value in params.items() if value is not None}


def log_pipeline_run(
    *,
    tracking_uri: str,
    experiment: str,
    registered_model_name: str,
    pipeline_run_id: str,
    description: str = "",
    params: dict,
    audit: dict,
    results: dict,
    blessed: bool,
    pushed_dir: str | None,
    model_uri: str,
    model_info: dict | None = None,
) -> dict:
    """Logs one pipeline run; returns {"run_id", "registered_version"} (version None when nothing was pushed)."""
    with _tracking(tracking_uri):
        return _log_pipeline_run(tracking_uri=tracking_uri, experiment=experiment,
                                 registered_model_name=registered_model_name, pipeline_run_id=pipeline_run_id,
                                 description=description, params=params, audit=audit, results=results,
                                 blessed=blessed, pushed_dir=pushed_dir, model_uri=model_uri, model_info=model_info)


@contextlib.contextmanager
def _tracking(uri: str):
    """MLflow's tracking URI for the block only: MLflow keeps it process-wide and in $MLFLOW_TRACKING_URI, so a
    second pipeline run in the same process (another task's, with another store) would otherwise log into this
    one's store."""
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def _log_pipeline_run(*, tracking_uri: str, experiment: str, registered_model_name: str, pipeline_run_id: str,
                      description: str, params: dict, audit: dict, results: dict, blessed: bool,
                      pushed_dir: str | None, model_uri: str, model_info: dict | None) -> dict:
    mlflow.set_experiment(experiment)
    fingerprint = audit.get("data_fingerprint", "")
    with mlflow.start_run(run_name=f"tfx-{pipeline_run_id}") as run:
        mlflow.set_tags({"tfx.pipeline_run_id": pipeline_run_id, "data_fingerprint": fingerprint,
                         "blessed": str(blessed).lower(), "trainer.model_uri": model_uri})
        mlflow.log_params({k: v for k, v in params.items() if v is not None})
        mlflow.log_params(model_info_params(model_info or {}))
        mlflow.log_metrics({f"audit/{k}": v for k, v in audit.get("counts", {}).items()})
        for slice_name, values in results["metrics"].items():
            mlflow.log_metrics({_metric_name(slice_name, k): v for k, v in values.items() if np.isfinite(v)})
        with tempfile.TemporaryDirectory() as tmp:
            for slice_name, matrix in results["confusion_matrices"].items():
                path = os.path.join(tmp, f"confusion_{slice_name.replace('=', '_')}.png")
                plot_confusion(np.array(matrix), f"Confusion matrix, test ({slice_name})", path)
                mlflow.log_artifact(path, "plots")
            if results["roc"]:
                aucs = {
                    name: results["metrics"].get("overall", {}).get(f"auc/{name}", float("nan"))
                    for name in results["roc"]
                }
                path = os.path.join(tmp, "roc.png")
                plot_roc(results["roc"], aucs, path)
                mlflow.log_artifact(path, "plots")
            if model_info:
                path = os.path.join(tmp, os.path.basename(MODEL_INFO_PATH))
                with open(path, "w") as handle:
                    json.dump(model_info, handle, indent=2)
                mlflow.log_artifact(path)
            path = os.path.join(tmp, "evaluation.json")
            with open(path, "w") as handle:
                json.dump({"audit": audit, **results}, handle, indent=2)
            mlflow.log_artifact(path)
        version = None
        if pushed_dir:
            client = MlflowClient()
            try:
                client.get_registered_model(registered_model_name)
            except mlflow.exceptions.MlflowException:
                client.create_registered_model(registered_model_name, description=description or None)
            model_version = client.create_model_version(
                registered_model_name,
                source=pushed_dir,
                run_id=run.info.run_id,
                tags={"tfx.pipeline_run_id": pipeline_run_id, "data_fingerprint": fingerprint,
                      "serving_version": os.path.basename(pushed_dir.rstrip("/"))},
            )
            version = int(model_version.version)
        return {"run_id": run.info.run_id, "registered_version": version}


class MlflowRegistrarSpec(types.ComponentSpec):
    PARAMETERS = {
        "tracking_uri": ExecutionParameter(type=str),
        "experiment": ExecutionParameter(type=str),
        "registered_model_name": ExecutionParameter(type=str),
        "params_json": ExecutionParameter(type=str, optional=True),
        "description": ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {
        "report": ChannelParameter(type=LeakageReport, optional=True),  # the classifier's leakage audit
        "model": ChannelParameter(type=standard_artifacts.Model),
        "evaluation_result": ChannelParameter(type=standard_artifacts.ModelEvaluation),
        "blessing": ChannelParameter(type=standard_artifacts.ModelBlessing),
        "pushed_model": ChannelParameter(type=standard_artifacts.PushedModel),
    }
    OUTPUTS = {}


class MlflowRegistrarExecutor(base_executor.BaseExecutor):
    """Reads the run's audit, evaluation, blessing and push; logs them and registers the pushed model."""

    def Do(self, input_dict, output_dict, exec_properties):  # noqa: N802 - TFX's executor API
        pushed_model = artifact_utils.get_single_instance(input_dict["pushed_model"])
        details = {"counts": {}, "data_fingerprint": ""}
        if input_dict.get("report"):
            with open(os.path.join(artifact_utils.get_single_uri(input_dict["report"]), REPORT_FILE)) as handle:
                details = json.load(handle)
        pushed = bool(pushed_model.get_int_custom_property("pushed"))
        # LocalDagRunner passes the run id in the executor context; on Kubeflow the launcher's environment has it.
        run_id = (self._context.pipeline_run_id if self._context else None) or "unknown"
        outcome = log_pipeline_run(
            tracking_uri=exec_properties["tracking_uri"],
            experiment=exec_properties["experiment"],
            registered_model_name=exec_properties["registered_model_name"],
            description=exec_properties.get("description") or "",
            pipeline_run_id=run_id,
            params=json.loads(exec_properties.get("params_json") or "{}"),
            audit={"counts": details["counts"], "data_fingerprint": details["data_fingerprint"]},
            results=evaluation.load_results(artifact_utils.get_single_uri(input_dict["evaluation_result"])),
            blessed=evaluation.blessed(artifact_utils.get_single_uri(input_dict["blessing"])),
            pushed_dir=pushed_model.get_string_custom_property("pushed_destination") if pushed else None,
            model_uri=artifact_utils.get_single_uri(input_dict["model"]),
            model_info=read_model_info(artifact_utils.get_single_uri(input_dict["model"])),
        )
        log.info("MLflow run %s, registered version %s", outcome["run_id"], outcome["registered_version"])


class MlflowRegistrar(base_component.BaseComponent):
    """Logs every pipeline run to MLflow and registers every pushed model."""

    SPEC_CLASS = MlflowRegistrarSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(MlflowRegistrarExecutor)

    def __init__(self, *, model, evaluation_result, blessing, pushed_model, tracking_uri: str,
                 experiment: str, registered_model_name: str, report=None, params_json: str = "{}",
                 description: str = ""):
        super().__init__(spec=MlflowRegistrarSpec(
            report=report, model=model, evaluation_result=evaluation_result, blessing=blessing,
            pushed_model=pushed_model, tracking_uri=tracking_uri, experiment=experiment,
            registered_model_name=registered_model_name, params_json=params_json, description=description,
        ))
