"""The model server's command: ``radassist serve`` (TF Serving's flags, where it has them, and our security and
request limits). This entry point reads the $RADASSIST_MODEL_BASE, $RADASSIST_*_PORT, $RADASSIST_SERVE_* defaults."""

import argparse
import logging
import os

from radassist.contract import MODEL_NAME

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cmd_serve(args) -> int:
    from serving.authentication import TlsFiles, read_file
    from serving.batching import BatchingOptions
    from serving.model_config import ModelConfigError, read_model_config
    from serving.model_store import VersionPolicy
    from serving.prediction_log import MAX_FILE_SECONDS
    from serving.server import JsonLogFormatter, ServerConfig, serve
    from serving.validation import RequestLimits

    if bool(args.tls_cert) != bool(args.tls_key):
        raise SystemExit("serve: --tls-cert and --tls-key go together")
    if args.tls_client_ca and not args.tls_cert:
        raise SystemExit("serve: --tls-client-ca needs --tls-cert and --tls-key")
    token = None
    if args.token_file:
        token = read_file(args.token_file).decode().strip()
        if len(token) < 16:
            raise SystemExit(f"serve: the token in {args.token_file} is shorter than 16 characters")

    models = None
    if args.model_config_file:
        if args.model_name or args.pin_version:
            raise SystemExit("serve: --model-config-file names the models and their versions; drop --model-name "
                             "and --pin-version")
        try:
            models = read_model_config(args.model_config_file)
        except ModelConfigError as error:
            raise SystemExit(f"serve: {error}") from error

    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogFormatter())
    logging.getLogger().handlers[:] = [handler]
    logging.getLogger().setLevel(logging.INFO)
    config = ServerConfig(
        model_base_path=args.model_base_path,
        model_names=args.model_name or [MODEL_NAME],
        models=models,
        grpc_port=args.grpc_port,
        rest_port=args.rest_port,
        host=args.host,
        policy=VersionPolicy(latest=args.latest_versions, pinned=tuple(args.pin_version or ())),
        batching=BatchingOptions(enabled=args.enable_batching, max_batch_size=args.max_batch_size,
                                 batch_timeout_micros=args.batch_timeout_micros),
        poll_seconds=args.file_system_poll_wait_seconds,
        limits=RequestLimits(max_elements=args.max_request_elements, max_request_bytes=args.max_request_bytes),
        tls=TlsFiles(args.tls_cert, args.tls_key, args.tls_client_ca) if args.tls_cert else None,
        token=token,
        prediction_log_file_seconds=args.prediction_log_file_seconds or MAX_FILE_SECONDS,
    )
    serve(config)
    return 0


def add_commands(areas) -> None:
    """Registers ``serve`` on the dispatcher's subparsers."""
    serve = areas.add_parser("serve", help="serve models over TF Serving's gRPC and REST APIs")
    serve.add_argument("--model-base-path", default=os.environ.get("RADASSIST_MODEL_BASE")
                       or os.path.join(REPO_ROOT, "outputs", "models"),
                       help="folder or s3:// URI holding <model name>/<integer version>/ SavedModels")
    serve.add_argument("--model-name", action="append",
                       help=f"model to serve (repeatable; default {MODEL_NAME})")
    serve.add_argument("--model-config-file", default=os.environ.get("RADASSIST_MODEL_CONFIG_FILE"),
                       help="TF Serving's model config file (a model_config_list text proto): the models, each "
                            "with its base_path and version policy; replaces --model-name, --model-base-path and the "
                            "version flags")
    serve.add_argument("--grpc-port", type=int, default=int(os.environ.get("RADASSIST_GRPC_PORT", 8500)))
    serve.add_argument("--rest-port", type=int, default=int(os.environ.get("RADASSIST_REST_PORT", 8501)))
    serve.add_argument("--host", default=os.environ.get("RADASSIST_SERVE_HOST", "127.0.0.1"),
                       help="address to bind (0.0.0.0 in a cluster, with --tls-* and a token)")
    serve.add_argument("--tls-cert", default=os.environ.get("RADASSIST_SERVE_TLS_CERT"),
                       help="PEM certificate: both APIs over TLS (with --tls-key)")
    serve.add_argument("--tls-key", default=os.environ.get("RADASSIST_SERVE_TLS_KEY"))
    serve.add_argument("--tls-client-ca", default=os.environ.get("RADASSIST_SERVE_TLS_CLIENT_CA"),
                       help="PEM CA: mutual TLS, only clients with a certificate it signed may connect")
    serve.add_argument("--token-file", default=os.environ.get("RADASSIST_SERVE_TOKEN_FILE"),
                       help="file holding the bearer token every gRPC and /v1 REST call must carry")
    serve.add_argument("--max-request-elements", type=int, default=256,
                       help="images (tensor elements) one request may carry")
    serve.add_argument("--max-request-bytes", type=int, default=64 * 1024 * 1024,
                       help="largest gRPC message or REST body")
    serve.add_argument("--latest-versions", type=int, default=1, help="serve the N latest versions")
    serve.add_argument("--pin-version", type=int, action="append", help="serve exactly these versions")
    serve.add_argument("--enable-batching", action=argparse.BooleanOptionalAction, default=True)
    serve.add_argument("--max-batch-size", type=int, default=32)
    serve.add_argument("--batch-timeout-micros", type=int, default=5000)
    serve.add_argument("--file-system-poll-wait-seconds", type=float, default=2.0)
    serve.add_argument("--prediction-log-file-seconds", type=float,
                       help="close a prediction-log file (then readable by the monitor) at this age (default: "
                            "serving/prediction_log.MAX_FILE_SECONDS)")
    serve.set_defaults(func=cmd_serve)
