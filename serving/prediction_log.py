"""Request logging as TF Serving does it (a model config's ``logging_config``): a sampled share of each model's
successful Predict calls, gRPC and REST alike, written as ``tensorflow.serving.PredictionLog`` records (the request,
the response and the log metadata: model spec and sampling config) to TFRecord files, one folder per model version.

``log_collector_config.filename_prefix`` is a local path or ``s3://bucket/prefix``. Files are
``<prefix>/<model>/<version>/<host>-<pid>-<start>-<n>.tfrecord`` (gzip), rotated every ``RECORDS_PER_FILE`` records,
once a file is ``max_file_seconds`` old (a background thread closes idle files too) and at shutdown; a file is
complete only once closed, so readers (the monitoring pipeline) take closed files (an S3 prefix gets each file when
it is closed). What the portal sends holds no patient identifiers: de-identified pixels only (names and DICOM tags
never reach the model server).
"""

import dataclasses
import glob
import logging
import os
import random
import socket
import tempfile
import threading
import time
import urllib.parse

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from radassist.contract import PREDICTION_LOG_SUFFIX

log = logging.getLogger(__name__)
RECORDS_PER_FILE = 1000
MAX_FILE_SECONDS = 300.0  # a file is closed (and readable by the monitor) at most this long after it was opened
SUFFIX = PREDICTION_LOG_SUFFIX


@dataclasses.dataclass(frozen=True)
class LoggingConfig:
    """One model's ``logging_config``: where and how much."""

    filename_prefix: str
    sampling_rate: float = 0.0     # share of calls logged, 0..1 (TF Serving's default 0: nothing)

    def __post_init__(self):
        if not 0.0 <= self.sampling_rate <= 1.0:
            raise ValueError(f"sampling_rate must be within 0..1, not {self.sampling_rate}")
        if not self.filename_prefix:
            raise ValueError("logging_config needs log_collector_config.filename_prefix")


class _Writer:
    """One model version's current file; ``close`` finishes it (and uploads it to S3 when the prefix is there)."""

    def __init__(self, prefix: str, model: str, version: int, run: str):
        self.prefix, self.model, self.version, self.run = prefix, model, version, run
        self.files, self.writer, self.count, self.path, self.opened = 0, None, 0, None, 0.0

    def write(self, record: bytes) -> None:
        if self.writer is None:
            self._open()
        self.writer.write(record)
        self.count += 1
        if self.count >= RECORDS_PER_FILE:
            self.close()

    def _open(self) -> None:
        self.files += 1
        name = f"{self.run}-{self.files:05d}{SUFFIX}"
        if self.prefix.startswith("s3://"):
            self.path = os.path.join(tempfile.mkdtemp(prefix="radassist-predictions-"), name)
        else:
            folder = os.path.join(self.prefix, self.model, str(self.version))
            os.makedirs(folder, exist_ok=True)
            self.path = os.path.join(folder, name + ".partial")  # renamed when complete: readers skip it
        self.writer = tf.io.TFRecordWriter(self.path, options="GZIP")
        self.opened = time.monotonic()

    def older_than(self, seconds: float) -> bool:
        return self.writer is not None and time.monotonic() - self.opened >= seconds

    def close(self) -> None:
        if self.writer is None:
            return
        self.writer.close()
        self.writer, self.count = None, 0
        if self.prefix.startswith("s3://"):
            _upload(self.path, self.prefix, f"{self.model}/{self.version}/{os.path.basename(self.path)}")
            os.remove(self.path)
        else:
            os.replace(self.path, self.path.removesuffix(".partial"))


def _upload(path: str, prefix: str, key: str) -> None:
    import boto3

    parsed = urllib.parse.urlparse(prefix)
    boto3.client("s3").upload_file(path, parsed.netloc, "/".join(p for p in (parsed.path.strip("/"), key) if p))


class PredictionLogger:
    """Logs each model's calls by its LoggingConfig; thread-safe, and a failure to log never fails a request."""

    def __init__(self, configs: dict[str, LoggingConfig], seed: int | None = None,
                 max_file_seconds: float = MAX_FILE_SECONDS):
        self.configs = {name: config for name, config in configs.items() if config.sampling_rate > 0}
        self.max_file_seconds = max_file_seconds
        self.random = random.Random(seed)
        self.run = f"{socket.gethostname()}-{os.getpid()}-{int(time.time())}"
        self.writers: dict[tuple[str, int], _Writer] = {}
        self.lock = threading.Lock()
        self.logged = 0
        self._stopped = threading.Event()
        if self.configs:
            threading.Thread(target=self._rotate_by_age, name="prediction-log-rotation", daemon=True).start()

    def _rotate_by_age(self) -> None:
        """Closes files older than ``max_file_seconds``, so a quiet model's calls reach the monitor too."""
        while not self._stopped.wait(min(30.0, self.max_file_seconds / 4)):
            self._close(lambda writer: writer.older_than(self.max_file_seconds))

    def __bool__(self) -> bool:
        return bool(self.configs)

    def log(self, model: str, version: int, signature: str, inputs: dict[str, np.ndarray],
            outputs: dict[str, np.ndarray]) -> bool:
        """Logs one call when the model's sampling draws it; True when it did."""
        config = self.configs.get(model)
        if config is None:
            return False
        with self.lock:
            if self.random.random() >= config.sampling_rate:
                return False
        try:
            record = prediction_log_pb2.PredictionLog()
            request, response = record.predict_log.request, record.predict_log.response
            for spec in (request.model_spec, response.model_spec, record.log_metadata.model_spec):
                spec.name, spec.signature_name = model, signature
                spec.version.value = version
            for key, value in inputs.items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
            for key, value in outputs.items():
                response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
            record.log_metadata.sampling_config.sampling_rate = config.sampling_rate
            serialized = record.SerializeToString()
            with self.lock:
                key = (model, version)
                if key not in self.writers:
                    self.writers[key] = _Writer(config.filename_prefix, model, version, self.run)
                self.writers[key].write(serialized)
                if self.writers[key].older_than(self.max_file_seconds):
                    self.writers[key].close()
                self.logged += 1
        except Exception:  # noqa: BLE001 - logging is best effort: the caller's answer matters more
            log.exception("could not log a %s/%s request", model, version)
            return False
        return True

    def close(self) -> None:
        """Finishes every open file (at shutdown)."""
        self._stopped.set()
        self._close(lambda writer: True)

    def _close(self, which) -> None:
        with self.lock:
            for writer in self.writers.values():
                if not which(writer):
                    continue
                try:
                    writer.close()
                except Exception:  # noqa: BLE001 - one file's failure must not lose the others
                    log.exception("could not finish the prediction log %s", writer.path)


def read_prediction_logs(folder: str) -> list[prediction_log_pb2.PredictionLog]:
    """Every record of the finished files under the local ``folder`` (a prefix, or one model's or version's)."""
    records = []
    for path in sorted(glob.glob(os.path.join(folder, "**", f"*{SUFFIX}"), recursive=True)):
        for raw in tf.data.TFRecordDataset(path, compression_type="GZIP"):
            records.append(prediction_log_pb2.PredictionLog.FromString(raw.numpy()))
    return records
