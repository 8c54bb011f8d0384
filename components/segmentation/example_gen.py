"""NoduleExampleGen: the LIDC-IDRI nodule crops (MANIFEST.csv, images/, masks/) -> tf.Examples, split patient-wise.

Each example keeps the slice's encoded PNG, its readers' encoded masks (READERS of them, in reader order), the
patient, the nodule, the file's path and sha256 and whether it is the nodule's centre slice. The TFX splits are the
manifest's (features.SPLITS); a patient listed in two splits fails the run, since the test split would then not be
patient-wise. Files that are missing, unreadable or of another size are skipped with a logged reason and counted
(Beam counters ``skipped_<reason>``). Every split's pattern is the manifest itself: it lists each file's sha256, so
TFX's input fingerprint changes whenever the data does.
"""

import csv
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
from tfx.utils import proto_utils

from components.ct_example_gen import SkippedFile, ToExample
from components.segmentation import features

log = logging.getLogger(__name__)

MANIFEST = "MANIFEST.csv"


@dataclasses.dataclass(frozen=True)
class ManifestSlice:
    """One image row of the manifest."""

    split: str
    path: str
    pair_id: str
    patient_id: str
    nodule: str
    is_center_slice: bool


def read_manifest(data_root: str) -> list[ManifestSlice]:
    """The manifest's image rows.

    Raises:
      FileNotFoundError: no MANIFEST.csv under ``data_root``.
      ValueError: a patient appears in two splits.
    """
    path = os.path.join(data_root, MANIFEST)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path} not found: pass the folder holding MANIFEST.csv, images/ and masks/")
    with tf.io.gfile.GFile(path) as handle:
        rows = [row for row in csv.DictReader(handle) if row["kind"] == "image"]
    slices = [ManifestSlice(split=row["split"], path=row["path"], pair_id=row["pair_id"],
                            patient_id=row["patient_id"], nodule=f"{row['patient_id']}_{row['nodule']}",
                            is_center_slice=row["is_center_slice"] == "1") for row in rows]
    splits_of: dict[str, set[str]] = {}
    for item in slices:
        splits_of.setdefault(item.patient_id, set()).add(item.split)
    mixed = sorted(patient for patient, splits in splits_of.items() if len(splits) > 1)
    if mixed:
        raise ValueError(f"{path}: patients in more than one split (the split must be patient-wise): {mixed[:5]}")
    return slices


def _read_png(path: str, expect_size: int) -> bytes:
    if not tf.io.gfile.exists(path):
        raise SkippedFile("missing", path)
    with tf.io.gfile.GFile(path, "rb") as handle:
        encoded = handle.read()
    try:
        with Image.open(io.BytesIO(encoded)) as image:
            image.load()
            if image.format != "PNG" or image.size != (expect_size, expect_size):
                raise SkippedFile("unexpected_format", f"{path}: {image.format} {image.size}, expected a "
                                   f"{expect_size} x {expect_size} PNG")
    except (OSError, SyntaxError, ValueError) as error:
        raise SkippedFile("not_an_image", f"{path}: {error}") from error
    return encoded


def to_example(item: ManifestSlice, data_root: str) -> tf.train.Example:
    """The slice's tf.Example. Raises SkippedFile for a missing, unreadable or odd-sized image or mask."""
    size = features.CROP_SIZE
    image = _read_png(os.path.join(data_root, item.path), size)
    masks = [_read_png(os.path.join(data_root, "masks", f"{item.pair_id}_mask-{reader}.png"), size)
             for reader in range(features.READERS)]

    def _bytes(*values: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))

    return tf.train.Example(features=tf.train.Features(feature={
        features.IMAGE_KEY: _bytes(image),
        features.READER_MASKS_KEY: _bytes(*masks),
        features.PATIENT_KEY: _bytes(item.patient_id.encode()),
        features.NODULE_KEY: _bytes(item.nodule.encode()),
        features.FILENAME_KEY: _bytes(item.path.encode()),
        features.SHA256_KEY: _bytes(hashlib.sha256(image).hexdigest().encode()),
        features.CENTER_SLICE_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(item.is_center_slice)])),
    }))


class Executor(BaseExampleGenExecutor):
    """Reads the manifest once and writes each TFX split from the manifest split it names (features.SPLITS)."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:  # noqa: N802 - TFX's method name
        raise NotImplementedError("NoduleExampleGen splits by the manifest: see GenerateExamplesByBeam")

    def GenerateExamplesByBeam(self, pipeline: beam.Pipeline, exec_properties: dict):  # noqa: N802 - TFX's name
        input_config = example_gen_pb2.Input()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.INPUT_CONFIG_KEY], input_config)
        data_root = exec_properties[standard_component_specs.INPUT_BASE_KEY]
        slices = read_manifest(data_root)
        result = {}
        for split in input_config.splits:
            chosen = [item for item in slices if item.split == features.SPLITS[split.name]]
            log.info("NoduleExampleGen: %d slices in split %s", len(chosen), split.name)
            result[split.name] = (pipeline
                                  | f"List[{split.name}]" >> beam.Create(chosen)
                                  | f"Reshuffle[{split.name}]" >> beam.Reshuffle()
                                  | f"ToExample[{split.name}]" >> beam.ParDo(ToExample(to_example, data_root,
                                                                                    "NoduleExampleGen")))
        return result


def NoduleExampleGen(input_base: str) -> FileBasedExampleGen:  # noqa: N802 - reads like a component class
    """A FileBasedExampleGen over a nodule-crop folder, with the manifest's patient-wise splits."""
    return FileBasedExampleGen(
        input_base=input_base,
        input_config=example_gen_pb2.Input(splits=[
            example_gen_pb2.Input.Split(name=name, pattern=MANIFEST) for name in features.SPLITS]),
        custom_executor_spec=executor_spec.BeamExecutorSpec(Executor),
    ).with_id("NoduleExampleGen")
