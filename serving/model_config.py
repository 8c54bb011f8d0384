"""Which models the server serves: TF Serving's own ``--model_config_file`` format (a ModelServerConfig text proto
with a ``model_config_list``), so the official TF Serving image and our server run the same file.

Each ``config`` names a model and its ``base_path`` (the folder, local or s3://, holding its integer versions) and
optionally a ``model_version_policy`` (``latest { num_versions }``, ``specific { versions }`` or ``all {}``). Labels,
other platforms and a ``custom_model_config`` are TF Serving features this server does not have: refused with a
message rather than ignored.
"""

import dataclasses
import os
import sys

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving.model_store import VersionPolicy
from serving.prediction_log import LoggingConfig


class ModelConfigError(ValueError):
    """The model config file cannot be read or asks for something this server does not do."""


@dataclasses.dataclass(frozen=True)
class ServedModel:
    """One entry of the model config list."""

    name: str
    base_path: str          # the model's own folder: <base_path>/<version>/saved_model.pb
    policy: VersionPolicy = VersionPolicy()
    logging: LoggingConfig | None = None  # its ``logging_config``: requests logged as PredictionLog records

    @property
    def parent(self) -> str:
        """The folder holding the model's folder (what the server's storage lists)."""
        return self.base_path.rstrip("/").rsplit("/", 1)[0] if "://" in self.base_path else \
            os.path.dirname(os.path.abspath(self.base_path))

    @property
    def folder(self) -> str:
        return self.base_path.rstrip("/").rsplit("/", 1)[-1]


def _policy(config) -> VersionPolicy:
    which = config.model_version_policy.WhichOneof("policy_choice")
    if which is None:
        return VersionPolicy()  # TF Serving's default: the latest version
    if which == "latest":
        return VersionPolicy(latest=config.model_version_policy.latest.num_versions or 1)
    if which == "specific":
        versions = tuple(int(v) for v in config.model_version_policy.specific.versions)
        if not versions:
            raise ModelConfigError(f"model {config.name}: a specific version policy needs versions")
        return VersionPolicy(pinned=versions)
    return VersionPolicy(latest=sys.maxsize)  # all


def _logging(config, source: str) -> LoggingConfig | None:
    if not config.HasField("logging_config"):
        return None
    collector = config.logging_config.log_collector_config
    if collector.type not in ("", "tfrecord"):
        raise ModelConfigError(f"{source}: model {config.name}: log collector type {collector.type!r} is not "
                               "supported (TFRecord files under filename_prefix are)")
    try:
        return LoggingConfig(collector.filename_prefix, config.logging_config.sampling_config.sampling_rate)
    except ValueError as error:
        raise ModelConfigError(f"{source}: model {config.name}: {error}") from error


def parse_model_config(text: str, source: str = "model config") -> list[ServedModel]:
    """The models of a ModelServerConfig text proto.

    Raises:
      ModelConfigError: not a ModelServerConfig, no models, a model twice, or a feature this server lacks.
    """
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as error:
        raise ModelConfigError(f"{source}: not a TF Serving model config: {error}") from error
    if config.WhichOneof("config") != "model_config_list" or not config.model_config_list.config:
        raise ModelConfigError(f"{source}: needs a model_config_list with at least one config")
    models, seen = [], set()
    for entry in config.model_config_list.config:
        if not entry.name or not entry.base_path:
            raise ModelConfigError(f"{source}: every config needs a name and a base_path")
        if entry.name in seen:
            raise ModelConfigError(f"{source}: model {entry.name} is listed twice")
        if entry.model_platform not in ("", "tensorflow"):
            raise ModelConfigError(f"{source}: model {entry.name}: platform {entry.model_platform!r} is not served "
                                   "(only tensorflow SavedModels)")
        if entry.version_labels:
            raise ModelConfigError(f"{source}: model {entry.name}: version labels are not supported by this server")
        seen.add(entry.name)
        models.append(ServedModel(entry.name, entry.base_path, _policy(entry), _logging(entry, source)))
    return models


def read_model_config(path: str) -> list[ServedModel]:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as error:
        raise ModelConfigError(f"cannot read the model config file {path}: {error.strerror}") from error
    return parse_model_config(text, path)


def format_model_config(models: list[ServedModel]) -> str:
    """The ModelServerConfig text proto for ``models`` (what ``radassist serve --write-model-config`` writes)."""
    config = model_server_config_pb2.ModelServerConfig()
    for model in models:
        entry = config.model_config_list.config.add(name=model.name, base_path=model.base_path,
                                                    model_platform="tensorflow")
        if model.policy.pinned:
            entry.model_version_policy.specific.versions.extend(model.policy.pinned)
        elif model.policy.latest == sys.maxsize:
            entry.model_version_policy.all.SetInParent()
        else:
            entry.model_version_policy.latest.num_versions = model.policy.latest
        if model.logging:
            entry.logging_config.log_collector_config.filename_prefix = model.logging.filename_prefix
            entry.logging_config.sampling_config.sampling_rate = model.logging.sampling_rate
    return text_format.MessageToString(config)
