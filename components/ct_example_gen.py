"""CtExampleGen: chest CT slices laid out as ``<root>/<split>/<class folder>/<image>`` -> tf.Examples.

Each example keeps the original encoded bytes (PNG/JPEG; other formats Pillow reads are re-encoded as PNG),
the class id, the file's sha256, its path relative to the data root, and its width and height. Files that
are not readable images are skipped with a logged reason and counted (Beam counters ``skipped_<reason>``);
they never fail the run.
"""

import dataclasses
import hashlib
import io
import logging
import os

import apache_beam as beam
import tensorflow as tf
from PIL import Image
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import standard_component_specs

from components import features
from radassist.contract import IMAGE_LIMITS, ImageRejected

log = logging.getLogger(__name__)

# Images outside the product's one image policy (radassist.contract) are skipped, as intake and the server refuse them.
NATIVE_FORMATS = {"PNG", "JPEG"}


class SkippedFile(Exception):
    """A file that cannot become a training example; ``reason`` is a short counter-friendly code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class ScanImage:
    """One validated image file, ready to become a tf.Example."""

    encoded: bytes
    label: int
    sha256: str
    filename: str
    width: int
    height: int

    def to_example(self) -> tf.train.Example:
        def _bytes(value: bytes) -> tf.train.Feature:
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

        def _int(value: int) -> tf.train.Feature:
            return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

        return tf.train.Example(
            features=tf.train.Features(
                feature={
                    features.IMAGE_KEY: _bytes(self.encoded),
                    features.LABEL_KEY: _int(self.label),
                    features.SHA256_KEY: _bytes(self.sha256.encode()),
                    features.FILENAME_KEY: _bytes(self.filename.encode()),
                    features.WIDTH_KEY: _int(self.width),
                    features.HEIGHT_KEY: _int(self.height),
                }
            )
        )


def split_files(data_root: str, splits) -> list[str]:
    """Every file of a data root's splits, ``<root>/<split>/<class folder>/<file>`` (local or a gfile URI), sorted;
    folders whose name is no class are listed too (read_scan_image skips their files with a reason)."""
    found = []
    for split in splits:
        found.extend(path for path in tf.io.gfile.glob(os.path.join(data_root, split, "*", "*"))
                     if not tf.io.gfile.isdir(path))
    return sorted(found)


def read_scan_image(path: str, data_root: str) -> ScanImage:
    """Reads and validates one image file under ``data_root``.

    Raises:
      SkippedFile: the folder names no class, or the file is empty, too large, or not a readable image.
    """
    folder = os.path.basename(os.path.dirname(path))
    class_name = features.class_from_folder(folder)
    if class_name is None:
        raise SkippedFile("unknown_class", f"{path}: folder {folder!r} names no known class")
    size = tf.io.gfile.stat(path).length
    if size == 0:
        raise SkippedFile("empty", f"{path}: empty file")
    if size > IMAGE_LIMITS.max_bytes:
        raise SkippedFile("too_large", f"{path}: {size} bytes > {IMAGE_LIMITS.max_bytes}")
    with tf.io.gfile.GFile(path, "rb") as handle:
        raw = handle.read()
    try:
        with IMAGE_LIMITS.open_image(raw) as image:
            width, height = image.size
            image_format = image.format
            image.load()  # decodes fully: truncated or corrupt data fails here
            encoded = raw
            if image_format not in NATIVE_FORMATS:
                buffer = io.BytesIO()
                image.save(buffer, format="PNG")
                encoded = buffer.getvalue()
    except ImageRejected as error:
        raise SkippedFile("outside_image_limits", f"{path}: {error}") from error
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise SkippedFile("not_an_image", f"{path}: {error}") from error
    relative = os.path.relpath(path, data_root).replace(os.sep, "/")
    return ScanImage(
        encoded=encoded,
        label=features.CLASS_NAMES.index(class_name),
        sha256=hashlib.sha256(raw).hexdigest(),
        filename=relative,
        width=width,
        height=height,
    )


def scan_example(path: str, data_root: str) -> tf.train.Example:
    return read_scan_image(path, data_root).to_example()


class ToExample(beam.DoFn):
    """``to_example(item, data_root)`` for each input; a SkippedFile is logged and counted (Beam counters
    ``<component>:skipped_<reason>`` and ``<component>:examples``), never a failure. Both ExampleGens use it."""

    def __init__(self, to_example, data_root: str, component: str):
        self._to_example, self._data_root, self._component = to_example, data_root, component

    def process(self, item):
        try:
            example = self._to_example(item, self._data_root)
        except SkippedFile as skipped:
            log.warning("%s skipped %s", self._component, skipped)
            beam.metrics.Metrics.counter(self._component, f"skipped_{skipped.reason}").inc()
            return
        beam.metrics.Metrics.counter(self._component, "examples").inc()
        yield example


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(tf.train.Example)
def _ImagesToExample(pipeline: beam.Pipeline, exec_properties: dict,  # noqa: N802 - a PTransform, named like TFX's
                     split_pattern: str) -> beam.PCollection:
    data_root = exec_properties[standard_component_specs.INPUT_BASE_KEY]
    paths = sorted(p for p in tf.io.gfile.glob(os.path.join(data_root, split_pattern)) if not tf.io.gfile.isdir(p))
    log.info("CtExampleGen: %d files match %s", len(paths), split_pattern)
    return (
        pipeline
        | "ListFiles" >> beam.Create(paths)
        | "Reshuffle" >> beam.Reshuffle()
        | "ToExample" >> beam.ParDo(ToExample(scan_example, data_root, "CtExampleGen"))
    )


class Executor(BaseExampleGenExecutor):
    """ExampleGen executor that reads class-folder image trees."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:  # noqa: N802 - TFX's method name
        return _ImagesToExample


def split_input_config(splits=features.SPLITS) -> example_gen_pb2.Input:
    """Keeps the dataset's official splits as TFX splits: ``<split>/<class folder>/<file>``."""
    return example_gen_pb2.Input(
        splits=[example_gen_pb2.Input.Split(name=split, pattern=f"{split}/*/*") for split in splits]
    )


def CtExampleGen(input_base: str) -> FileBasedExampleGen:  # noqa: N802 - reads like a component class
    """A FileBasedExampleGen over a chest-CT class-folder tree with its official splits."""
    return FileBasedExampleGen(
        input_base=input_base,
        input_config=split_input_config(),
        custom_executor_spec=executor_spec.BeamExecutorSpec(Executor),
    ).with_id("CtExampleGen")
