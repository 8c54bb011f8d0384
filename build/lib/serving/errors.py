"""Typed serving errors, each with the gRPC status code TF Serving answers for it."""

import grpc


class ServingError(Exception):
    code = grpc.StatusCode.INTERNAL

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class ModelNotFound(ServingError):
    code = grpc.StatusCode.NOT_FOUND


class SignatureNotFound(ServingError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class InvalidInput(ServingError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class Unavailable(ServingError):
    code = grpc.StatusCode.UNAVAILABLE


class FailedPrecondition(ServingError):
    """The model cannot answer this kind of request (e.g. its info file breaks the contract)."""

    code = grpc.StatusCode.FAILED_PRECONDITION
