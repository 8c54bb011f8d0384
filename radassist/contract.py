"""What every part of RadAssist agrees on and nothing else: dependency-free, imported by the pipeline, the model
server, the serving client and the portal alike.

- The model contract: the model name, the signature, input and output names of every exported SavedModel, and
  ``ModelInfo``, the model's own description of its vocabulary (class order, display names, image size, review
  line). Consumers learn the vocabulary from the model (its ``model_info`` signature or its info file), never from
  training code: a retrained model with another class order is labelled by its own info.
- ``IMAGE_LIMITS``: the one policy for the images any entry point accepts (ExampleGen, the portal's intake, the
  model server's input check), checked on the header before anything is decoded, so a small file cannot declare a
  large image.
"""

import dataclasses
import json
import os

MODEL_NAME = "radassist"  # the default TF Serving model name (and MLflow registered model name)
SEGMENTATION_MODEL_NAME = "radassist-seg"  # the nodule segmenter's, in the same model base path
CONTRACT_VERSION = 1      # bumped when a signature, input or output below changes meaning


class Signature:
    """Signature names of every exported SavedModel (docs/architecture.md, "The SavedModel signature contract")."""

    SERVING_DEFAULT = "serving_default"  # examples -> PREDICTION_OUTPUTS (TFMA, TF Serving's Classify)
    PREDICT_IMAGE = "predict_image"      # images -> PREDICTION_OUTPUTS
    EXPLAIN = "explain"                  # images -> EXPLAIN_OUTPUTS
    MODEL_INFO = "model_info"            # request -> model_info: the ModelInfo JSON, once per request element
    SEGMENT = "segment"                  # images -> SEGMENT_OUTPUTS (the segmenter)


class Input:
    EXAMPLES = "examples"  # serialized tf.Examples [N], feature ``image`` = encoded bytes
    IMAGES = "images"      # encoded PNG/JPEG bytes [N]
    REQUEST = "request"    # model_info: any strings [N] (one answer per element; the values are ignored)


class Output:
    PROBABILITIES = "probabilities"  # float32 [N, C], calibrated, in ModelInfo.class_names order
    CLASS_ID = "class_id"            # int64 [N], index into ModelInfo.class_names
    CLASS_NAME = "class_name"        # string [N], ModelInfo.class_names[class_id]
    NEEDS_REVIEW = "needs_review"    # bool [N]: top probability under the model's review line
    OOD_SCORE = "ood_score"          # float32 [N]: distance from the training data, 1.0 = the model's threshold
    IN_DOMAIN = "in_domain"          # bool [N]: False = outside the images the model was validated on
    OOD_REASON = "ood_reason"        # string [N]: "" in domain, else a machine-readable reason
    CROP_BOX = "crop_box"            # float32 [N, 4]: (y0, x0, y1, x1) of the input the model saw, in its pixels
    CROP_ANGLE = "crop_angle"        # float32 [N]: degrees that square is turned about its centre
    EMBEDDING = "embedding"          # float32 [N, K]: the image's leading principal components of the model's
                                     # pooled features (what drift monitoring compares; absent from older models)
    HEATMAP = "heatmap"              # float32 [N, H, W] in 0..1 over crop_box (explain only)
    MODEL_INFO = "model_info"        # string [N]: ModelInfo as JSON (model_info only)
    # segment (the segmenter): maps are padded to the largest image of the request; IMAGE_SIZE says each one's size.
    PROBABILITY_MAP = "probability_map"  # float32 [N, H, W]: nodule probability per input pixel (0 in the padding)
    IMAGE_SIZE = "image_size"            # int32 [N, 2]: (height, width) of each input, in its pixels
    LESION_COUNT = "lesion_count"        # int32 [N]: lesions found (the rows below hold the largest ones)
    LESION_AREA = "lesion_area"          # float32 [N, L]: pixels (0 past the count)
    LESION_CENTROID = "lesion_centroid"  # float32 [N, L, 2]: (y, x), input pixels
    LESION_LONG_AXIS = "lesion_long_axis"    # float32 [N, L]: largest in-plane diameter, pixels
    LESION_SHORT_AXIS = "lesion_short_axis"  # float32 [N, L]: width perpendicular to it, pixels
    LESION_LONG_AXIS_ANGLE = "lesion_long_axis_angle"  # float32 [N, L]: degrees from the x axis (y down)
    LESION_BOX = "lesion_box"            # float32 [N, L, 4]: (y0, x0, y1, x1), input pixels
    LESION_MEAN_PROBABILITY = "lesion_mean_probability"  # float32 [N, L]
    LESION_MAX_PROBABILITY = "lesion_max_probability"    # float32 [N, L]


