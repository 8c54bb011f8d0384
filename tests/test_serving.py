"""The model server as a real process, driven through TF Serving's official gRPC stubs and its REST API.

Most tests serve the tiny contract model (tests/contract_model.py); one serves the real pipeline's model end to end.
"""

import base64
import glob
import os
import pathlib
import shutil
import threading
import time

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from conftest import ServerProcess, free_port
from contract_model import CLASS_NAMES, DISPLAY_NAMES, build, grey_png
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from radassist.contract import EXPLAIN_OUTPUTS, PREDICTION_OUTPUTS, Signature
from serving import client as serving_client

pytestmark = pytest.mark.slow  # server processes, hot reloads and restarts: make test runs them, test-fast does not
MODEL = "radassist"


REORDERED = "reordered"  # the contract model trained (as it were) with its classes in reverse order
BARE = "bare"            # a SavedModel without RadAssist's contract


class _Bare(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def predict_image(self, images):
        return {"probabilities": tf.ones([tf.shape(images)[0], 4]) / 4}


@pytest.fixture(scope="module")
def model_base(contract_model_base, tmp_path_factory):
    base = tmp_path_factory.mktemp("serving") / "models"
    shutil.copytree(contract_model_base, base)
    build(str(base / REORDERED / "3"), class_names=tuple(reversed(CLASS_NAMES)), display_names=("N", "S", "L", "A"))
    bare = _Bare()
    tf.saved_model.save(bare, str(base / BARE / "1"), signatures={Signature.PREDICT_IMAGE: bare.predict_image})
    return str(base)


@pytest.fixture(scope="module")
def server(model_base):
    process = ServerProcess(model_base, "--model-name", MODEL, "--model-name", REORDERED, "--model-name",
                            BARE).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def images() -> list[bytes]:
    return [grey_png(level) for level in (20, 90, 160, 230)]


def _version(model_base: str) -> int:
    return max(int(v) for v in os.listdir(os.path.join(model_base, MODEL)))


def test_the_pipelines_model_predicts_and_explains_real_slices(first_pipeline_run, tmp_path):
    """End to end on the real model: the pipeline's push, served, answering over gRPC and REST alike."""
    base = tmp_path / "models"
    shutil.copytree(first_pipeline_run["output"] / "models", base)
    paths = sorted(glob.glob(str(first_pipeline_run["data"] / "test" / "*" / "*.png")))[:4]
    slices = [pathlib.Path(p).read_bytes() for p in paths]
    process = ServerProcess(str(base)).start()
    try:
        with serving_client.ServingClient(process.address, MODEL, timeout=60) as client:
            version, info = client.model_info()
            predictions = client.predict(slices)
            explained = client.explain(slices[0])
        body = {"signature_name": Signature.PREDICT_IMAGE,
                "instances": [{"b64": base64.b64encode(slices[0]).decode()}]}
        rest = requests.post(f"{process.rest}/v1/models/{MODEL}:predict", json=body, timeout=60).json()
    finally:
        process.stop()
    assert version == _version(str(base)) and info.class_names == CLASS_NAMES
    assert info.class_display_names == DISPLAY_NAMES and 0.4 <= info.uncertain_below <= 0.95
    assert len(predictions) == 4
    for prediction in predictions:
        assert prediction.model_version == version
        assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
        assert prediction.class_name == max(prediction.probabilities, key=prediction.probabilities.get)
    assert explained.heatmap.shape == (28, 28) and 0 <= explained.heatmap.min() <= explained.heatmap.max() <= 1
    assert explained.probabilities == pytest.approx(predictions[0].probabilities, abs=1e-4)
    # The out-of-distribution gate and the review line come with every prediction, over gRPC as over REST.
    for prediction in [*predictions, explained]:
        assert isinstance(prediction.in_domain, bool) and isinstance(prediction.needs_review, bool)
        assert prediction.ood_score >= 0 and (prediction.ood_reason == "") == prediction.in_domain
        assert len(prediction.crop_box) == 4 and abs(prediction.crop_angle) <= 15.0
    assert explained.ood_score == pytest.approx(predictions[0].ood_score, rel=1e-4)
    assert set(rest["predictions"][0]) == set(PREDICTION_OUTPUTS)
    assert rest["predictions"][0]["probabilities"] == pytest.approx(list(predictions[0].probabilities.values()),
                                                                    abs=1e-5)


def test_predict_and_explain_follow_the_contract(server, images, model_base):
    with serving_client.ServingClient(server.address, MODEL, timeout=60) as client:
        predictions = client.predict(images)
        explained = client.explain(images[0])
    assert [p.class_name for p in predictions] == list(CLASS_NAMES)  # the contract model's bands, darkest first
    for prediction in predictions:
        assert prediction.model_version == _version(model_base)
        assert list(prediction.probabilities) == list(CLASS_NAMES)
        assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
        assert prediction.in_domain and prediction.ood_reason == "" and not prediction.needs_review
        assert prediction.display_name == DISPLAY_NAMES[prediction.class_id]
    assert explained.heatmap.shape == (28, 28) and 0 <= explained.heatmap.min() <= explained.heatmap.max() <= 1
    assert explained.probabilities == pytest.approx(predictions[0].probabilities, abs=1e-6)
    assert explained.crop_box == (0.0, 0.0, 96.0, 96.0) and explained.crop_angle == 0.0


def test_a_model_is_read_by_its_own_class_order(server):
    """A retrained model with another class order is labelled by its own info, not by training code."""
    with serving_client.ServingClient(server.address, REORDERED, timeout=30) as client:
        version, info = client.model_info()
        dark = client.predict([grey_png(20)])[0]
    assert version == 3 and info.class_names == tuple(reversed(CLASS_NAMES))
    assert dark.class_name == "normal" and dark.class_id == 0 and dark.display_name == "N"
    assert list(dark.probabilities) == list(info.class_names) and dark.confidence == max(dark.probabilities.values())


def test_a_model_without_the_contract_is_refused(server):
    """A SavedModel without ``model_info`` (not exported by RadAssist) is a deployment error, not a prediction."""
    with serving_client.ServingClient(server.address, BARE, timeout=30) as client, \
            pytest.raises(serving_client.ModelContractError, match="model_info"):
        client.predict([grey_png(20)])


def test_model_metadata_lists_the_signatures(server):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(server.address))
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = MODEL
    response = stub.GetModelMetadata(request, timeout=30)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signature_map)
    assert {Signature.SERVING_DEFAULT, Signature.PREDICT_IMAGE, Signature.EXPLAIN, Signature.MODEL_INFO} \
        <= set(signature_map.signature_def)
    assert set(signature_map.signature_def[Signature.EXPLAIN].outputs) == set(EXPLAIN_OUTPUTS)
    assert set(signature_map.signature_def[Signature.PREDICT_IMAGE].outputs) == set(PREDICTION_OUTPUTS)


