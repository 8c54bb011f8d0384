"""The model server process: gRPC (PredictionService, ModelService) and REST on two ports, one ModelManager."""

import concurrent.futures
import dataclasses
import json
import logging
import signal
import threading
import time

import grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc
from werkzeug.serving import make_server

from serving.authentication import TlsFiles, TokenInterceptor
from serving.batching import BatchingOptions
from serving.grpc_service import Inference, ModelService, PredictionService
from serving.metrics import Metrics
from serving.model_config import ServedModel
from serving.model_store import ModelManager, ModelSource, VersionPolicy
from serving.prediction_log import MAX_FILE_SECONDS, PredictionLogger
from serving.storage import storage_for
from serving.validation import DEFAULT_LIMITS, RequestLimits

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ServerConfig:
    model_base_path: str             # with model_names: <base>/<name>/<version>/ (ignored when ``models`` is given)
    model_names: list[str]
    models: list[ServedModel] | None = None  # a model config file's entries: each model's own folder and policy
    grpc_port: int = 8500
    rest_port: int = 8501
    host: str = "127.0.0.1"         # a cluster binds 0.0.0.0 behind its NetworkPolicy, with TLS and a token
    policy: VersionPolicy = dataclasses.field(default_factory=VersionPolicy)
    batching: BatchingOptions = dataclasses.field(default_factory=BatchingOptions)
    poll_seconds: float = 2.0
    grpc_workers: int = 32
    limits: RequestLimits = DEFAULT_LIMITS
    tls: TlsFiles | None = None      # both APIs over TLS (mutual TLS when it names a client CA)
    token: str | None = None         # both APIs require "Authorization: Bearer <token>" (REST probes excepted)
    prediction_log_file_seconds: float = MAX_FILE_SECONDS  # a prediction-log file is closed at this age


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: structured logs for the cluster's log pipeline."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": round(record.created, 3), "level": record.levelname, "logger": record.name,
                 "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class ModelServer:
    def __init__(self, config: ServerConfig):
        self.config = config
        self.metrics = Metrics()
        sources = None
        if config.models:
            storages = {}  # one storage (one S3 client and cache) per parent folder
            for model in config.models:
                if model.parent not in storages:
                    storages[model.parent] = storage_for(model.parent)
            sources = [ModelSource(model.name, storages[model.parent], model.folder, model.policy)
                       for model in config.models]
            config.model_names = [model.name for model in config.models]  # what the logs and /readyz name
        self.manager = ModelManager(None if sources else storage_for(config.model_base_path), config.model_names,
                                    config.policy, config.batching, config.poll_seconds,
                                    on_change=lambda: self.metrics.set_loaded(self.manager.loaded()),
                                    on_batch=self.metrics.batch_size.observe, sources=sources)
        self.prediction_log = PredictionLogger({model.name: model.logging for model in config.models or ()
                                                if model.logging}, max_file_seconds=config.prediction_log_file_seconds)
        self.inference = Inference(self.manager, self.metrics, config.limits, self.prediction_log or None)
        self._grpc = None
        self._rest = None
        self._rest_thread = None
        self._stopped = threading.Event()

    def start(self) -> "ModelServer":
        self.manager.start()
        message_bytes = self.config.limits.max_request_bytes
        self._grpc = grpc.server(
            concurrent.futures.ThreadPoolExecutor(max_workers=self.config.grpc_workers),
            interceptors=[TokenInterceptor(self.config.token)] if self.config.token else None,
            options=[("grpc.max_receive_message_length", message_bytes),
                     ("grpc.max_send_message_length", message_bytes)])
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(self.inference),
                                                                            self._grpc)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(self.manager), self._grpc)
        address = f"{self.config.host}:{self.config.grpc_port}"
        if self.config.tls:
            self.grpc_port = self._grpc.add_secure_port(address, self.config.tls.grpc_credentials())
        else:
            self.grpc_port = self._grpc.add_insecure_port(address)
        self._grpc.start()
        from serving.rest import create_app

        self._rest = make_server(self.config.host, self.config.rest_port,
                                 create_app(self.inference, token=self.config.token), threaded=True,
                                 ssl_context=self.config.tls.ssl_context() if self.config.tls else None)
        self.rest_port = self._rest.server_port
        self._rest_thread = threading.Thread(target=self._rest.serve_forever, name="rest", daemon=True)
        self._rest_thread.start()
        where = (", ".join(f"{m.name} from {m.base_path}" for m in self.config.models) if self.config.models
                 else f"{','.join(self.config.model_names)} from {self.config.model_base_path}")
        log.info("serving %s: gRPC :%d, REST :%d on %s (%s, %s), loaded %s", where, self.grpc_port, self.rest_port,
                 self.config.host, "TLS" if self.config.tls else "no TLS",
                 "bearer token" if self.config.token else "no authentication", self.manager.loaded())
        return self

    def stop(self, grace: float = 5.0) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._grpc:
            self._grpc.stop(grace).wait()
        if self._rest:
            self._rest.shutdown()
        self.prediction_log.close()  # the requests' logs finished (and on S3) before the models go
        self.manager.stop()

    def wait(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self._stopped.set())
        signal.signal(signal.SIGINT, lambda *_: self._stopped.set())
        while not self._stopped.wait(1.0):
            pass
        self._stopped.clear()
        self.stop()


def serve(config: ServerConfig) -> None:
    """Runs until SIGTERM/SIGINT."""
    started = time.time()
    server = ModelServer(config).start()
    log.info("ready in %.1fs", time.time() - started)
    server.wait()
