"""ServingClient: typed predictions from TF Serving's gRPC API (RadAssist's server or the real one).

Uses only the official stubs. Every call has a deadline; only UNAVAILABLE is retried, with backoff.
"""

import dataclasses
import random
import time

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from components import features
from serving.authentication import read_file


class ServingClientError(Exception):
    """Base of the client's typed errors."""


class ServerUnavailable(ServingClientError):
    """The model server cannot be reached or has no model loaded (after retries)."""


class ModelNotFound(ServingClientError):
    """The model, version or signature does not exist on the server."""


class InvalidInput(ServingClientError):
    """The server rejected the input (empty, not an image, too large, wrong type)."""


class Unauthenticated(ServingClientError):
    """The server refused the client's credentials (bearer token or TLS client certificate)."""


class DeadlineExceeded(ServingClientError):
    """The call did not finish within its deadline."""


@dataclasses.dataclass(frozen=True)
class Prediction:
    class_name: str
    class_id: int
    probabilities: dict[str, float]
    model_name: str
    model_version: int
    heatmap: np.ndarray | None = None  # [H, W] (28 x 28 by default) in 0..1 over ``crop_box`` (explain only)
    # The out-of-distribution gate and the review line (None from models exported without them).
    in_domain: bool | None = None      # False: outside the images the model was validated on; do not use the class
    ood_score: float | None = None     # distance from the training data / the model's threshold (1.0)
    ood_reason: str | None = None      # "" in domain, else a machine-readable reason ("not_greyscale", ...)
    needs_review: bool | None = None   # top probability under the model's validated "uncertain" line
    crop_box: tuple[float, float, float, float] | None = None  # (y0, x0, y1, x1) in input pixels: what the model saw
    crop_angle: float | None = None    # degrees that square is turned about its centre (the model deskews)

    @property
    def confidence(self) -> float:
        return self.probabilities[self.class_name]


def _map_error(error: grpc.RpcError) -> ServingClientError:
    code, details = error.code(), error.details()
    if code == grpc.StatusCode.UNAVAILABLE:
        return ServerUnavailable(details or "model server unavailable")
    if code == grpc.StatusCode.NOT_FOUND:
        return ModelNotFound(details)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        if "signature" in (details or "").lower() and "not found" in (details or "").lower():
            return ModelNotFound(details)
        return InvalidInput(details)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return Unauthenticated(details or "the model server refused this client's credentials")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(details or "deadline exceeded")
    return ServingClientError(f"{code.name}: {details}")


@dataclasses.dataclass(frozen=True)
class ChannelSecurity:
    """How the client reaches a server that requires TLS and/or a token: PEM bytes, as the server's options."""

    root_ca: bytes | None = None            # CA that signed the server's certificate (TLS on when set)
    client_certificate: bytes | None = None  # mutual TLS: this client's certificate chain and key
    client_key: bytes | None = None
    token: str | None = None                 # sent as "authorization: Bearer <token>" on every call
    server_name: str | None = None           # the name in the server's certificate, when not the address's host

    @classmethod
    def from_files(cls, root_ca: str | None = None, client_certificate: str | None = None,
                   client_key: str | None = None, token_file: str | None = None,
                   server_name: str | None = None) -> "ChannelSecurity":
        token = read_file(token_file)
        return cls(read_file(root_ca), read_file(client_certificate), read_file(client_key),
                   token.decode().strip() if token else None, server_name)


class ServingClient:
    def __init__(self, address: str, model_name: str = "radassist", timeout: float = 30.0, retries: int = 3,
                 backoff: float = 0.5, version: int | None = None, security: ChannelSecurity | None = None):
        self.address, self.model_name, self.timeout = address, model_name, timeout
        self.retries, self.backoff, self.version = retries, backoff, version
        security = security or ChannelSecurity()
        options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
        if security.server_name:
            options.append(("grpc.ssl_target_name_override", security.server_name))
        self._metadata = (("authorization", f"Bearer {security.token}"),) if security.token else None
        if security.root_ca or security.client_certificate:
            credentials = grpc.ssl_channel_credentials(security.root_ca, security.client_key,
                                                       security.client_certificate)
            self._channel = grpc.secure_channel(address, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(address, options=options)
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _call(self, method, request):
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                return method(request, timeout=self.timeout, metadata=self._metadata)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE or attempt == self.retries:
                    raise _map_error(error) from error
            time.sleep(delay * (1 + random.random() * 0.2))
            delay *= 2
        raise ServerUnavailable("unreachable")  # pragma: no cover - the loop always returns or raises

    def _request(self, signature: str, images: list[bytes]) -> predict_pb2.PredictRequest:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.model_name
        request.model_spec.signature_name = signature
        if self.version is not None:
            request.model_spec.version.value = self.version
        request.inputs["images"].CopyFrom(tf.make_tensor_proto(images, dtype=tf.string, shape=[len(images)]))
        return request

    def _predictions(self, response, with_heatmap: bool) -> list[Prediction]:
        outputs = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
        results = []
        def optional(key, i, convert):
            return convert(outputs[key][i]) if key in outputs else None

        for i, probs in enumerate(outputs["probabilities"]):
            class_id = int(outputs["class_id"][i])
            results.append(Prediction(
                class_name=features.CLASS_NAMES[class_id], class_id=class_id,
                probabilities={n: float(p) for n, p in zip(features.CLASS_NAMES, probs, strict=True)},
                model_name=response.model_spec.name, model_version=int(response.model_spec.version.value),
                heatmap=outputs["heatmap"][i] if with_heatmap else None,
                in_domain=optional("in_domain", i, bool), ood_score=optional("ood_score", i, float),
                ood_reason=optional("ood_reason", i, bytes.decode), needs_review=optional("needs_review", i, bool),
                crop_box=optional(features.CROP_BOX_KEY, i, lambda box: tuple(float(v) for v in box)),
                crop_angle=optional(features.CROP_ANGLE_KEY, i, float)))
        return results

    def predict(self, images: list[bytes]) -> list[Prediction]:
        """Class and calibrated probabilities for each encoded image (one call, one batch)."""
        if not images:
            return []
        response = self._call(self._predict.Predict, self._request(features.PREDICT_IMAGE_SIGNATURE, images))
        return self._predictions(response, with_heatmap=False)

    def explain(self, image: bytes) -> Prediction:
        """Prediction plus the Grad-CAM heat map for one encoded image."""
        return self.explain_batch([image])[0]

    def explain_batch(self, images: list[bytes]) -> list[Prediction]:
        """Predictions with Grad-CAM heat maps for several encoded images (one call, one batch)."""
        if not images:
            return []
        response = self._call(self._predict.Predict, self._request(features.EXPLAIN_SIGNATURE, images))
        return self._predictions(response, with_heatmap=True)

    def model_status(self) -> list[dict]:
        """The model's versions as the server reports them: ``version``, ``state`` (TF Serving's name: AVAILABLE,
        LOADING, END, ...) and ``error`` ("" when none)."""
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = self.model_name
        response = self._call(self._models.GetModelStatus, request)
        state_name = get_model_status_pb2.ModelVersionStatus.State.Name
        return [{"version": int(s.version), "state": state_name(s.state), "error": s.status.error_message}
                for s in response.model_version_status]