@pytest.mark.parametrize(
    ("payload", "message"),
    [([b""], "empty"), ([b"this is a radiology report, not an image"], "not a PNG"),
     ([b"\x89PNG\r\n\x1a\n" + b"\x00" * 64], "not a readable image")],
)
def test_bad_images_are_invalid_argument(server, payload, message):
    with serving_client.ServingClient(server.address, MODEL, timeout=30) as client, \
            pytest.raises(serving_client.InvalidInput, match=message):
        client.predict(payload)


def _raw_predict(server, **spec):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(server.address))
    request = predict_pb2.PredictRequest()
    request.model_spec.name = spec.get("name", MODEL)
    request.model_spec.signature_name = spec.get("signature", "predict_image")
    if "version" in spec:
        request.model_spec.version.value = spec["version"]
    request.inputs["images"].CopyFrom(spec.get("tensor", tf.make_tensor_proto([b"x"], dtype=tf.string)))
    with pytest.raises(grpc.RpcError) as failure:
        stub.Predict(request, timeout=30)
    return failure.value.code(), failure.value.details()


def test_status_codes_match_tf_serving(server):
    assert _raw_predict(server, name="no-such-model")[0] == grpc.StatusCode.NOT_FOUND
    assert _raw_predict(server, version=12345)[0] == grpc.StatusCode.NOT_FOUND
    code, details = _raw_predict(server, signature="no_such_signature")
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "not found" in details
    code, details = _raw_predict(server, tensor=tf.make_tensor_proto(np.zeros((1, 3), np.float32)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "DT_STRING" in details


def test_rest_api_answers_like_tf_serving(server, images):
    status = requests.get(f"{server.rest}/v1/models/{MODEL}", timeout=10).json()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    body = {"signature_name": "predict_image", "instances": [{"b64": base64.b64encode(images[0]).decode()}]}
    rest = requests.post(f"{server.rest}/v1/models/{MODEL}:predict", json=body, timeout=60).json()
    with serving_client.ServingClient(server.address, MODEL) as client:
        grpc_probabilities = list(client.predict(images[:1])[0].probabilities.values())
    assert rest["predictions"][0]["probabilities"] == pytest.approx(grpc_probabilities, abs=1e-5)
    assert rest["predictions"][0]["class_name"] in CLASS_NAMES
    gate = {key: rest["predictions"][0][key] for key in ("in_domain", "ood_score", "ood_reason", "needs_review")}
    assert isinstance(gate["in_domain"], bool) and isinstance(gate["ood_reason"], str), gate
    assert len(rest["predictions"][0]["crop_box"]) == 4 and isinstance(rest["predictions"][0]["crop_angle"], float)
    missing = requests.post(f"{server.rest}/v1/models/nope:predict", json=body, timeout=10)
    assert missing.status_code == 404 and "error" in missing.json()
    bad = requests.post(f"{server.rest}/v1/models/{MODEL}:predict", json={"instances": [{"b64": ""}],
                        "signature_name": "predict_image"}, timeout=10)
    assert bad.status_code == 400
    metrics = requests.get(f"{server.rest}/metrics", timeout=10).text
    assert "radassist_serving_requests_total" in metrics and "radassist_serving_loaded_version" in metrics


def test_hot_reload_serves_new_version_without_failed_requests(server, images, model_base):
    old = _version(model_base)
    new = old + 1
    failures, versions, stop = [], [], threading.Event()

    def call_continuously():
        with serving_client.ServingClient(server.address, MODEL, timeout=60) as client:
            while not stop.is_set():
                try:
                    versions.append(client.predict(images[:1])[0].model_version)
                except serving_client.ServingClientError as error:
                    failures.append(error)

    workers = [threading.Thread(target=call_continuously) for _ in range(2)]
    for worker in workers:
        worker.start()
    time.sleep(2)
    staging = os.path.join(model_base, MODEL, f".staging-{new}")
    shutil.copytree(os.path.join(model_base, MODEL, str(old)), staging)
    os.rename(staging, os.path.join(model_base, MODEL, str(new)))  # appears atomically, like a push
    deadline = time.time() + 120
    while time.time() < deadline and (not versions or versions[-1] != new):
        time.sleep(0.5)
    time.sleep(2)
    stop.set()
    for worker in workers:
        worker.join()
    assert not failures
    assert old in versions and versions[-1] == new
    assert versions.index(new) > versions.index(old)
    status = requests.get(f"{server.rest}/v1/models/{MODEL}", timeout=10).json()["model_version_status"]
    assert [(s["version"], s["state"]) for s in status] == [(str(new), "AVAILABLE")]  # the old one is unloaded


def test_broken_version_is_reported_and_never_replaces_a_working_one(server, images, model_base):
    working = _version(model_base)
    broken = os.path.join(model_base, MODEL, str(working + 10))
    os.makedirs(os.path.join(broken, "variables"))
    with open(os.path.join(broken, "saved_model.pb"), "wb") as handle:
        handle.write(b"not a saved model")
    deadline = time.time() + 60
    status = []
    while time.time() < deadline:
        status = requests.get(f"{server.rest}/v1/models/{MODEL}", timeout=10).json()["model_version_status"]
        if any(s["version"] == str(working + 10) for s in status):
            break
        time.sleep(0.5)
    by_version = {s["version"]: s for s in status}
    assert by_version[str(working + 10)]["status"]["error_code"] != "OK"
    assert by_version[str(working)]["state"] == "AVAILABLE"
    with serving_client.ServingClient(server.address, MODEL) as client:
        assert client.predict(images[:1])[0].model_version == working


def test_client_retries_while_the_server_restarts(model_base, images):
    process = ServerProcess(model_base).start()
    process.stop()
    restarted = threading.Timer(1.0, process.start, kwargs={"wait": False})
    restarted.start()
    try:
        with serving_client.ServingClient(process.address, MODEL, timeout=60, retries=8, backoff=0.5) as client:
            prediction = client.predict(images[:1])[0]
        assert prediction.class_name in CLASS_NAMES
    finally:
        restarted.join()
        process.stop()


def test_client_reports_a_server_that_stays_down(images):
    with serving_client.ServingClient(f"127.0.0.1:{free_port()}", MODEL, timeout=2, retries=1,
                                      backoff=0.1) as client, pytest.raises(serving_client.ServerUnavailable):
        client.predict(images[:1])


def test_classify_labels_classes_by_the_models_own_info(server):
    """TF Serving's Classify over tf.Examples: one label and score per class, named by the model's info."""
    example = tf.train.Example()
    example.features.feature["image"].bytes_list.value.append(grey_png(230))
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = MODEL
    request.input.example_list.examples.append(example)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(server.address))
    response = stub.Classify(request, timeout=30)
    (classes,) = response.result.classifications
    assert [c.label for c in classes.classes] == list(CLASS_NAMES)
    assert max(classes.classes, key=lambda c: c.score).label == "normal"  # the contract model's brightest band
