"""The whole pipeline, every real TFX component, on the committed sample (plus some bad files)."""

import glob
import io
import json
import os
import pathlib

import numpy as np
import pytest
import tensorflow as tf
from ml_metadata.proto import metadata_store_pb2
from mlflow.tracking import MlflowClient
from PIL import Image, ImageDraw
from tensorflow_model_analysis import load_validation_result
from tensorflow_serving.apis import prediction_log_pb2

from components import features
from pipelines.metadata import read_only_store
from radassist import cli
from radassist.contract import EXPLAIN_OUTPUTS, PREDICTION_OUTPUTS, ModelInfo, Signature

pytestmark = pytest.mark.slow
COMPONENTS = {"CtExampleGen", "LeakageAudit", "StatisticsGen", "SchemaGen", "ExampleValidator", "Transform",
              "Trainer", "latest_blessed_model_resolver", "Evaluator", "Pusher", "MlflowRegistrar"}


@pytest.fixture(scope="module")
def run(first_pipeline_run):
    """A second run on the same outputs: compared with the first (blessed) model as baseline and, with a floor
    no model can reach, refused and not pushed.
    """
    assert cli.main(first_pipeline_run["args"] + ["--seed", "2", "--accuracy-floor", "1.01"]) == 0
    return first_pipeline_run


def subprocess_lines(command: list[str]) -> list[str]:
    import subprocess

    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()


def _store(output):
    return read_only_store(str(output / "tfx" / "metadata.sqlite"))


def _node_executions(store, node_id: str):
    context = store.get_context_by_type_and_name("node", f"radassist.{node_id}")
    return sorted(store.get_executions_by_context(context.id), key=lambda e: e.id)


def test_every_component_completes_in_both_runs(run):
    store = _store(run["output"])
    assert len(store.get_contexts_by_type("pipeline_run")) == 2
    for node_id in COMPONENTS:
        states = [e.last_known_state for e in _node_executions(store, node_id)]
        assert states == [metadata_store_pb2.Execution.COMPLETE] * 2, (node_id, states)


def test_bad_files_are_skipped_and_leaks_recorded_in_mlmd(run):
    store = _store(run["output"])
    report = max(store.get_artifacts_by_type("radassist.LeakageReport"), key=lambda a: a.id)
    counts = {k: v.int_value for k, v in report.custom_properties.items() if k != "data_fingerprint"}
    assert counts["train_examples"] == 40 and counts["test_examples"] == 40  # bad files skipped
    assert counts["test_leaked_exact"] == 4
    assert counts["label_conflict_groups"] == 1 and counts["train_dropped_label_conflicts"] == 2
    assert len(report.custom_properties["data_fingerprint"].string_value) == 64


def _versions(output):
    return sorted(glob.glob(str(output / "models" / "radassist" / "*")))


def test_pushed_models_use_tf_serving_layout(run):
    versions = _versions(run["output"])
    assert len(versions) == 1  # the second run was not blessed, so it was not pushed
    for version in versions:
        assert os.path.basename(version).isdigit()
        assert os.path.isfile(os.path.join(version, "saved_model.pb"))
        warmup = os.path.join(version, "assets.extra", "tf_serving_warmup_requests")
        records = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(warmup)]
        assert records[0].predict_log.request.model_spec.signature_name == Signature.PREDICT_IMAGE


