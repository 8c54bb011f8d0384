"""Loaded model versions: discovery, background loading with warm-up, switching, and safe unloading.

Mirrors TF Serving's behaviour: a poller watches ``<base>/<model>/``; a new version is loaded in the
background and warmed up with its ``assets.extra/tf_serving_warmup_requests`` before it takes traffic;
requests in flight finish on the version they started on; versions that leave the policy are unloaded once
idle. A version that fails to load is reported (state END with an error) and never replaces a working one.
"""

import dataclasses
import logging
import os
import threading
import time

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from radassist.contract import Signature
from serving import errors
from serving.batching import BatchingOptions, BatchScheduler
from serving.storage import ModelStorage

log = logging.getLogger(__name__)
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000

# TF Serving's ModelVersionStatus states.
START, LOADING, AVAILABLE, UNLOADING, END = 10, 20, 30, 40, 50


@dataclasses.dataclass(frozen=True)
class VersionPolicy:
    """Which versions to serve: the latest ``latest`` ones, or exactly the ``pinned`` ones."""

    latest: int = 1
    pinned: tuple[int, ...] = ()

    def select(self, available: list[int]) -> list[int]:
        if self.pinned:
            return sorted(v for v in available if v in self.pinned)
        return sorted(available)[-self.latest:] if self.latest > 0 else []