PREDICTION_OUTPUTS = (Output.PROBABILITIES, Output.CLASS_ID, Output.CLASS_NAME, Output.NEEDS_REVIEW,
                      Output.OOD_SCORE, Output.IN_DOMAIN, Output.OOD_REASON, Output.CROP_BOX, Output.CROP_ANGLE,
                      Output.EMBEDDING)
EXPLAIN_OUTPUTS = (*PREDICTION_OUTPUTS, Output.HEATMAP)
LESION_OUTPUTS = (Output.LESION_AREA, Output.LESION_CENTROID, Output.LESION_LONG_AXIS, Output.LESION_SHORT_AXIS,
                  Output.LESION_LONG_AXIS_ANGLE, Output.LESION_BOX, Output.LESION_MEAN_PROBABILITY,
                  Output.LESION_MAX_PROBABILITY)
SEGMENT_OUTPUTS = (Output.PROBABILITY_MAP, Output.IMAGE_SIZE, Output.LESION_COUNT, *LESION_OUTPUTS)
# The model server's prediction log files (serving/prediction_log.py writes them, components/monitoring reads them).
PREDICTION_LOG_SUFFIX = ".tfrecord.gz"
# A monitored window's published files (components/monitoring/publish.py writes them, the portal reads them).
MONITORING_SUMMARY_FILE, MONITORING_REPORT_FILE = "summary.json", "report.html"
MONITORING_EVALUATION_FILE = "evaluation.html"  # TFMA over the window's doctor-labelled calls
# Where a SavedModel version keeps its info file (the full training record; ModelInfo reads its contract fields).
MODEL_INFO_PATH = os.path.join("assets.extra", "radassist_model.json")


class ContractError(ValueError):
    """A model's description or outputs do not follow this contract (a wrong or corrupt model, not bad input)."""


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """The model's vocabulary as the model states it: what a consumer needs to read its outputs."""

    class_names: tuple[str, ...]          # the order of ``probabilities``
    class_display_names: tuple[str, ...]  # for people, same order
    image_size: int                       # the square the network sees (Grad-CAM cells follow from it)
    signatures: tuple[str, ...] = ()
    uncertain_below: float | None = None  # the review line behind ``needs_review``
    contract_version: int = CONTRACT_VERSION
    lesion_threshold: float | None = None  # a segmenter's: the probability at and above which a pixel is lesion
    # A classifier's classes that mean "no cancer" (the worklist ranks by the probability of the others); empty when
    # the model does not say (exported before it could).
    negative_classes: tuple[str, ...] = ()

    def __post_init__(self):
        if not self.class_names or len(set(self.class_names)) != len(self.class_names):
            raise ContractError(f"model info: class_names must be distinct and non-empty, not {self.class_names}")
        if len(self.class_display_names) != len(self.class_names):
            raise ContractError("model info: one display name per class is needed")
        if not set(self.negative_classes) <= set(self.class_names):
            raise ContractError(f"model info: negative_classes {self.negative_classes} are not all classes")
        if self.contract_version > CONTRACT_VERSION:
            raise ContractError(f"model info: contract version {self.contract_version} is newer than this "
                                f"software's {CONTRACT_VERSION}; upgrade the portal and client")

    @property
    def display_names(self) -> dict[str, str]:
        return dict(zip(self.class_names, self.class_display_names, strict=True))

    def to_dict(self) -> dict:
        return {"contract_version": self.contract_version, "class_names": list(self.class_names),
                "class_display_names": list(self.class_display_names), "image_size": self.image_size,
                "signatures": list(self.signatures), "uncertain_below": self.uncertain_below,
                "lesion_threshold": self.lesion_threshold, "negative_classes": list(self.negative_classes)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict) -> "ModelInfo":
        """The contract's fields of a model-info mapping (the info file holds more; the rest is ignored)."""
        try:
            names = tuple(str(n) for n in values["class_names"])
            return cls(class_names=names,
                       class_display_names=tuple(str(n) for n in values.get("class_display_names", names)),
                       image_size=int(values["image_size"]),
                       signatures=tuple(str(n) for n in values.get("signatures", ())),
                       uncertain_below=None if values.get("uncertain_below") is None
                       else float(values["uncertain_below"]),
                       contract_version=int(values.get("contract_version", CONTRACT_VERSION)),
                       lesion_threshold=None if values.get("lesion_threshold") is None
                       else float(values["lesion_threshold"]),
                       negative_classes=tuple(str(n) for n in values.get("negative_classes", ())))
        except (KeyError, TypeError, ValueError) as error:
            if isinstance(error, ContractError):
                raise
            raise ContractError(f"model info is incomplete or malformed: {error!r}") from error

    @classmethod
    def from_json(cls, text: str | bytes) -> "ModelInfo":
        try:
            values = json.loads(text)
        except ValueError as error:
            raise ContractError(f"model info is not JSON: {error}") from error
        if not isinstance(values, dict):
            raise ContractError("model info is not a JSON object")
        return cls.from_dict(values)

    @classmethod
    def from_saved_model(cls, path: str) -> "ModelInfo | None":
        """The info of the SavedModel version at ``path`` (None for a model exported without one)."""
        try:
            with open(os.path.join(path, MODEL_INFO_PATH), encoding="utf-8") as handle:
                return cls.from_json(handle.read())
        except FileNotFoundError:
            return None