def test_pushed_model_answers_predict_image_and_explain(run):
    model = tf.saved_model.load(_versions(run["output"])[-1])
    assert set(model.signatures) == {Signature.SERVING_DEFAULT, Signature.PREDICT_IMAGE, Signature.EXPLAIN,
                                     Signature.MODEL_INFO}
    info = ModelInfo.from_json(model.signatures[Signature.MODEL_INFO](request=tf.constant([b""]))["model_info"]
                               .numpy()[0])
    assert info == ModelInfo.from_saved_model(_versions(run["output"])[-1])  # the signature and the file agree
    assert info.class_names == features.CLASS_NAMES and set(info.signatures) == set(model.signatures)
    paths = sorted(glob.glob(str(run["data"] / "test" / "*" / "*.png")))[:3]
    images = tf.constant([pathlib.Path(p).read_bytes() for p in paths])
    predicted = model.signatures[Signature.PREDICT_IMAGE](images=images)
    probabilities = predicted["probabilities"].numpy()
    assert probabilities.shape == (3, features.NUM_CLASSES)
    assert abs(probabilities.sum(axis=1) - 1).max() < 1e-4
    names = [n.decode() for n in predicted["class_name"].numpy()]
    assert names == [features.CLASS_NAMES[i] for i in predicted["class_id"].numpy()]
    explained = model.signatures[Signature.EXPLAIN](images=images[:1])
    heatmap = explained["heatmap"].numpy()
    assert heatmap.shape[1:] == (28, 28) and heatmap.min() >= 0 and heatmap.max() <= 1.0 + 1e-6
    assert abs(explained["probabilities"].numpy()[0] - probabilities[0]).max() < 1e-4
    example = tf.train.Example()
    example.features.feature[features.IMAGE_KEY].bytes_list.value.append(images.numpy()[0])
    served = model.signatures[Signature.SERVING_DEFAULT](examples=tf.constant([example.SerializeToString()]))
    assert abs(served["probabilities"].numpy()[0] - probabilities[0]).max() < 1e-4
    for outputs in (predicted, served):
        assert set(outputs) == set(PREDICTION_OUTPUTS)
    assert set(explained) == set(EXPLAIN_OUTPUTS)
    assert predicted[features.CROP_BOX_KEY].shape == (3, 4) and predicted[features.CROP_ANGLE_KEY].shape == (3,)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_pushed_model_withholds_what_is_not_a_ct_slice(run):
    """The out-of-distribution gate inside the signatures: a photo, a blank image, a text page and a uniform grey
    image are flagged with a reason; the model info records the gate and how it was fitted."""
    version = _versions(run["output"])[-1]
    model = tf.saved_model.load(version)
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 255, (200, 260, 3), dtype=np.uint8)
    page = Image.new("L", (400, 520), 255)
    draw = ImageDraw.Draw(page)
    for line in range(20):
        draw.text((20, 20 + 24 * line), "patient report lung window series " * 2, fill=0)
    pictures = [_png(photo), _png(np.zeros((300, 300), np.uint8)), _png(np.asarray(page)),
                _png(np.full((256, 256), 128, np.uint8))]
    outputs = model.signatures[Signature.PREDICT_IMAGE](images=tf.constant(pictures))
    assert not outputs["in_domain"].numpy().any()
    reasons = [r.decode() for r in outputs["ood_reason"].numpy()]
    assert reasons[0] == "not_greyscale" and reasons[1] == reasons[3] == "blank" and reasons[2], reasons
    with open(os.path.join(version, "assets.extra", "radassist_model.json")) as handle:
        info = json.load(handle)
    assert info["ood_gate"]["threshold"] > 0 and info["ood_gate"]["train_examples"] >= 30
    assert "unlike_training_images" in info["ood_gate"]["reasons"] and 0.4 <= info["uncertain_below"] <= 0.95


def test_second_run_is_evaluated_against_the_blessed_baseline(run):
    store = _store(run["output"])
    first, second = _node_executions(store, "Evaluator")

    def input_keys(execution):
        events = store.get_events_by_execution_ids([execution.id])
        return {e.path.steps[0].key for e in events if e.type == metadata_store_pb2.Event.INPUT}

    assert "baseline_model" not in input_keys(first)
    assert "baseline_model" in input_keys(second)
    first_evaluation, second_evaluation = sorted(store.get_artifacts_by_type("ModelEvaluation"), key=lambda a: a.id)
    assert load_validation_result(first_evaluation.uri).validation_ok
    assert not load_validation_result(second_evaluation.uri).validation_ok


