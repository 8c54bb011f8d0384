"""The model server refuses abusive requests early and only answers callers it trusts.

A real server (gRPC and REST on real ports) over a tiny SavedModel built here in seconds: one signature that takes
encoded images and answers their byte lengths, so these tests need no training run.
"""

import base64
import io
import json

import grpc
import pytest
import requests
import tensorflow as tf
from PIL import Image
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving import client as serving_client
from serving.authentication import TlsFiles
from serving.batching import BatchingOptions
from serving.certificates import write_development_pki
from serving.server import ModelServer, ServerConfig
from serving.validation import RequestLimits

MODEL = "tiny"
TOKEN = "a-token-for-the-tests-0123456789"


class _Lengths(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def serve(self, images):
        return {"length": tf.strings.length(images)}


@pytest.fixture(scope="module")
def model_base(tmp_path_factory):
    base = tmp_path_factory.mktemp("tiny-models")
    module = _Lengths()
    tf.saved_model.save(module, str(base / MODEL / "1"), signatures={"serving_default": module.serve})
    return str(base)


def _png(width: int = 64, height: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height), 128).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server(model_base):
    batches = []
    config = ServerConfig(model_base, [MODEL], grpc_port=0, rest_port=0, poll_seconds=30,
                          batching=BatchingOptions(max_batch_size=8, batch_timeout_micros=1000),
                          limits=RequestLimits(max_elements=64, max_request_bytes=2 * 1024 * 1024))
    started = ModelServer(config)
    started.manager.on_batch = batches.append
    started.start()
    started.batches = batches
    yield started
    started.stop()


def _stub(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    return channel, prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _request(proto: tensor_pb2.TensorProto) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.inputs["images"].CopyFrom(proto)
    return request


def _declared(values: list[bytes], shape: list[int]) -> tensor_pb2.TensorProto:
    return tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=values, tensor_shape=tensor_shape_pb2.
                                  TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in shape]))


def test_requests_that_declare_more_elements_than_they_carry_are_refused_before_expansion(server):
    channel, stub = _stub(server)
    with channel:
        for shape, message in (([40], "carries 1 strings"), ([10**12], "at most 64"), ([2, 10**6], "at most 64")):
            with pytest.raises(grpc.RpcError) as refused:
                stub.Predict(_request(_declared([_png()], shape)), timeout=10)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert message in refused.value.details()
        answer = stub.Predict(_request(_declared([_png()] * 3, [3])), timeout=30)
    assert list(tf.make_ndarray(answer.outputs["length"])) == [len(_png())] * 3


def test_requests_larger_than_max_batch_size_run_in_pieces(server):
    images = [_png(64 + i, 64) for i in range(20)]
    server.batches.clear()
    channel, stub = _stub(server)
    with channel:
        answer = stub.Predict(_request(tf.make_tensor_proto(images, dtype=tf.string)), timeout=60)
    assert list(tf.make_ndarray(answer.outputs["length"])) == [len(image) for image in images]  # in order
    assert server.batches and max(server.batches) <= 8 and sum(server.batches) == 20


@pytest.mark.parametrize(("size", "limit"), [((100, 40000), "longer side"), ((2000, 450), "4 times"),
                                             ((7000, 7000), "pixels")])
