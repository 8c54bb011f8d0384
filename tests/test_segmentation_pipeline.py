"""The segmenter's pipeline, every real TFX component, on the committed LIDC-IDRI sample: patient-wise examples,
the consensus built in Transform, TFMA's Dice and IoU by nodule size, the push to radassist-seg and MLflow."""

import glob
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from ml_metadata.proto import metadata_store_pb2
from mlflow.tracking import MlflowClient
from PIL import Image
from tensorflow_serving.apis import prediction_log_pb2

from components import evaluation
from components.segmentation import features
from pipelines.metadata import read_only_store
from radassist.contract import SEGMENT_OUTPUTS, SEGMENTATION_MODEL_NAME, ModelInfo, Output, Signature
from radassist.progress import node_name

pytestmark = pytest.mark.slow
COMPONENTS = {"NoduleExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator", "Transform", "Trainer",
              "latest_blessed_model_resolver", "Evaluator", "Pusher", "MlflowRegistrar"}


def _store(run):
    return read_only_store(str(run["output"] / "tfx" / "metadata.sqlite"))


def _artifact_uri(run, component: str, output: str) -> str:
    return glob.glob(str(run["output"] / "tfx" / "radassist-seg" / component / output / "*"))[0]


def _examples(run, split: str) -> list[tf.train.Example]:
    pattern = os.path.join(_artifact_uri(run, "NoduleExampleGen", "examples"), f"Split-{split}", "*")
    return [tf.train.Example.FromString(record.numpy())
            for record in tf.data.TFRecordDataset(glob.glob(pattern), compression_type="GZIP")]


def _version(run) -> str:
    versions = glob.glob(str(run["output"] / "models" / SEGMENTATION_MODEL_NAME / "*"))
    assert len(versions) == 1 and os.path.basename(versions[0]).isdigit()
    return versions[0]


def test_every_component_completes_in_its_own_pipeline(segmenter_pipeline_run):
    store = _store(segmenter_pipeline_run)
    for node_id in COMPONENTS:
        context = store.get_context_by_type_and_name("node", f"radassist-seg.{node_id}")
        states = [execution.last_known_state for execution in store.get_executions_by_context(context.id)]
        assert states == [metadata_store_pb2.Execution.COMPLETE], (node_id, states)
    # The progress bar names each running step by its node ("NoduleExampleGen", not "FileBasedExampleGen").
    assert {node_name(store, execution) for execution in store.get_executions()} == COMPONENTS


def test_examples_keep_the_manifests_patient_wise_split_and_skip_a_slice_without_its_masks(segmenter_pipeline_run):
    patients, counts = {}, {}
    for split in features.SPLITS:
        examples = _examples(segmenter_pipeline_run, split)
        counts[split] = len(examples)
        patients[split] = {e.features.feature[features.PATIENT_KEY].bytes_list.value[0] for e in examples}
        assert all(len(e.features.feature[features.READER_MASKS_KEY].bytes_list.value) == features.READERS
                   for e in examples)
    assert counts == {"train": 24, "valid": 9, "test": 8}  # 25 train slices in the sample, one lost its masks
    assert not (patients["train"] & patients["valid"]) and not (patients["train"] & patients["test"])
    names = {e.features.feature[features.FILENAME_KEY].bytes_list.value[0].decode()
             for e in _examples(segmenter_pipeline_run, "train")}
    assert f"images/{segmenter_pipeline_run['skipped']}.png" not in names


def test_transform_builds_the_two_of_four_consensus(segmenter_pipeline_run):
    version = _version(segmenter_pipeline_run)
    transform = tf.saved_model.load(version).signatures["transform_features"]
    example = _examples(segmenter_pipeline_run, "test")[0]
    masks = [np.asarray(Image.open(io.BytesIO(encoded))) > 0
             for encoded in example.features.feature[features.READER_MASKS_KEY].bytes_list.value]
    expected = np.sum(masks, axis=0) >= 2
    transformed = transform(examples=tf.constant([example.SerializeToString()]))
    np.testing.assert_array_equal(transformed[features.MASK_KEY].numpy()[0, ..., 0] > 0.5, expected)
    assert int(transformed[features.CONSENSUS_AREA_KEY].numpy()[0]) == expected.sum()
    grey = transformed[features.GREY_KEY].numpy()
    assert grey.shape == (1, features.CROP_SIZE, features.CROP_SIZE, 1) and 0.0 <= grey.min() < grey.max() <= 1.0


