"""Checks on requests before anything is decoded or batched: one bad or oversized request fails alone, early.

Images follow the product's one image policy (``radassist.contract.IMAGE_LIMITS``: bytes, pixels, longer side,
aspect), read from each image's header. Tensors are checked on their declared shape before they are expanded:
TF Serving's TensorProto lets a request declare [N] elements and send one value, which ``make_ndarray`` would
repeat N times.
"""

import dataclasses

import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2

from radassist.contract import IMAGE_LIMITS, ImageLimits, ImageRejected, Input
from serving import errors

IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM")
IMAGE_INPUT_NAMES = {Input.IMAGES, "image"}


@dataclasses.dataclass(frozen=True)
class RequestLimits:
    """What one request may carry, whichever API it came through."""

    max_elements: int = 256                  # elements of one input tensor (images per request)
    max_request_bytes: int = 64 * 1024 * 1024  # a gRPC message or a REST body
    max_json_depth: int = 32                 # nesting of a REST body
    image: ImageLimits = IMAGE_LIMITS


DEFAULT_LIMITS = RequestLimits()


def check_tensor_proto(name: str, proto: tensor_pb2.TensorProto, limits: RequestLimits = DEFAULT_LIMITS) -> None:
    """Raises InvalidInput when a TensorProto declares more elements than allowed, or more than it carries."""
    dims = [d.size for d in proto.tensor_shape.dim]
    if any(size < 0 for size in dims):
        raise errors.InvalidInput(f"input '{name}' declares a negative dimension {dims}")
    declared = int(np.prod(dims, dtype=np.float64)) if dims else 1
    if declared > limits.max_elements:
        raise errors.InvalidInput(f"input '{name}' declares {declared} elements; at most {limits.max_elements} are "
                                  "allowed per request")
    if proto.dtype == types_pb2.DT_STRING and declared != len(proto.string_val):
        raise errors.InvalidInput(f"input '{name}' declares shape {dims} ({declared} elements) but carries "
                                  f"{len(proto.string_val)} strings")


def check_element_count(name: str, values: np.ndarray, limits: RequestLimits = DEFAULT_LIMITS) -> None:
    count = np.asarray(values).size
    if count > limits.max_elements:
        raise errors.InvalidInput(f"input '{name}' has {count} elements; at most {limits.max_elements} are allowed "
                                  "per request")


def check_images(name: str, values: np.ndarray, limits: ImageLimits = IMAGE_LIMITS) -> None:
    """Raises InvalidInput naming the first empty, oversized, odd-shaped, non-image or decompression-bomb element."""
    for index, value in enumerate(np.asarray(values).reshape(-1)):
        data = value if isinstance(value, bytes) else str(value).encode()
        where = f"input '{name}'[{index}]"
        if not data:
            raise errors.InvalidInput(f"{where} is empty")
        if not data.startswith(IMAGE_MAGIC):
            raise errors.InvalidInput(f"{where} is not a PNG, JPEG, GIF or BMP image")
        try:
            limits.check_bytes(len(data))
            limits.open_image(data).close()  # the header only
        except ImageRejected as error:
            raise errors.InvalidInput(f"{where}: {error}") from error
        except (OSError, SyntaxError, ValueError) as error:
            raise errors.InvalidInput(f"{where} is not a readable image: {error}") from error
