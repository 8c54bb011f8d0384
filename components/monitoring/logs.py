"""Reading the model server's prediction logs (TF Serving's PredictionLog TFRecords, gzip) for a time window.

The server writes ``<prefix>/<model>/<version>/<run>-<n>.tfrecord.gz`` and rotates files by count and by age
(serving/prediction_log.py); a PredictionLog has no timestamp, so a record belongs to the window in which its file
was finished (its modification time locally, LastModified on S3): at most one rotation interval after the call.
"""

import dataclasses
import datetime as dt
import glob
import os
import tempfile
import urllib.parse

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from radassist.contract import PREDICTION_LOG_SUFFIX

SUFFIX = PREDICTION_LOG_SUFFIX
CLASSIFIER_SIGNATURES = ("predict_image", "explain", "serving_default")  # the ones whose outputs are monitored


@dataclasses.dataclass(frozen=True)
class Window:
    """A half-open time window [start, end), UTC."""

    start: dt.datetime
    end: dt.datetime

    def __post_init__(self):
        if self.end <= self.start:
            raise ValueError(f"the window ends ({self.end}) before it starts ({self.start})")

    @classmethod
    def parse(cls, text: str, now: dt.datetime | None = None) -> "Window":
        """``START/END`` (ISO 8601, UTC when no zone is given) or a duration back from now: ``24h``, ``7d``,
        ``90m``."""
        now = now or dt.datetime.now(dt.UTC)
        if "/" in text:
            start, end = (_utc(dt.datetime.fromisoformat(part)) for part in text.split("/", 1))
            return cls(start, end)
        units = {"m": "minutes", "h": "hours", "d": "days"}
        if len(text) < 2 or text[-1] not in units or not text[:-1].replace(".", "", 1).isdigit():
            raise ValueError(f"window {text!r}: give START/END in ISO 8601 or a duration such as 24h, 7d, 90m")
        return cls(now - dt.timedelta(**{units[text[-1]]: float(text[:-1])}), now)

    def contains(self, moment: dt.datetime) -> bool:
        return self.start <= moment < self.end

    @property
    def label(self) -> str:
        return f"{self.start:%Y%m%dT%H%M%S}-{self.end:%Y%m%dT%H%M%S}"


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def log_files(prefix: str, model: str, window: Window) -> list[str]:
    """The finished log files of ``model`` (every version) whose file was closed within ``window``: local paths,
    or ``s3://`` URIs."""
    if prefix.startswith("s3://"):
        return _s3_files(prefix, model, window)
    found = []
    for path in sorted(glob.glob(os.path.join(prefix, model, "*", f"*{SUFFIX}"))):
        closed = dt.datetime.fromtimestamp(os.path.getmtime(path), dt.UTC)
        if window.contains(closed):
            found.append(path)
    return found


def _s3_files(prefix: str, model: str, window: Window) -> list[str]:
    import boto3

    parsed = urllib.parse.urlparse(prefix)
    key_prefix = "/".join(part for part in (parsed.path.strip("/"), model) if part) + "/"
    found = []
    for page in boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=parsed.netloc,
                                                                              Prefix=key_prefix):
        for item in page.get("Contents", []):
            if item["Key"].endswith(SUFFIX) and window.contains(_utc(item["LastModified"])):
                found.append(f"s3://{parsed.netloc}/{item['Key']}")
    return sorted(found)


def read_records(paths: list[str]) -> list[prediction_log_pb2.PredictionLog]:
    """Every PredictionLog of the files (S3 objects are fetched to a temporary file first)."""
    records = []
    for path in paths:
        local, temporary = path, None
        if path.startswith("s3://"):
            import boto3

            parsed = urllib.parse.urlparse(path)
            handle, temporary = tempfile.mkstemp(suffix=SUFFIX)
            os.close(handle)
            boto3.client("s3").download_file(parsed.netloc, parsed.path.lstrip("/"), temporary)
            local = temporary
        try:
            for raw in tf.data.TFRecordDataset(local, compression_type="GZIP"):
                records.append(prediction_log_pb2.PredictionLog.FromString(raw.numpy()))
        finally:
            if temporary:
                os.remove(temporary)
    return records


@dataclasses.dataclass
class LoggedCalls:
    """A window's classifier calls, one row per image: the image bytes, the model version, the signature and the
    response's outputs (contract names, first axis = image)."""

    images: list[bytes]
    versions: list[int]
    signatures: list[str]
    outputs: dict[str, np.ndarray]
    skipped: int = 0  # records of other signatures (the segmenter's, model_info) or unreadable

    def __len__(self) -> int:
        return len(self.images)


def calls(records: list[prediction_log_pb2.PredictionLog]) -> LoggedCalls:
    """Unbatches the records of classifier signatures; an output missing from some records is dropped."""
    images, versions, signatures, columns, skipped = [], [], [], {}, 0
    for record in records:
        spec = record.predict_log.request.model_spec
        if record.WhichOneof("log_type") != "predict_log" or spec.signature_name not in CLASSIFIER_SIGNATURES:
            skipped += 1
            continue
        request, response = record.predict_log.request, record.predict_log.response
        if "images" in request.inputs:
            batch = [bytes(value) for value in tf.make_ndarray(request.inputs["images"]).reshape(-1)]
        elif "examples" in request.inputs:
            batch = [tf.train.Example.FromString(bytes(value)).features.feature["image"].bytes_list.value[0]
                     for value in tf.make_ndarray(request.inputs["examples"]).reshape(-1)]
        else:
            skipped += 1
            continue
        outputs = {name: tf.make_ndarray(tensor) for name, tensor in response.outputs.items()}
        if any(len(value) != len(batch) for value in outputs.values()) or "probabilities" not in outputs:
            skipped += 1
            continue
        images.extend(batch)
        versions.extend([int(spec.version.value)] * len(batch))
        signatures.extend([spec.signature_name or "serving_default"] * len(batch))
        for name, value in outputs.items():
            columns.setdefault(name, []).append(value)
    joined = {}
    for name, parts in columns.items():
        # An output some records lack, or whose shape differs between them (heat maps of two models), is dropped.
        if sum(len(part) for part in parts) == len(images) and len({part.shape[1:] for part in parts}) == 1:
            joined[name] = np.concatenate(parts)
    return LoggedCalls(images, versions, signatures, joined, skipped)