def test_mlflow_logs_every_run_and_registers_only_pushed_models(run):
    client = MlflowClient(tracking_uri="sqlite:///" + str(run["output"] / "mlflow" / "mlflow.db"))
    experiment = client.get_experiment_by_name("radassist-training")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    assert [r.data.tags["blessed"] for r in runs] == ["true", "false"]
    assert [r.data.params["seed"] for r in runs] == ["1", "2"]
    for logged in runs:
        metrics = logged.data.metrics
        assert {"overall/accuracy", "overall/macro_f1", "leaked_0/accuracy", "leaked_1/accuracy"} <= set(metrics)
        assert metrics["audit/test_leaked_exact"] == 4
        artifacts = {a.path for a in client.list_artifacts(logged.info.run_id, "plots")}
        assert {"plots/roc.png", "plots/confusion_overall.png", "plots/confusion_leaked_0.png"} <= artifacts
        # The out-of-distribution gate's threshold and what it was fitted on, and the review line.
        assert float(logged.data.params["model.ood_gate.threshold"]) > 0
        assert int(logged.data.params["model.ood_gate.train_examples"]) >= 30
        assert 0.4 <= float(logged.data.params["model.uncertain_below"]) <= 0.95
    (version,) = client.search_model_versions("name='radassist'")
    assert version.run_id == runs[0].info.run_id
    assert version.tags["tfx.pipeline_run_id"] == runs[0].data.tags["tfx.pipeline_run_id"] != "unknown"
    assert len(version.tags["data_fingerprint"]) == 64
    assert version.source == _versions(run["output"])[0]


def test_retraining_on_confirmed_cases_records_its_data_version_and_promotes_by_rule(run, tmp_path):
    """feedback export -> `radassist retrain`: a new data version, the training pipeline on it (staged push), the
    held-back comparison with the served model, then the promoted version carries its data version. (The rule's
    refusals: tests/test_retraining.py; the Evaluator's: the second run above.)"""
    import shutil

    from test_data_registry import same_tree
    from test_retraining import feedback_export, shifted_test_cases

    from components import retraining

    output = tmp_path / "outputs"
    shutil.copytree(run["output"], output)  # its ML Metadata knows the last blessed model
    before = sorted(os.listdir(output / "models" / "radassist"))
    labels, images = feedback_export(tmp_path / "export", shifted_test_cases())
    registry = ["--data-registry", str(tmp_path / "registry")]
    assert cli.main(["data", "init", *registry, "--output", str(output)]) == 0
    assert cli.main(["retrain", "--feedback", labels, "--images", images, "--data", str(run["data"]), "--output",
                     str(output), "--quick", "--seed", "3", "--accuracy-floor", "0", "--holdout-share", "0.25",
                     "--regression-tolerance", "1", "--holdout-tolerance", "1", *registry]) == 0
    (version_root,) = glob.glob(str(output / "data-versions" / "*"))
    manifest = json.loads(pathlib.Path(version_root, retraining.MANIFEST).read_text())
    assert len(manifest["confirmed_train"]) + len(manifest["confirmed_holdout"]) == 40
    assert manifest["confirmed_holdout"] and manifest["base_counts"]["test"] == 41  # the sample's 40 + the bad file
    after = sorted(os.listdir(output / "models" / "radassist"))
    (new,) = set(after) - set(before)
    recorded = json.loads((output / "models" / "radassist" / new / retraining.DATA_VERSION_INFO).read_text())
    assert recorded["data_version"] == manifest["id"] == os.path.basename(version_root)
    assert ModelInfo.from_saved_model(str(output / "models" / "radassist" / new)) is not None
    # The data version is a DVC revision of the registry, recorded by the model itself, ML Metadata and MLflow.
    info = json.loads((output / "models" / "radassist" / new / "assets.extra" / "radassist_model.json").read_text())
    revision = info["data_version"]
    assert revision["id"] == manifest["id"] and revision["rev"] == recorded["dvc"]["rev"]
    log = subprocess_lines(["git", "-C", str(tmp_path / "registry"), "log", "--format=%H"])
    assert revision["rev"] == log[0] and len(log) == 2  # the registry's start, then this data version
    trainer = _node_executions(_store(output), "Trainer")[-1]
    assert revision["rev"] in trainer.custom_properties["custom_config"].string_value
    client = MlflowClient(tracking_uri="sqlite:///" + str(output / "mlflow" / "mlflow.db"))
    newest = client.search_runs([client.get_experiment_by_name("radassist-training").experiment_id],
                                order_by=["attributes.start_time DESC"])[0]
    assert newest.data.params["data_root"] == version_root
    assert newest.data.params["data.rev"] == revision["rev"] and newest.data.params["data.md5"] == revision["md5"]
    # Rebuildable from its record: `radassist data pull --model` restores exactly the data it was trained on.
    assert cli.main(["data", "pull", "--model", str(output / "models" / "radassist" / new),
                     "--out", str(tmp_path / "rebuilt")]) == 0
    assert same_tree(str(tmp_path / "rebuilt"), version_root)
