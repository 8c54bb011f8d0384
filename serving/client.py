"""ServingClient: typed predictions from TF Serving's gRPC API (RadAssist's server or the real one).

Speaks TF Serving's own messages (serving/tf_serving_api.py: tensorflow-serving-api's descriptors without
TensorFlow, so the portal's worker installs without it). Every call has a deadline; only UNAVAILABLE is retried,
with backoff. The client knows the contract's names (radassist/contract.py) and nothing of training: each model
version's class order and display names come from the version itself (its ``model_info`` signature), and every
answer is checked against them.
"""

import dataclasses
import random
import threading
import time

import grpc
import numpy as np

from radassist.contract import (
    LESION_OUTPUTS,
    MODEL_NAME,
    SEGMENTATION_MODEL_NAME,
    ContractError,
    Input,
    ModelInfo,
    Output,
    Signature,
)
from serving import tf_serving_api as api
from serving.authentication import read_file

PredictRequest = api.message_class("tensorflow.serving.PredictRequest")
PredictResponse = api.message_class("tensorflow.serving.PredictResponse")
GetModelStatusRequest = api.message_class("tensorflow.serving.GetModelStatusRequest")
GetModelStatusResponse = api.message_class("tensorflow.serving.GetModelStatusResponse")


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


class ModelContractError(ServingClientError):
    """The served model does not follow RadAssist's model contract (no ``model_info``, or answers that disagree
    with it): a deployment error, not bad input."""


@dataclasses.dataclass(frozen=True)
class Prediction:
    class_name: str
    class_id: int
    probabilities: dict[str, float]
    model_name: str
    model_version: int
    display_names: dict[str, str] = dataclasses.field(default_factory=dict)  # class name -> name for people
    heatmap: np.ndarray | None = None  # [H, W] (28 x 28 by default) in 0..1 over ``crop_box`` (explain only)
    # The out-of-distribution gate and the review line (None from models exported without them).
    in_domain: bool | None = None      # False: outside the images the model was validated on; do not use the class
    ood_score: float | None = None     # distance from the training data / the model's threshold (1.0)
    ood_reason: str | None = None      # "" in domain, else a machine-readable reason ("not_greyscale", ...)
    needs_review: bool | None = None   # top probability under the model's validated "uncertain" line
    crop_box: tuple[float, float, float, float] | None = None  # (y0, x0, y1, x1) in input pixels: what the model saw
    crop_angle: float | None = None    # degrees that square is turned about its centre (the model deskews)
    negative_classes: tuple[str, ...] = ()  # the model's "no cancer" classes (its info); () when it does not say

    @property
    def confidence(self) -> float:
        return self.probabilities[self.class_name]

    @property
    def cancer_probability(self) -> float | None:
        """The probability of any class but the model's negative ones (None when the model names none)."""
        if not self.negative_classes:
            return None
        return max(0.0, 1.0 - sum(self.probabilities[name] for name in self.negative_classes))

    @property
    def display_name(self) -> str:
        return self.display_names.get(self.class_name, self.class_name)


@dataclasses.dataclass(frozen=True)
class Lesion:
    """One connected component of the segmenter's map at its threshold, in input pixels."""

    area: float                       # px
    centroid: tuple[float, float]     # (y, x)
    long_axis: float                  # px: the largest in-plane diameter
    short_axis: float                 # px: the width perpendicular to it
    long_axis_angle: float            # degrees from the x axis (y down)
    box: tuple[float, float, float, float]  # (y0, x0, y1, x1)
    mean_probability: float
    max_probability: float


