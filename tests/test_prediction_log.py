"""Request logging as TF Serving's ``logging_config``: the model config file names where and how much; a real
server writes PredictionLog records (request, response, model spec, sampling) per model version, from gRPC and REST
alike, that TensorFlow reads back; a model without a logging config is not logged."""

import base64
import glob
import os
import shutil

import numpy as np
import pytest
import requests
from contract_model import disc_png

from radassist.contract import MODEL_NAME, SEGMENTATION_MODEL_NAME, Input, Output, Signature
from serving.client import ServingClient
from serving.model_config import ModelConfigError, ServedModel, format_model_config, parse_model_config
from serving.prediction_log import RECORDS_PER_FILE, LoggingConfig, PredictionLogger, read_prediction_logs


def test_logging_config_is_tf_servings_and_round_trips():
    models = parse_model_config('''
        model_config_list { config {
          name: "radassist" base_path: "/models/radassist" model_platform: "tensorflow"
          logging_config { log_collector_config { filename_prefix: "/logs/predictions" }
                           sampling_config { sampling_rate: 0.25 } } } }''')
    assert models[0].logging == LoggingConfig("/logs/predictions", 0.25)
    assert parse_model_config(format_model_config(models)) == models
    for broken, message in (('sampling_config { sampling_rate: 1.5 }', "within 0..1"),
                            ('log_collector_config { type: "kafka" filename_prefix: "/l" }', "not supported"),
                            ('sampling_config { sampling_rate: 0.5 }', "filename_prefix")):
        with pytest.raises(ModelConfigError, match=message):
            parse_model_config(f'model_config_list {{ config {{ name: "a" base_path: "/a" '
                               f'logging_config {{ {broken} }} }} }}')


@pytest.fixture(scope="module")
def logging_server(contract_model_base, tmp_path_factory):
    """Both contract models; every classifier call logged, the segmenter not at all."""
    from conftest import ServerProcess

    root = tmp_path_factory.mktemp("logged")
    shutil.copytree(contract_model_base, root / "models")
    logs = root / "logs"
    config = root / "models.config"
    config.write_text(format_model_config([
        ServedModel(MODEL_NAME, str(root / "models" / MODEL_NAME), logging=LoggingConfig(str(logs), 1.0)),
        ServedModel(SEGMENTATION_MODEL_NAME, str(root / "models" / SEGMENTATION_MODEL_NAME))]))
    (root / "empty").mkdir()
    server = ServerProcess(str(root / "empty"), "--model-config-file", str(config)).start()
    yield server, logs
    server.stop()


def test_the_server_logs_sampled_requests_as_prediction_logs(logging_server):
    server, logs = logging_server
    images = [disc_png(6 + i) for i in range(3)]
    with ServingClient(server.address, MODEL_NAME, timeout=60) as client:
        predictions = client.predict(images)
        client.segment(images[0])
    body = {"signature_name": Signature.PREDICT_IMAGE,
            "instances": [{Input.IMAGES: {"b64": base64.b64encode(images[0]).decode()}}]}
    assert requests.post(f"{server.rest}/v1/models/{MODEL_NAME}:predict", json=body, timeout=60).ok
    server.stop()  # finishes the open files
    records = read_prediction_logs(str(logs))
    assert len(records) >= 2  # the gRPC batch is one call, REST another (and the client's model_info calls)
    assert not os.path.exists(logs / SEGMENTATION_MODEL_NAME)  # no logging_config: not logged
    predict_calls = [r for r in records if r.predict_log.request.model_spec.signature_name != Signature.MODEL_INFO]
    first = predict_calls[0]
    assert first.log_metadata.model_spec.name == MODEL_NAME
    assert first.log_metadata.sampling_config.sampling_rate == 1.0
    version = first.log_metadata.model_spec.version.value
    assert os.path.isdir(logs / MODEL_NAME / str(version))
    import tensorflow as tf

    sent = tf.make_ndarray(first.predict_log.request.inputs[Input.IMAGES])
    assert [bytes(v) for v in sent] == images
    probabilities = tf.make_ndarray(first.predict_log.response.outputs[Output.PROBABILITIES])
    np.testing.assert_allclose(probabilities[0], list(predictions[0].probabilities.values()), atol=1e-6)
    assert any(len(tf.make_ndarray(r.predict_log.request.inputs[Input.IMAGES])) == 1 for r in predict_calls)


def test_sampling_rotation_and_a_logger_that_cannot_write(tmp_path):
    inputs = {Input.IMAGES: np.array([b"x"], dtype=object)}
    outputs = {Output.CLASS_ID: np.array([1])}
    logger = PredictionLogger({"m": LoggingConfig(str(tmp_path / "half"), 0.5)}, seed=0)
    logged = sum(logger.log("m", 3, "s", inputs, outputs) for _ in range(2 * RECORDS_PER_FILE))
    logger.close()
    assert 0.45 * 2 * RECORDS_PER_FILE < logged < 0.55 * 2 * RECORDS_PER_FILE
    files = glob.glob(str(tmp_path / "half" / "m" / "3" / "*"))
    assert len(files) == 1 + logged // RECORDS_PER_FILE and not [f for f in files if f.endswith(".partial")]
    assert len(read_prediction_logs(str(tmp_path / "half"))) == logged
    assert not logger.log("other", 1, "s", inputs, outputs)  # a model without logging
    (tmp_path / "blocked").write_text("a file where the folder should be")
    broken = PredictionLogger({"m": LoggingConfig(str(tmp_path / "blocked"), 1.0)})
    assert broken.log("m", 1, "s", inputs, outputs) is False  # the request itself is not failed
