"""TF Serving's Predict and GetModelStatus API without TensorFlow, for clients (the portal's report worker).

tensorflow-serving-api's stubs import TensorFlow's generated protos, which need TensorFlow installed. The messages
are plain protobuf, though: ``tf_serving_api.textproto`` holds the descriptors of exactly the files the two calls
use, copied from tensorflow-serving-api itself (``python -m serving.tf_serving_api --write`` refreshes it, and a
test checks it against the installed package). They load into a private descriptor pool, so this module and the
real stubs can live in one process (the server, the tests) without clashing in protobuf's default pool. Calls go
through ``grpc`` with the methods' wire names; tensors convert to and from numpy here.
"""

import functools
import math
import pathlib
import sys

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

DESCRIPTORS = pathlib.Path(__file__).with_name("tf_serving_api.textproto")
# The files the client's calls need; their imports come along (tensor, shape, types, model spec, status).
API_FILES = ("tensorflow_serving/apis/predict.proto", "tensorflow_serving/apis/get_model_status.proto")
# gRPC method paths: "/<package>.<Service>/<Method>", as in prediction_service.proto and model_service.proto.
PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"
GET_MODEL_STATUS_METHOD = "/tensorflow.serving.ModelService/GetModelStatus"


@functools.cache
def _pool() -> descriptor_pool.DescriptorPool:
    files = descriptor_pb2.FileDescriptorSet()
    text_format.Parse(DESCRIPTORS.read_text(), files)
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:  # stored dependencies first
        pool.Add(file)
    return pool


def message_class(full_name: str):
    """The message class of ``full_name`` ("tensorflow.serving.PredictRequest") from the private pool."""
    return message_factory.GetMessageClass(_pool().FindMessageTypeByName(full_name))


def enum_value_name(enum_full_name: str, number: int) -> str:
    """The name of ``number`` in enum ``enum_full_name`` ("tensorflow.serving.ModelVersionStatus.State")."""
    values = _pool().FindEnumTypeByName(enum_full_name).values_by_number
    return values[number].name if number in values else str(number)


def _data_type(name: str) -> int:
    return _pool().FindEnumTypeByName("tensorflow.DataType").values_by_name[name].number


# DataType name -> (numpy dtype, the TensorProto field that holds values when tensor_content is empty).
_FIELDS = {
    "DT_FLOAT": (np.float32, "float_val"), "DT_DOUBLE": (np.float64, "double_val"),
    "DT_HALF": (np.float16, "half_val"), "DT_INT8": (np.int8, "int_val"), "DT_INT16": (np.int16, "int_val"),
    "DT_INT32": (np.int32, "int_val"), "DT_INT64": (np.int64, "int64_val"), "DT_UINT8": (np.uint8, "int_val"),
    "DT_UINT16": (np.uint16, "int_val"), "DT_UINT32": (np.uint32, "uint32_val"),
    "DT_UINT64": (np.uint64, "uint64_val"), "DT_BOOL": (np.bool_, "bool_val"), "DT_STRING": (object, "string_val"),
}


def string_tensor(values: list[bytes]):
    """A 1-D DT_STRING TensorProto of ``values`` (what tf.make_tensor_proto(values, tf.string) gives)."""
    tensor = message_class("tensorflow.TensorProto")(dtype=_data_type("DT_STRING"), string_val=values)
    tensor.tensor_shape.dim.add(size=len(values))
    return tensor


def to_ndarray(tensor) -> np.ndarray:
    """The numpy array of a TensorProto, as tf.make_ndarray gives it (strings as an object array of bytes).

    Values come from ``tensor_content`` (little-endian bytes) or the typed ``*_val`` field; a field shorter than
    the shape repeats its last value, and an empty one means zeros, as TensorFlow reads them.

    Raises:
        ValueError: a dtype this module does not convert (complex, resource, variant, quantized).
    """
    type_name = enum_value_name("tensorflow.DataType", tensor.dtype)
    if type_name not in _FIELDS:
        raise ValueError(f"cannot convert a {type_name} tensor to numpy")
    dtype, field = _FIELDS[type_name]
    shape = [int(dim.size) for dim in tensor.tensor_shape.dim]
    count = math.prod(shape)
    if type_name == "DT_STRING":
        values = np.array(list(tensor.string_val), dtype=object)
    elif tensor.tensor_content:
        values = np.frombuffer(tensor.tensor_content, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)
    elif type_name == "DT_HALF":  # float16 bit patterns carried in int32s
        values = np.array(tensor.half_val, dtype=np.uint16).view(np.float16)
    else:
        values = np.array(getattr(tensor, field), dtype=dtype)
    if values.size != count:
        if values.size > count:
            raise ValueError(f"a {type_name} tensor of shape {shape} carries {values.size} values")
        fill = values[-1] if values.size else (b"" if dtype is object else 0)
        values = np.concatenate([values, np.full(count - values.size, fill, dtype=dtype)])
    return values.reshape(shape)


def installed_descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    """The descriptors of ``API_FILES`` and their imports, dependencies first, from the installed
    tensorflow-serving-api (which needs TensorFlow): what ``tf_serving_api.textproto`` must hold."""
    from tensorflow_serving.apis import get_model_status_pb2, predict_pb2

    files, seen = descriptor_pb2.FileDescriptorSet(), set()

    def add(file) -> None:
        if file.name in seen:
            return
        seen.add(file.name)
        for dependency in file.dependencies:
            add(dependency)
        file.CopyToProto(files.file.add())

    for module in (predict_pb2, get_model_status_pb2):  # the modules of API_FILES
        add(module.DESCRIPTOR)
    return files


def main(argv: list[str]) -> int:
    """``python -m serving.tf_serving_api [--write]``: check (or rewrite) the committed descriptors against the
    installed tensorflow-serving-api."""
    text = ("# Generated by `python -m serving.tf_serving_api --write` from tensorflow-serving-api's descriptors:\n"
            "# TF Serving's API protos (Apache License 2.0, The TensorFlow Authors). Do not edit.\n"
            + text_format.MessageToString(installed_descriptor_set()))
    if argv == ["--write"]:
        DESCRIPTORS.write_text(text)
        return 0
    if DESCRIPTORS.read_text() != text:
        print(f"{DESCRIPTORS} is out of date: run python -m serving.tf_serving_api --write", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