@dataclasses.dataclass(frozen=True)
class Segmentation:
    """The segmenter's answer for one image."""

    probability: np.ndarray           # float32 [H, W]: nodule probability per input pixel
    lesions: tuple[Lesion, ...]       # largest first (at most the model's max; ``lesion_count`` counts them all)
    lesion_count: int
    threshold: float                  # the model's lesion threshold (chosen on validation)
    model_name: str
    model_version: int

    @property
    def mask(self) -> np.ndarray:
        """bool [H, W]: the pixels the lesions are made of."""
        return self.probability >= self.threshold


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
    """The classifier (``model_name``, optionally pinned to ``version``) and the segmenter
    (``segmentation_model_name``, its newest version) of one model server."""

    def __init__(self, address: str, model_name: str = MODEL_NAME, timeout: float = 30.0, retries: int = 3,
                 backoff: float = 0.5, version: int | None = None, security: ChannelSecurity | None = None,
                 segmentation_model_name: str = SEGMENTATION_MODEL_NAME):
        self.address, self.model_name, self.timeout = address, model_name, timeout
        self.segmentation_model_name = segmentation_model_name
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
        self._predict = self._channel.unary_unary(
            api.PREDICT_METHOD, request_serializer=PredictRequest.SerializeToString,
            response_deserializer=PredictResponse.FromString)
        self._model_status = self._channel.unary_unary(
            api.GET_MODEL_STATUS_METHOD, request_serializer=GetModelStatusRequest.SerializeToString,
            response_deserializer=GetModelStatusResponse.FromString)
        self._infos: dict[tuple[str, int], ModelInfo] = {}  # per model and version: a version never changes
        self._infos_lock = threading.Lock()

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

    def _request(self, signature: str, values: list[bytes], input_name: str = Input.IMAGES,
                 version: int | None = None, model_name: str | None = None):
        request = PredictRequest()
        request.model_spec.name = model_name or self.model_name
        request.model_spec.signature_name = signature
        if model_name in (None, self.model_name) and version is None:
            version = self.version  # the pin is the classifier's
        if version is not None:
            request.model_spec.version.value = version
        request.inputs[input_name].CopyFrom(api.string_tensor(values))
        return request

    def model_info(self, version: int | None = None, model_name: str | None = None) -> tuple[int, ModelInfo]:
        """(version, ModelInfo) of ``version`` of ``model_name`` (default: the classifier, at the client's pinned
        version, else the newest served)."""
        model_name = model_name or self.model_name
        if model_name == self.model_name and version is None:
            version = self.version
        if version is not None and (model_name, version) in self._infos:
            return version, self._infos[model_name, version]
        try:
            response = self._call(self._predict, self._request(Signature.MODEL_INFO, [b""], Input.REQUEST, version,
                                                               model_name))
        except ModelNotFound as error:
            if "signature" not in str(error).lower():
                raise
            raise ModelContractError(f"model {model_name!r} has no {Signature.MODEL_INFO!r} signature: it was "
                                     "exported without RadAssist's model contract") from error
        served_version = int(response.model_spec.version.value)
        try:
            info = ModelInfo.from_json(api.to_ndarray(response.outputs[Output.MODEL_INFO])[0])
        except (KeyError, IndexError, ContractError) as error:
            raise ModelContractError(f"model {model_name!r} version {served_version}: unreadable model "
                                     f"info ({error})") from error
        with self._infos_lock:
            self._infos[model_name, served_version] = info
        return served_version, info

    def _predictions(self, response, with_heatmap: bool) -> list[Prediction]:
        version = int(response.model_spec.version.value)
        _, info = self.model_info(version)  # of the version that answered (hot reload may have changed it)
        outputs = {k: api.to_ndarray(v) for k, v in response.outputs.items()}
        missing = {Output.PROBABILITIES, Output.CLASS_ID, Output.CLASS_NAME} - set(outputs)
        if with_heatmap and Output.HEATMAP not in outputs:
            missing.add(Output.HEATMAP)
        if missing:
            raise ModelContractError(f"model {response.model_spec.name!r} version {version} gave no "
                                     f"{sorted(missing)}")
        names = info.class_names

        def optional(key, i, convert):
            return convert(outputs[key][i]) if key in outputs else None

        results = []
        for i, probs in enumerate(outputs[Output.PROBABILITIES]):
            class_id = int(outputs[Output.CLASS_ID][i])
            stated = outputs[Output.CLASS_NAME][i].decode()
            if len(probs) != len(names) or not 0 <= class_id < len(names) or names[class_id] != stated:
                raise ModelContractError(
                    f"model {response.model_spec.name!r} version {version} disagrees with its model info: class "
                    f"{class_id} ({stated!r}) of {len(probs)} probabilities, info lists {list(names)}")
            results.append(Prediction(
                class_name=stated, class_id=class_id,
                probabilities={n: float(p) for n, p in zip(names, probs, strict=True)},
                model_name=response.model_spec.name, model_version=version, display_names=info.display_names,
                heatmap=outputs[Output.HEATMAP][i] if with_heatmap else None,
                in_domain=optional(Output.IN_DOMAIN, i, bool), ood_score=optional(Output.OOD_SCORE, i, float),
                ood_reason=optional(Output.OOD_REASON, i, bytes.decode),
                needs_review=optional(Output.NEEDS_REVIEW, i, bool),
                crop_box=optional(Output.CROP_BOX, i, lambda box: tuple(float(v) for v in box)),
                crop_angle=optional(Output.CROP_ANGLE, i, float), negative_classes=info.negative_classes))
        return results

    def predict(self, images: list[bytes]) -> list[Prediction]:
        """Class and calibrated probabilities for each encoded image (one call, one batch)."""
        if not images:
            return []
        response = self._call(self._predict, self._request(Signature.PREDICT_IMAGE, images))
        return self._predictions(response, with_heatmap=False)

    def explain(self, image: bytes) -> Prediction:
        """Prediction plus the Grad-CAM heat map for one encoded image."""
        return self.explain_batch([image])[0]

    def explain_batch(self, images: list[bytes]) -> list[Prediction]:
        """Predictions with Grad-CAM heat maps for several encoded images (one call, one batch)."""
        if not images:
            return []
        response = self._call(self._predict, self._request(Signature.EXPLAIN, images))
        return self._predictions(response, with_heatmap=True)

    def segment(self, image: bytes) -> Segmentation:
        """The segmenter's nodule probability map and lesions for one encoded image."""
        return self.segment_batch([image])[0]

    def segment_batch(self, images: list[bytes]) -> list[Segmentation]:
        """Segmentations of several encoded images (one call, one batch), each at its own size."""
        if not images:
            return []
        name = self.segmentation_model_name
        response = self._call(self._predict, self._request(Signature.SEGMENT, images, model_name=name))
        version = int(response.model_spec.version.value)
        _, info = self.model_info(version, name)
        outputs = {k: api.to_ndarray(v) for k, v in response.outputs.items()}
        missing = {Output.PROBABILITY_MAP, Output.IMAGE_SIZE, Output.LESION_COUNT, *LESION_OUTPUTS} - set(outputs)
        if missing or info.lesion_threshold is None:
            raise ModelContractError(f"model {name!r} version {version} is not a segmenter: it gave no "
                                     f"{sorted(missing) or 'lesion threshold in its model info'}")
        results = []
        for i, (height, width) in enumerate(outputs[Output.IMAGE_SIZE].tolist()):
            shown = min(int(outputs[Output.LESION_COUNT][i]), len(outputs[Output.LESION_AREA][i]))
            found = tuple(Lesion(
                area=float(outputs[Output.LESION_AREA][i, row]),
                centroid=tuple(float(v) for v in outputs[Output.LESION_CENTROID][i, row]),
                long_axis=float(outputs[Output.LESION_LONG_AXIS][i, row]),
                short_axis=float(outputs[Output.LESION_SHORT_AXIS][i, row]),
                long_axis_angle=float(outputs[Output.LESION_LONG_AXIS_ANGLE][i, row]),
                box=tuple(float(v) for v in outputs[Output.LESION_BOX][i, row]),
                mean_probability=float(outputs[Output.LESION_MEAN_PROBABILITY][i, row]),
                max_probability=float(outputs[Output.LESION_MAX_PROBABILITY][i, row])) for row in range(shown))
            results.append(Segmentation(
                probability=np.asarray(outputs[Output.PROBABILITY_MAP][i, :height, :width], np.float32),
                lesions=found, lesion_count=int(outputs[Output.LESION_COUNT][i]),
                threshold=float(info.lesion_threshold), model_name=name, model_version=version))
        return results

    def model_status(self, model_name: str | None = None) -> list[dict]:
        """The model's versions as the server reports them: ``version``, ``state`` (TF Serving's name: AVAILABLE,
        LOADING, END, ...) and ``error`` ("" when none)."""
        request = GetModelStatusRequest()
        request.model_spec.name = model_name or self.model_name
        response = self._call(self._model_status, request)
        state = "tensorflow.serving.ModelVersionStatus.State"
        return [{"version": int(s.version), "state": api.enum_value_name(state, s.state),
                 "error": s.status.error_message} for s in response.model_version_status]