def test_images_beyond_the_image_policy_are_refused_from_their_header(server, size, limit):
    channel, stub = _stub(server)
    with channel, pytest.raises(grpc.RpcError) as refused:
        stub.Predict(_request(tf.make_tensor_proto([_png(*size)], dtype=tf.string)), timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and limit in refused.value.details()


def test_rest_refuses_large_deep_and_malformed_bodies_with_clear_errors(server):
    url = f"http://127.0.0.1:{server.rest_port}/v1/models/{MODEL}:predict"
    too_large = requests.post(url, data=b"[" * (3 * 1024 * 1024), timeout=10)
    assert too_large.status_code == 413 and "larger than" in too_large.json()["error"]
    deep = requests.post(url, data="[" * 100_000 + "]" * 100_000, timeout=10)
    assert deep.status_code == 400 and "nested" in deep.json()["error"]
    nested = {"instances": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}
    assert requests.post(url, json=nested, timeout=10).status_code == 400
    not_base64 = requests.post(url, json={"instances": [{"b64": "%%% not base64"}]}, timeout=10)
    assert not_base64.status_code == 400 and "base64" in not_base64.json()["error"]
    many = requests.post(url, json={"instances": [{"b64": "aGk="}] * 65}, timeout=10)
    assert many.status_code == 400 and "at most 64" in many.json()["error"]
    assert requests.post(url, data=b"not json", timeout=10).status_code == 400
    good = requests.post(url, json={"instances": [{"b64": base64.b64encode(_png()).decode()}]}, timeout=30)
    assert good.status_code == 200 and good.json()["predictions"] == [len(_png())]


def test_mutual_tls_and_a_bearer_token_keep_out_everyone_else(model_base, tmp_path):
    pki = write_development_pki(str(tmp_path / "pki"), server_names=("model-server",))
    ca = pki["ca"].certificate
    worker_certificate, worker_key = pki["report-worker"].certificate, pki["report-worker"].key
    config = ServerConfig(model_base, [MODEL], grpc_port=0, rest_port=0, poll_seconds=30, token=TOKEN,
                          tls=TlsFiles(pki["server"].certificate, pki["server"].key, client_ca=ca))
    secured = ModelServer(config).start()
    address = f"127.0.0.1:{secured.grpc_port}"
    try:
        def security(**changes):
            values = {"root_ca": ca, "client_certificate": worker_certificate, "client_key": worker_key,
                      "server_name": "model-server", **changes}
            token_file = tmp_path / "token"
            token_file.write_text(changes.pop("token", TOKEN))
            return serving_client.ChannelSecurity.from_files(**{k: v for k, v in values.items() if k != "token"},
                                                             token_file=str(token_file))

        with serving_client.ServingClient(address, MODEL, timeout=10, security=security()) as trusted:
            assert trusted.model_status() == [{"version": 1, "state": "AVAILABLE", "error": ""}]
        with serving_client.ServingClient(address, MODEL, timeout=10, security=security(token="wrong-token"),
                                          retries=0) as wrong_token, pytest.raises(serving_client.Unauthenticated):
            wrong_token.model_status()
        with serving_client.ServingClient(address, MODEL, timeout=5, retries=0,
                                          security=security(client_certificate=None, client_key=None)) as no_cert, \
                pytest.raises(serving_client.ServerUnavailable):  # the TLS handshake fails
            no_cert.model_status()
        with serving_client.ServingClient(address, MODEL, timeout=5, retries=0) as clear_text, \
                pytest.raises(serving_client.ServerUnavailable):
            clear_text.model_status()

        rest = f"https://127.0.0.1:{secured.rest_port}"
        trusted_tls = {"cert": (worker_certificate, worker_key), "verify": ca, "timeout": 10}
        assert requests.get(f"{rest}/healthz", **trusted_tls).status_code == 200  # the cluster's probes
        assert requests.get(f"{rest}/v1/models/{MODEL}", **trusted_tls).status_code == 401
        allowed = requests.get(f"{rest}/v1/models/{MODEL}", headers={"Authorization": f"Bearer {TOKEN}"},
                               **trusted_tls)
        assert allowed.status_code == 200 and json.loads(allowed.text)["model_version_status"][0]["version"] == "1"
        # Without a client certificate (the cluster's probes): health answers, the API still needs the token.
        assert requests.get(f"{rest}/readyz", verify=ca, timeout=10).status_code == 200
        assert requests.get(f"{rest}/v1/models/{MODEL}", verify=ca, timeout=10).status_code == 401
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{rest}/healthz", timeout=10)  # a client that does not trust the server's CA
    finally:
        secured.stop()


def test_the_server_binds_to_localhost_unless_told_otherwise():
    assert ServerConfig("unused", [MODEL]).host == "127.0.0.1"