class ServedVersion:
    """One loaded SavedModel version with a batch scheduler per signature and an in-flight count."""

    def __init__(self, model_name: str, version: int, path: str, batching: BatchingOptions | None, on_batch=None):
        self.model_name, self.version, self.path = model_name, version, path
        self._on_batch = on_batch
        self.state = START
        self.error = ""
        self._loaded = None
        self._signatures: dict = {}
        self._schedulers: dict[str, BatchScheduler] = {}
        self._batching = batching
        self._in_flight = 0
        self._idle = threading.Condition()

    def load(self) -> None:
        self.state = LOADING
        self._loaded = tf.saved_model.load(self.path)
        self._signatures = dict(self._loaded.signatures)
        for name, function in self._signatures.items():
            if self._batching and self._batching.enabled and _batchable(function):
                self._schedulers[name] = BatchScheduler(
                    lambda inputs, fn=function: _run(fn, inputs), self._batching,
                    name=f"{self.model_name}:{self.version}:{name}", on_batch=self._on_batch)

    def warm_up(self) -> int:
        """Replays the version's warm-up records; returns how many ran."""
        warmup_path = os.path.join(self.path, WARMUP_FILE)
        if not tf.io.gfile.exists(warmup_path):
            return 0
        count = 0
        for record in tf.data.TFRecordDataset(warmup_path).take(MAX_WARMUP_RECORDS):
            log_entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            if log_entry.HasField("predict_log"):
                request = log_entry.predict_log.request
                inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
                self.run(request.model_spec.signature_name or Signature.SERVING_DEFAULT, inputs)
                count += 1
        return count

    @property
    def signatures(self) -> dict:
        return self._signatures

    def signature(self, name: str):
        name = name or Signature.SERVING_DEFAULT
        if name not in self._signatures:
            raise errors.SignatureNotFound(
                f"Serving signature name: \"{name}\" not found in signature def")
        return self._signatures[name]

    def run(self, signature_name: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs a signature (through its batch scheduler when batching is on)."""
        signature_name = signature_name or Signature.SERVING_DEFAULT
        function = self.signature(signature_name)
        inputs = _check_inputs(function, inputs)
        scheduler = self._schedulers.get(signature_name)
        if scheduler is not None:
            return scheduler.submit(inputs)
        return _run(function, inputs)

    def acquire(self) -> None:
        with self._idle:
            self._in_flight += 1

    def release(self) -> None:
        with self._idle:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.notify_all()

    def unload(self, timeout: float = 60.0) -> None:
        """Waits for in-flight requests, then drops the model."""
        self.state = UNLOADING
        with self._idle:
            self._idle.wait_for(lambda: self._in_flight == 0, timeout=timeout)
        for scheduler in self._schedulers.values():
            scheduler.close()
        self._schedulers.clear()
        self._signatures = {}
        self._loaded = None
        self.state = END


def _batchable(function) -> bool:
    """Batching needs every input and output to be batch-major ([None, ...])."""
    _, specs = function.structured_input_signature
    outputs = function.structured_outputs
    shapes = [s.shape for s in specs.values()] + [o.shape for o in outputs.values()]
    return all(shape.rank and shape[0] is None for shape in shapes)


def _check_inputs(function, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    _, specs = function.structured_input_signature
    missing = set(specs) - set(inputs)
    extra = set(inputs) - set(specs)
    if missing or extra:
        raise errors.InvalidInput(
            f"input keys {sorted(inputs)} do not match the signature's {sorted(specs)}"
            + (f"; missing {sorted(missing)}" if missing else "") + (f"; unexpected {sorted(extra)}" if extra else ""))
    checked = {}
    for key, spec in specs.items():
        value = np.asarray(inputs[key])
        if spec.dtype == tf.string:
            if value.dtype.kind not in ("S", "O", "U"):
                raise errors.InvalidInput(f"input '{key}' must be DT_STRING, got {value.dtype}")
        elif not np.can_cast(value.dtype, spec.dtype.as_numpy_dtype, casting="same_kind"):
            raise errors.InvalidInput(f"input '{key}' must be {spec.dtype.name}, got {value.dtype}")
        if not spec.shape.is_compatible_with(value.shape):
            raise errors.InvalidInput(f"input '{key}' has shape {list(value.shape)}, expected {spec.shape}")
        if spec.shape.rank and value.shape[0] == 0:
            raise errors.InvalidInput(f"input '{key}' is empty")
        checked[key] = value
    return checked


def _run(function, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    try:
        outputs = function(**{k: tf.constant(v) for k, v in inputs.items()})
    except (tf.errors.InvalidArgumentError, ValueError, TypeError) as error:
        message = getattr(error, "message", str(error)).strip().splitlines()[0]
        raise errors.InvalidInput(f"the model rejected the input: {message}") from error
    return {k: v.numpy() for k, v in outputs.items()}


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """Where one served model's versions live: ``<storage>/<folder>/<version>/``, and which of them to serve."""

    name: str
    storage: ModelStorage
    folder: str
    policy: VersionPolicy = VersionPolicy()


class ModelManager:
    """Keeps the policy's versions of each model loaded; thread-safe lookups for the servers.

    Models come from one storage (``<base>/<model name>/``, one policy for all) or, with ``sources``, each from its
    own folder with its own policy (a model config file's entries).
    """

    def __init__(self, storage: ModelStorage | None, model_names: list[str], policy: VersionPolicy | None = None,
                 batching: BatchingOptions | None = None, poll_seconds: float = 2.0, on_change=None,
                 on_batch=None, sources: list[ModelSource] | None = None):
        if sources is None:
            sources = [ModelSource(name, storage, name, policy or VersionPolicy()) for name in model_names]
        self._sources = {source.name: source for source in sources}
        self.model_names = list(self._sources)
        self.batching = batching
        self.poll_seconds = poll_seconds
        self.on_change = on_change or (lambda: None)
        self.on_batch = on_batch  # called with the size of every executed batch (the batch-size metric)
        self._lock = threading.RLock()
        self._versions: dict[str, dict[int, ServedVersion]] = {name: {} for name in self.model_names}
        # model -> version -> (error message, storage fingerprint when it failed)
        self._failed: dict[str, dict[int, tuple[str, tuple]]] = {name: {} for name in self.model_names}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> None:
        self.poll_once()
        self._thread = threading.Thread(target=self._poll_forever, name="model-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
        with self._lock:
            served = [v for versions in self._versions.values() for v in versions.values()]
            for versions in self._versions.values():
                versions.clear()
        for version in served:
            version.unload(timeout=5)

    def _poll_forever(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - the poller must survive storage hiccups
                log.exception("model poll failed")

    def poll_once(self) -> None:
        for name in self.model_names:
            self._sync(name)

    def _sync(self, name: str) -> None:
        source = self._sources[name]
        available = source.storage.list_versions(source.folder)
        failed = self._failed[name]
        for version in [v for v in failed if v in available]:
            # A version that failed while it was still being copied is retried once its files change.
            if source.storage.fingerprint(source.folder, version) != failed[version][1]:
                del failed[version]
        wanted = source.policy.select([v for v in available if v not in failed])
        with self._lock:
            loaded = dict(self._versions[name])
        for version in wanted:
            if version not in loaded:
                self._load(name, version)
        with self._lock:
            current = self._versions[name]
            keep = set(wanted) & set(current)
            # Never leave a model with nothing: old versions go only once a wanted version is available.
            retire = [v for v in current if v not in keep] if keep else []
            retired = [current.pop(v) for v in retire]
        for version in retired:
            log.info("unloading %s version %d", name, version.version)
            version.unload()
            source.storage.release(version.path)
        if retired:
            self.on_change()

    def _load(self, name: str, version: int) -> None:
        started = time.time()
        path = None
        storage, folder = self._sources[name].storage, self._sources[name].folder
        try:
            path = storage.local_path(folder, version)
            served = ServedVersion(name, version, path, self.batching, self.on_batch)
            served.load()
            warmups = served.warm_up()
            served.state = AVAILABLE
        except Exception as error:  # noqa: BLE001 - any load failure is reported, never fatal
            message = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            log.error("failed to load %s version %d: %s", name, version, message)
            try:
                fingerprint = storage.fingerprint(folder, version)
            except Exception:  # noqa: BLE001 - without a fingerprint the version is retried on the next poll
                fingerprint = ()
            self._failed[name][version] = (message, fingerprint)
            if path:
                storage.release(path)
            self.on_change()
            return
        with self._lock:
            self._versions[name][version] = served
        log.info("loaded %s version %d in %.1fs (%d warm-up requests)", name, version, time.time() - started,
                 warmups)
        self.on_change()

    # --- lookups -------------------------------------------------------------------------------------------
    def acquire(self, name: str, version: int | None = None, label: str | None = None) -> ServedVersion:
        """The requested (or latest) available version, with its in-flight count raised: release() after use."""
        with self._lock:
            if name not in self._versions:
                raise errors.ModelNotFound(f"Servable not found for request: Latest({name})")
            versions = self._versions[name]
            if label:
                raise errors.InvalidInput(f"version labels are not configured for model {name} (asked '{label}')")
            if version is None:
                if not versions:
                    raise errors.Unavailable(f"Servable not found for request: Latest({name}); no version loaded")
                served = versions[max(versions)]
            elif version in versions:
                served = versions[version]
            else:
                raise errors.ModelNotFound(f"Servable not found for request: Specific({name}, {version})")
            served.acquire()
            return served

    def status(self, name: str) -> list[dict]:
        """TF Serving-style version statuses: loaded versions, plus failed ones with their error."""
        with self._lock:
            if name not in self._versions:
                raise errors.ModelNotFound(f"Could not find any versions of model {name}")
            statuses = [{"version": v.version, "state": v.state, "error": ""} for v in self._versions[name].values()]
            statuses += [{"version": v, "state": END, "error": e} for v, (e, _) in self._failed[name].items()]
        return sorted(statuses, key=lambda s: s["version"])

    def loaded(self) -> dict[str, list[int]]:
        with self._lock:
            return {name: sorted(versions) for name, versions in self._versions.items()}

    def ready(self) -> bool:
        with self._lock:
            return all(self._versions[name] for name in self.model_names)
