"""TF Serving's gRPC API: PredictionService (Predict, Classify, GetModelMetadata) and ModelService."""

import functools
import logging
import time

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import any_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow.python.saved_model import loader_impl
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    status_pb2,
)

from radassist.contract import ContractError, Input, ModelInfo, Output, Signature
from serving import errors, validation
from serving.metrics import Metrics
from serving.model_store import ModelManager, ServedVersion

log = logging.getLogger(__name__)
STATE_NAMES = {10: "START", 20: "LOADING", 30: "AVAILABLE", 40: "UNLOADING", 50: "END"}


def signature_defs(path: str) -> dict[str, meta_graph_pb2.SignatureDef]:
    saved_model = loader_impl.parse_saved_model(path)
    return dict(saved_model.meta_graphs[0].signature_def)


def signature_def_map(manager: ModelManager, name: str, version: int | None):
    """(served version, SignatureDefMap) of a loaded model version, for GetModelMetadata in either API."""
    served = manager.acquire(name, version)
    try:
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, definition in signature_defs(served.path).items():
            signature_map.signature_def[key].CopyFrom(definition)
    finally:
        served.release()
    return served, signature_map


@functools.lru_cache(maxsize=64)
def model_info(path: str) -> ModelInfo | None:
    """The contract's ModelInfo of the SavedModel version at ``path`` (a version directory never changes)."""
    return ModelInfo.from_saved_model(path)


class Inference:
    """Shared by gRPC and REST: look up the version, validate, run, count, time."""

    def __init__(self, manager: ModelManager, metrics: Metrics,
                 limits: validation.RequestLimits = validation.DEFAULT_LIMITS, prediction_log=None):
        self.manager, self.metrics, self.limits = manager, metrics, limits
        self.prediction_log = prediction_log  # a serving.prediction_log.PredictionLogger, or None

    def predict(self, name: str, version: int | None, label: str | None, signature: str,
                inputs: dict[str, np.ndarray]) -> tuple[ServedVersion, dict[str, np.ndarray]]:
        started = time.perf_counter()
        signature = signature or Signature.SERVING_DEFAULT
        code = "OK"
        try:
            served = self.manager.acquire(name, version, label)
            try:
                served.signature(signature)  # unknown signatures are reported before input checks, as TF Serving
                for key, value in inputs.items():
                    validation.check_element_count(key, value, self.limits)
                    if key in validation.IMAGE_INPUT_NAMES and np.asarray(value).dtype.kind in ("S", "O"):
                        validation.check_images(key, value, self.limits.image)
                outputs = served.run(signature, inputs)
                if self.prediction_log:
                    self.prediction_log.log(served.model_name, served.version, signature, inputs, outputs)
                return served, outputs
            finally:
                served.release()
        except errors.ServingError as error:
            code = error.code.name
            raise
        finally:
            self.metrics.observe(name, signature, code, time.perf_counter() - started)


def _abort(context, error: errors.ServingError):
    context.abort(error.code, error.message)


def _version(spec) -> int | None:
    return spec.version.value if spec.HasField("version") else None


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, inference: Inference):
        self.inference = inference

    def Predict(self, request, context):  # noqa: N802 - gRPC method names
        try:
            for key, proto in request.inputs.items():  # declared sizes, before make_ndarray expands them
                validation.check_tensor_proto(key, proto, self.inference.limits)
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        except errors.InvalidInput as error:
            return _abort(context, error)
        except (TypeError, ValueError) as error:
            return _abort(context, errors.InvalidInput(f"malformed input tensor: {error}"))
        try:
            served, outputs = self.inference.predict(
                request.model_spec.name, _version(request.model_spec), request.model_spec.version_label or None,
                request.model_spec.signature_name, inputs)
        except errors.ServingError as error:
            return _abort(context, error)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = served.model_name
        response.model_spec.version.value = served.version
        response.model_spec.signature_name = request.model_spec.signature_name or Signature.SERVING_DEFAULT
        wanted = set(request.output_filter) or set(outputs)
        unknown = wanted - set(outputs)
        if unknown:
            message = f"output tensor alias not found in signature: {sorted(unknown)}"
            return _abort(context, errors.InvalidInput(message))
        for key in wanted:
            response.outputs[key].CopyFrom(tf.make_tensor_proto(outputs[key]))
        return response

    def Classify(self, request, context):  # noqa: N802
        """Classification over serialized tf.Examples, for signatures that take examples and give probabilities."""
        examples = [e.SerializeToString() for e in request.input.example_list.examples]
        if not examples:
            return _abort(context, errors.InvalidInput("Classify needs input.example_list with at least one example"))
        signature = request.model_spec.signature_name or Signature.SERVING_DEFAULT
        try:
            served, outputs = self.inference.predict(request.model_spec.name, _version(request.model_spec),
                                                     request.model_spec.version_label or None, signature,
                                                     {Input.EXAMPLES: np.array(examples, dtype=object)})
        except errors.ServingError as error:
            return _abort(context, error)
        if Output.PROBABILITIES not in outputs:
            return _abort(context, errors.InvalidInput(f"signature {signature} gives no class probabilities"))
        try:
            info = model_info(served.path)
        except ContractError as error:
            return _abort(context, errors.FailedPrecondition(str(error)))
        probabilities = outputs[Output.PROBABILITIES]
        names = info.class_names if info else [str(i) for i in range(probabilities.shape[1])]
        response = classification_pb2.ClassificationResponse()
        response.model_spec.name, response.model_spec.signature_name = served.model_name, signature
        response.model_spec.version.value = served.version
        for row in probabilities:
            classifications = response.result.classifications.add()
            for name, score in zip(names, row, strict=True):
                classifications.classes.add(label=name, score=float(score))
        return response

    def GetModelMetadata(self, request, context):  # noqa: N802
        if set(request.metadata_field) - {"signature_def"}:
            return _abort(context, errors.InvalidInput("Metadata field signature_def is the only one supported"))
        try:
            served, signature_map = signature_def_map(self.inference.manager, request.model_spec.name,
                                                      _version(request.model_spec))
        except errors.ServingError as error:
            return _abort(context, error)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = served.model_name
        response.model_spec.version.value = served.version
        packed = any_pb2.Any()
        packed.Pack(signature_map)
        response.metadata["signature_def"].CopyFrom(packed)
        return response


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, manager: ModelManager):
        self.manager = manager

    def GetModelStatus(self, request, context):  # noqa: N802
        try:
            statuses = self.manager.status(request.model_spec.name)
        except errors.ServingError as error:
            return _abort(context, error)
        wanted = _version(request.model_spec)
        if wanted is not None:
            statuses = [s for s in statuses if s["version"] == wanted]
            if not statuses:
                return _abort(context, errors.ModelNotFound(
                    f"Could not find version {wanted} of model {request.model_spec.name}"))
        response = get_model_status_pb2.GetModelStatusResponse()
        for status in statuses:
            entry = response.model_version_status.add(version=status["version"], state=status["state"])
            if status["error"]:
                entry.status.CopyFrom(status_pb2.StatusProto(error_code=2,  # tensorflow.error.UNKNOWN
                                                             error_message=status["error"]))
        return response

    def HandleReloadConfigRequest(self, request, context):  # noqa: N802
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "model config reload is not supported; versions are polled")
