"""TF Serving's REST API (``/v1/models/...``) plus health, readiness and Prometheus metrics endpoints."""

import base64
import binascii
import json

import numpy as np
from flask import Flask, Response, jsonify, request
from google.protobuf import json_format
from werkzeug.exceptions import RequestEntityTooLarge

from radassist.contract import Signature
from serving import authentication, errors, validation
from serving.grpc_service import STATE_NAMES, Inference, signature_def_map

HTTP_STATUS = {"NOT_FOUND": 404, "INVALID_ARGUMENT": 400, "UNAVAILABLE": 503, "FAILED_PRECONDITION": 400}


def _check_shape(body, limits: validation.RequestLimits) -> None:
    """Raises InvalidInput for a body nested deeper, or holding more values, than a request may (checked without
    recursion, before anything is converted)."""
    pending, values = [(body, 1)], 0
    while pending:
        value, depth = pending.pop()
        if depth > limits.max_json_depth:
            raise errors.InvalidInput(f"the request body is nested more than {limits.max_json_depth} levels deep")
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        for child in children:
            values += 1
            if values > limits.max_elements * 64:  # named inputs, b64 wrappers and small numeric tensors
                raise errors.InvalidInput("the request body holds more values than a request may")
            if isinstance(child, dict | list):
                pending.append((child, depth + 1))


def _decode(value):
    """TF Serving's JSON encoding: {"b64": "..."} for bytes, nested lists for tensors."""
    if isinstance(value, dict) and set(value) == {"b64"}:
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, TypeError) as error:
            raise errors.InvalidInput(f"a 'b64' value is not valid base64: {error}") from error
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _to_array(values) -> np.ndarray:
    decoded = _decode(values)
    flat = decoded
    while isinstance(flat, list) and flat:
        flat = flat[0]
    if isinstance(flat, bytes | str):
        return np.array(decoded, dtype=object)
    return np.array(decoded)


def _encode(array: np.ndarray):
    if array.dtype.kind in ("O", "S"):
        def convert(item):
            if isinstance(item, bytes):
                try:
                    return item.decode("utf-8")
                except UnicodeDecodeError:
                    return {"b64": base64.b64encode(item).decode()}
            return item
        return np.vectorize(convert, otypes=[object])(array).tolist() if array.size else []
    return array.tolist()


def _parse_body(body: dict) -> tuple[str, dict[str, np.ndarray], bool]:
    signature = body.get("signature_name", Signature.SERVING_DEFAULT)
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise errors.InvalidInput("'instances' must be a non-empty list")
        if all(isinstance(i, dict) and set(i) != {"b64"} for i in instances):
            keys = set(instances[0])
            if any(set(i) != keys for i in instances):
                raise errors.InvalidInput("every instance must have the same named inputs")
            return signature, {k: _to_array([i[k] for i in instances]) for k in keys}, True
        return signature, {"__single__": _to_array(instances)}, True
    if "inputs" in body:
        inputs = body["inputs"]
        if isinstance(inputs, dict):
            return signature, {k: _to_array(v) for k, v in inputs.items()}, False
        return signature, {"__single__": _to_array(inputs)}, False
    raise errors.InvalidInput("the request needs 'instances' (row format) or 'inputs' (columnar format)")


def _read_json_body(limits: validation.RequestLimits) -> dict:
    try:
        body = json.loads(request.get_data(cache=False))
    except RecursionError as error:
        raise errors.InvalidInput(f"the request body is nested more than {limits.max_json_depth} levels "
                                  "deep") from error
    except (ValueError, UnicodeDecodeError) as error:
        raise errors.InvalidInput(f"the request body is not valid JSON: {error}") from error
    if not isinstance(body, dict):
        raise errors.InvalidInput("the request body must be a JSON object")
    _check_shape(body, limits)
    return body


def create_app(inference: Inference, token: str | None = None) -> Flask:
    """The REST app; with ``token``, every /v1 call needs ``Authorization: Bearer <token>`` (health, readiness
    and metrics stay open for the cluster's probes)."""
    app = Flask("radassist-serving")
    app.config["MAX_CONTENT_LENGTH"] = inference.limits.max_request_bytes
    manager = inference.manager

    @app.errorhandler(errors.ServingError)
    def _serving_error(error: errors.ServingError):
        return jsonify({"error": error.message}), HTTP_STATUS.get(error.code.name, 500)

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(_error):
        return jsonify({"error": f"the request body is larger than the {inference.limits.max_request_bytes} "
                                 "bytes allowed"}), 413

    @app.before_request
    def _authenticate():
        if token and request.path.startswith("/v1/") and not authentication.token_matches(
                request.headers.get("Authorization", ""), token):
            return jsonify({"error": "missing or wrong bearer token"}), 401
        return None

    @app.get("/healthz")
    def health():
        return jsonify({"status": "ok"})

    @app.get("/readyz")
    def ready():
        loaded = manager.loaded()
        return jsonify({"ready": manager.ready(), "loaded": loaded}), 200 if manager.ready() else 503

    @app.get("/metrics")
    @app.get("/monitoring/prometheus/metrics")
    def metrics():
        inference.metrics.set_loaded(manager.loaded())
        return Response(inference.metrics.render(), mimetype="text/plain; version=0.0.4")

    @app.get("/v1/models/<name>")
    @app.get("/v1/models/<name>/versions/<int:version>")
    def model_status(name, version=None):
        statuses = manager.status(name)
        if version is not None:
            statuses = [s for s in statuses if s["version"] == version]
            if not statuses:
                raise errors.ModelNotFound(f"Could not find version {version} of model {name}")
        return jsonify({"model_version_status": [
            {"version": str(s["version"]), "state": STATE_NAMES[s["state"]],
             "status": {"error_code": "UNKNOWN" if s["error"] else "OK", "error_message": s["error"]}}
            for s in statuses]})

    @app.get("/v1/models/<name>/metadata")
    @app.get("/v1/models/<name>/versions/<int:version>/metadata")
    def model_metadata(name, version=None):
        served, signature_map = signature_def_map(manager, name, version)
        return jsonify({"model_spec": {"name": served.model_name, "signature_name": "",
                                       "version": str(served.version)},
                        "metadata": {"signature_def": json_format.MessageToDict(signature_map)}})

    def _predict(name, version=None, label=None):
        body = _read_json_body(inference.limits)
        signature, inputs, row_format = _parse_body(body)
        if "__single__" in inputs:
            served = manager.acquire(name, version, label)
            try:
                _, specs = served.signature(signature).structured_input_signature
            finally:
                served.release()
            if len(specs) != 1:
                raise errors.InvalidInput(f"signature {signature} has inputs {sorted(specs)}: name them")
            inputs = {next(iter(specs)): inputs["__single__"]}
        _, outputs = inference.predict(name, version, label, signature, inputs)
        if not row_format:
            return jsonify({"outputs": {k: _encode(v) for k, v in outputs.items()}})
        if len(outputs) == 1:
            return jsonify({"predictions": _encode(next(iter(outputs.values())))})
        rows = len(next(iter(outputs.values())))
        return jsonify({"predictions": [{k: _encode(v[i]) if isinstance(v[i], np.ndarray) else _encode(v[i:i + 1])[0]
                                         for k, v in outputs.items()} for i in range(rows)]})

    app.add_url_rule("/v1/models/<name>:predict", "predict", _predict, methods=["POST"])
    app.add_url_rule("/v1/models/<name>/versions/<int:version>:predict", "predict_version", _predict,
                     methods=["POST"])
    app.add_url_rule("/v1/models/<name>/labels/<label>:predict", "predict_label", _predict, methods=["POST"])
    return app