def test_tfma_scores_dice_and_iou_overall_and_by_nodule_size(segmenter_pipeline_run):
    results = evaluation.load_results(_artifact_uri(segmenter_pipeline_run, "Evaluator", "evaluation"))["metrics"]
    assert results["overall"]["example_count"] == 8
    assert 0.0 <= results["overall"]["dice"] <= 1.0 and 0.0 <= results["overall"]["iou"] <= results["overall"]["dice"]
    sizes = [name for name in results if name.startswith(f"{features.SIZE_BIN_KEY}=")]
    assert sizes and sum(results[name]["example_count"] for name in sizes) == 8
    blessing = _artifact_uri(segmenter_pipeline_run, "Evaluator", "blessing")
    assert evaluation.blessed(blessing)  # floor 0 and no earlier segmenter: blessed


def test_the_pushed_segmenter_outlines_and_measures_any_size_of_slice(segmenter_pipeline_run):
    version = _version(segmenter_pipeline_run)
    model = tf.saved_model.load(version)
    assert set(model.signatures) == {Signature.SEGMENT, Signature.SERVING_DEFAULT, "transform_features",
                                     Signature.MODEL_INFO}
    info = ModelInfo.from_json(model.signatures[Signature.MODEL_INFO](request=tf.constant([""]))[
        Output.MODEL_INFO].numpy()[0])
    assert info.class_names == ("background", "nodule") and 0.0 < info.lesion_threshold < 1.0
    crop = _examples(segmenter_pipeline_run, "test")[0].features.feature[features.IMAGE_KEY].bytes_list.value[0]
    wide = io.BytesIO()
    Image.fromarray(np.tile(np.asarray(Image.open(io.BytesIO(crop))), (1, 3))[:100]).save(wide, format="PNG")
    outputs = model.signatures[Signature.SEGMENT](images=tf.constant([crop, wide.getvalue()]))
    assert set(outputs) == set(SEGMENT_OUTPUTS)
    assert outputs[Output.IMAGE_SIZE].numpy().tolist() == [[128, 128], [100, 384]]
    probability = outputs[Output.PROBABILITY_MAP].numpy()
    assert probability.shape == (2, 128, 384) and probability.min() >= 0.0 and probability.max() <= 1.0
    assert not probability[0, :, 128:].any() and not probability[1, 100:].any()  # padding is 0
    count = outputs[Output.LESION_COUNT].numpy()
    area = outputs[Output.LESION_AREA].numpy()
    for row in range(2):  # the lesions are the map's components at the model's threshold, largest first
        shown = min(count[row], area.shape[1])
        assert (np.diff(area[row, :shown]) <= 0).all() and not area[row, shown:].any()
        assert area[row, :shown].sum() <= (probability[row] >= info.lesion_threshold).sum()
    with open(os.path.join(version, "assets.extra", "radassist_model.json")) as handle:
        recorded = json.load(handle)
    assert recorded["lesion_threshold"] == info.lesion_threshold and recorded["train_examples"] == 24
    assert recorded["intensity"].startswith("min-max")
    warmup = os.path.join(version, "assets.extra", "tf_serving_warmup_requests")
    (record,) = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(warmup)]
    assert record.predict_log.request.model_spec.signature_name == Signature.SEGMENT


def test_mlflow_registers_the_segmenter_under_its_own_name(segmenter_pipeline_run):
    tracking = "sqlite:///" + str(segmenter_pipeline_run["output"] / "mlflow" / "mlflow.db")
    client = MlflowClient(tracking_uri=tracking)
    registered = client.get_registered_model(SEGMENTATION_MODEL_NAME)
    assert "segmenter" in registered.description
    version = client.get_model_version(SEGMENTATION_MODEL_NAME, "1")
    assert version.source == _version(segmenter_pipeline_run)
    run = client.get_run(version.run_id)
    assert "overall/dice" in run.data.metrics and run.data.params["task"] == "segmenter"
    assert any(name.startswith("nodule_size_") for name in run.data.metrics)