class ImageRejected(ValueError):
    """An image breaks ``ImageLimits``; the message says which limit, in words a user understands."""


@dataclasses.dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 50 * 1024 * 1024   # encoded file (a ZIP entry, a request element)
    max_pixels: int = 2048 * 2048       # width x height of the decoded image (one frame); CT is 512-1024 a side
    max_side: int = 2048                # the longer side, in pixels
    max_stored_side: int = 2048         # the portal keeps and analyses larger images downscaled to this (the
                                        # model sees a 224-pixel square): equal to max_side while that is 2048
    max_aspect: float = 4.0             # longer side / shorter side (CT slices are roughly square)
    max_frames: int = 1024              # frames a multi-frame DICOM may declare (only one is decoded)

    def check_bytes(self, size: int) -> None:
        if size > self.max_bytes:
            raise ImageRejected(f"{size} bytes is more than the {self.max_bytes} allowed")

    def check_size(self, width: int, height: int, frames: int = 1) -> None:
        """Raises ImageRejected when a header's dimensions break a limit (before the pixels are decoded)."""
        if width < 1 or height < 1:
            raise ImageRejected(f"{width}x{height} pixels: the image has no pixels")
        if width * height > self.max_pixels:
            raise ImageRejected(f"{width}x{height} pixels is more than the {self.max_pixels} allowed")
        if max(width, height) > self.max_side:
            raise ImageRejected(f"{width}x{height} pixels: the longer side is more than the {self.max_side} allowed")
        if max(width, height) > self.max_aspect * min(width, height):
            raise ImageRejected(f"{width}x{height} pixels: one side is more than {self.max_aspect:g} times the "
                                "other (not a CT slice)")
        if frames > self.max_frames:
            raise ImageRejected(f"{frames} frames is more than the {self.max_frames} allowed")

    def open_image(self, data: bytes, count_frames: bool = False):
        """``data`` opened with Pillow (its header read, no pixel decoded) once its dimensions (and, with
        ``count_frames``, its frame count) pass; ImageRejected otherwise, Pillow's own bomb check included. Pillow
        raises OSError for data it cannot read. Pillow is imported here, so this module stays dependency-free."""
        import io

        from PIL import Image

        try:
            image = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise ImageRejected(f"more than {self.max_pixels} pixels (possible decompression bomb)") from error
        try:
            self.check_size(*image.size, getattr(image, "n_frames", 1) if count_frames else 1)
        except ImageRejected:
            image.close()
            raise
        return image


IMAGE_LIMITS = ImageLimits()
