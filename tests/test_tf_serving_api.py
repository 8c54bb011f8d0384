"""serving/tf_serving_api.py against the real thing: its descriptors are tensorflow-serving-api's, and its tensors
convert as TensorFlow's own make_tensor_proto / make_ndarray do."""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from serving import tf_serving_api as api


def test_the_committed_descriptors_are_the_installed_packages():
    assert api.main([]) == 0, "run: python -m serving.tf_serving_api --write"


class _RecordingChannel:
    """Stands in for a grpc.Channel to read which method paths the official stubs call."""

    def __init__(self):
        self.paths = set()

    def unary_unary(self, path, *args, **kwargs):
        self.paths.add(path)


def test_the_method_paths_are_the_official_stubs():
    channel = _RecordingChannel()
    prediction_service_pb2_grpc.PredictionServiceStub(channel)
    model_service_pb2_grpc.ModelServiceStub(channel)
    assert {api.PREDICT_METHOD, api.GET_MODEL_STATUS_METHOD} <= channel.paths


def test_a_string_tensor_is_byte_for_byte_tensorflows():
    values = [b"\x89PNG...", b"", "é".encode()]
    ours = api.string_tensor(values).SerializeToString()
    assert ours == tf.make_tensor_proto(values, dtype=tf.string, shape=[3]).SerializeToString()


def _ours(proto: tensor_pb2.TensorProto) -> np.ndarray:
    return api.to_ndarray(api.message_class("tensorflow.TensorProto").FromString(proto.SerializeToString()))


@pytest.mark.parametrize("array", [
    np.random.default_rng(0).random((2, 3, 4), dtype=np.float32),
    np.arange(6, dtype=np.int64).reshape(3, 2) - 3,
    np.array([True, False, True]),
    np.array([[1.5, -2.25]], dtype=np.float64),
    np.array([0.5, 1.0, -3.0], dtype=np.float16),
    np.array([7, 255, 0], dtype=np.uint8),
    np.array([[b"adenocarcinoma", b""]], dtype=object),
    np.zeros((0, 4), dtype=np.float32),
    np.float32(0.25),  # a scalar: shape []
])
def test_tensor_content_and_typed_fields_read_as_tensorflow_reads_them(array):
    proto = tf.make_tensor_proto(array)  # numeric arrays travel as tensor_content
    expected = tf.make_ndarray(proto)
    np.testing.assert_array_equal(_ours(proto), expected)
    assert _ours(proto).dtype == expected.dtype and _ours(proto).shape == expected.shape


@pytest.mark.parametrize(("fields", "shape"), [
    ({"dtype": types_pb2.DT_FLOAT, "float_val": [1.5, 2.5, 3.5]}, [3]),
    ({"dtype": types_pb2.DT_FLOAT, "float_val": [0.25]}, [2, 2]),  # TF's compact form: the last value repeats
    ({"dtype": types_pb2.DT_INT64, "int64_val": []}, [3]),  # no values: zeros
    ({"dtype": types_pb2.DT_BOOL, "bool_val": [True, False]}, [2, 1]),
    ({"dtype": types_pb2.DT_INT32, "int_val": [-1, 2]}, [2]),
    ({"dtype": types_pb2.DT_HALF, "half_val": [15360, 14336]}, [2]),  # float16 bits of 1.0 and 0.5
    ({"dtype": types_pb2.DT_STRING, "string_val": [b"a", b"b"]}, [2]),
])
def test_values_in_typed_fields_as_tf_serving_may_send_them(fields, shape):
    proto = tensor_pb2.TensorProto(**fields)
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    expected = tf.make_ndarray(proto)
    np.testing.assert_array_equal(_ours(proto), expected)
    assert _ours(proto).dtype == expected.dtype and _ours(proto).shape == expected.shape


def test_a_dtype_it_cannot_convert_is_a_clear_error():
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_COMPLEX64)
    with pytest.raises(ValueError, match="DT_COMPLEX64"):
        _ours(proto)
    too_many = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1, 2, 3])
    too_many.tensor_shape.dim.add(size=2)
    with pytest.raises(ValueError, match="carries 3 values"):
        _ours(too_many)
