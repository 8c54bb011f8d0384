"""Training the segmentation network, and the measures it is judged by.

CPU recipe (default): the encoder's first blocks stay as pretrained, the rest trains on small windows of the crops
(cheaper than whole crops, and a window places the nodule anywhere, against the crops' centre prior), some of them
windows with no nodule at all (the crops hold nothing else to learn "no nodule here" from), under bfloat16 where
the CPU has it. The full recipe trains every block, on whole crops, for longer: for GPUs.
"""

import dataclasses
import functools
import time
import weakref
from collections.abc import Callable

import numpy as np
import tensorflow as tf
import tf_keras

from components.segmentation.unet import ENCODER_STRIDE, UNetConfig, build_unet
from components.trainer.recipes import bfloat16_native, keras_policy


@dataclasses.dataclass(frozen=True)
class SegmentationConfig:
    recipe: str = "cpu"                   # cpu | full
    unet: UNetConfig = UNetConfig()
    window: int = 96                      # training window (px, a multiple of ENCODER_STRIDE)
    negative_fraction: float = 0.2        # windows holding no consensus pixel (negative_window)
    epochs: int = 8
    batch_size: int = 16
    learning_rate: float = 1e-3           # Adam, cosine decay to 2 % of it
    seed: int = 0
    precision: str = "auto"               # auto (bfloat16 where native) | bfloat16 | float32
    time_budget_s: float | None = 1080.0  # training stops within this (the schedule shortened); None: all epochs

    @classmethod
    def full(cls, **overrides) -> "SegmentationConfig":
        return cls(**{"recipe": "full", "unet": UNetConfig(train_from_block=1), "window": 128,
                      "negative_fraction": 0.2, "epochs": 60, "learning_rate": 3e-4, "time_budget_s": None,
                      **overrides})

    @classmethod
    def from_dict(cls, values: dict | None) -> "SegmentationConfig":
        """A config from plain values (a pipeline's custom_config, JSON): ``recipe: full`` starts from ``full()``;
        ``unet`` is a mapping of UNetConfig fields."""
        values = dict(values or {})
        unknown = set(values) - {field.name for field in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown segmentation training options: {sorted(unknown)}")
        unet = dict(values.pop("unet", None) or {})
        unknown = set(unet) - {field.name for field in dataclasses.fields(UNetConfig)}
        if unknown:
            raise ValueError(f"unknown U-Net options: {sorted(unknown)}")
        if "decoder_widths" in unet:
            unet["decoder_widths"] = tuple(unet["decoder_widths"])
        base = cls.full() if values.get("recipe") == "full" else cls(recipe=values.get("recipe", "cpu"))
        return dataclasses.replace(base, unet=dataclasses.replace(base.unet, **unet), **values)

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["unet"]["decoder_widths"] = list(self.unet.decoder_widths)
        return values

    def __post_init__(self):
        if self.precision not in ("auto", "bfloat16", "float32"):
            raise ValueError(f"precision must be auto, bfloat16 or float32, not {self.precision!r}")
        if self.window % ENCODER_STRIDE:
            raise ValueError(f"window must be a multiple of {ENCODER_STRIDE}, not {self.window}")
        if self.recipe not in ("cpu", "full"):
            raise ValueError(f"recipe must be cpu or full, not {self.recipe!r}")


def dtype_policy(config: SegmentationConfig) -> str:
    if config.precision == "auto":
        return "mixed_bfloat16" if config.recipe == "cpu" and bfloat16_native() else "float32"
    return "mixed_bfloat16" if config.precision == "bfloat16" else "float32"


def _turned(pixels: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Both turned by the same random multiple of 90 degrees and mirrored at random."""
    turns = int(rng.integers(4))
    pixels, mask = np.rot90(pixels, turns), np.rot90(mask, turns)
    if rng.random() < 0.5:
        pixels, mask = pixels[:, ::-1], mask[:, ::-1]
    return pixels, mask


def negative_window(images: np.ndarray, targets: np.ndarray, rng: np.random.Generator,
                    window: int) -> tuple[np.ndarray, np.ndarray]:
    """A window with (almost always) no nodule in it: four quarter windows, each from a nodule-free place of a
    random image, turned and mirrored. A crop centred on its nodule holds no nodule-free window of the full size
    (a 96 px window of a 128 px crop always covers the centre), and a whole slice is mostly nodule-free lung: without
    such windows the network learns that every view holds a nodule, and outlines vessels on whole slices. A quarter
    that found no nodule-free place in 20 tries keeps its part of the target, so the labels stay true."""
    half = window // 2
    size_y, size_x = images.shape[1:3]
    pixels, mask = np.zeros((window, window), np.float32), np.zeros((window, window), bool)
    for row, column in ((0, 0), (0, half), (half, 0), (half, half)):
        for _ in range(20):
            index = rng.integers(len(images))
            top, left = rng.integers(0, size_y - half + 1), rng.integers(0, size_x - half + 1)
            if not targets[index, top:top + half, left:left + half].any():
                break
        quarter, quarter_mask = _turned(images[index, top:top + half, left:left + half],
                                        targets[index, top:top + half, left:left + half], rng)
        pixels[row:row + half, column:column + half] = quarter
        mask[row:row + half, column:column + half] = quarter_mask
    return pixels, mask


def sample_windows(images: np.ndarray, targets: np.ndarray, rng: np.random.Generator, window: int,
                   negative_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """One training window per image of float grey ``images`` [N, H, W] in 0..1 and bool ``targets`` [N, H, W]:
    float32 [N, w, w, 1] windows and targets, turned by a random multiple of 90 degrees and mirrored at random. A
    positive window holds the nodule's centroid at least 8 px inside its edge; a ``negative_fraction`` of them (and
    every image with no target) are negative windows (``negative_window``) drawn from the batch's images."""
    size_y, size_x = images.shape[1:3]
    inputs, outputs = [], []
    for image, target in zip(images, targets, strict=True):
        if not target.any() or rng.random() < negative_fraction:
            pixels, mask = negative_window(images, targets, rng, window)
        else:
            centre_y, centre_x = np.argwhere(target).mean(axis=0).astype(int)
            margin = min(8, window // 4)
            top = int(np.clip(centre_y - rng.integers(margin, window - margin), 0, size_y - window))
            left = int(np.clip(centre_x - rng.integers(margin, window - margin), 0, size_x - window))
            pixels, mask = _turned(image[top:top + window, left:left + window],
                                   target[top:top + window, left:left + window], rng)
        inputs.append(pixels)
        outputs.append(mask)
    return np.stack(inputs)[..., None].astype(np.float32), np.stack(outputs)[..., None].astype(np.float32)


@dataclasses.dataclass(frozen=True)
class WholeSlices:
    """Whole slices to train on beside the crops: float grey ``images`` [M, H, W] in 0..1 (canonical, each slice
    scaled as a whole, as the served model sees it) and bool ``targets`` [M, H, W]. On them the network sees what
    the crops cannot show it: nodules at a whole slice's contrast and the vessels, airways and pleura around them."""

    images: np.ndarray
    targets: np.ndarray
    fraction: float = 0.25  # of each batch's windows

    def __post_init__(self):
        if self.images.shape != self.targets.shape or self.images.ndim != 3:
            raise ValueError(f"whole slices {self.images.shape} and targets {self.targets.shape} must match, [M, H, W]")
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"the whole slices' share of a batch must be within 0..1, not {self.fraction}")

    @functools.cached_property
    def tissue(self) -> list[np.ndarray]:
        """Per slice, the pixels that are not its most common value (the air, or the background a lung mask
        flattened): where a window is worth centring."""
        places = []
        for image in self.images:
            values, counts = np.unique(image, return_counts=True)
            found = np.argwhere(image != values[np.argmax(counts)])
            places.append(found if len(found) else np.argwhere(np.ones_like(image, bool)))
        return places


def context_windows(slices: WholeSlices, rng: np.random.Generator, window: int,
                    count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` windows of random whole slices, float32 [count, w, w] and bool targets: half placed on the slice's
    nodule (its centroid at least 8 px inside the window) where it has one, the rest centred on random tissue
    (vessels and all), turned and mirrored."""
    size_y, size_x = slices.images.shape[1:3]
    inputs, outputs = [], []
    for index in range(count):
        which = int(rng.integers(len(slices.images)))
        image, target = slices.images[which], slices.targets[which]
        if index % 2 == 0 and target.any():
            centre_y, centre_x = np.argwhere(target).mean(axis=0).astype(int)
            margin = min(8, window // 4)
            top = centre_y - rng.integers(margin, window - margin)
            left = centre_x - rng.integers(margin, window - margin)
        else:
            places = slices.tissue[which]
            centre_y, centre_x = places[rng.integers(len(places))]
            top, left = centre_y - window // 2, centre_x - window // 2
        top, left = int(np.clip(top, 0, size_y - window)), int(np.clip(left, 0, size_x - window))
        pixels, mask = _turned(image[top:top + window, left:left + window],
                               target[top:top + window, left:left + window], rng)
        inputs.append(pixels)
        outputs.append(mask)
    return np.stack(inputs).astype(np.float32), np.stack(outputs)


def segmentation_loss(targets: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Pixel cross-entropy plus soft Dice per window (1 for a window that holds nothing and predicts nothing)."""
    probability = tf.sigmoid(logits)
    cross_entropy = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(targets, logits))
    overlap = tf.reduce_sum(probability * targets, [1, 2, 3])
    total = tf.reduce_sum(probability, [1, 2, 3]) + tf.reduce_sum(targets, [1, 2, 3])
    return cross_entropy + tf.reduce_mean(1.0 - (2.0 * overlap + 1.0) / (total + 1.0))


class _CosineDecay(tf_keras.optimizers.schedules.LearningRateSchedule):
    """Cosine decay to ``alpha`` of the rate over ``total_steps``, a variable: a time budget may shorten the run
    once the speed of this machine is known, and the rate still ends low."""

    def __init__(self, initial: float, total_steps: tf.Variable, alpha: float):
        self.initial, self.total_steps, self.alpha = initial, total_steps, alpha

    def __call__(self, step):
        progress = tf.minimum(tf.cast(step, tf.float32) / tf.maximum(self.total_steps, 1.0), 1.0)
        return self.initial * ((1.0 - self.alpha) * 0.5 * (1.0 + tf.cos(np.pi * progress)) + self.alpha)

    def get_config(self) -> dict:
        return {"initial": self.initial, "total_steps": float(self.total_steps.numpy()), "alpha": self.alpha}


@dataclasses.dataclass
class TrainedSegmenter:
    model: tf_keras.Model
    config: SegmentationConfig
    policy: str
    train_seconds: float
    losses: list[float]  # mean loss per epoch
    steps: int           # optimiser steps taken
    planned_steps: int   # epochs x steps per epoch: fewer were taken where the time budget ran short


def training_step(model: tf_keras.Model, optimizer: tf_keras.optimizers.Optimizer):
    """The recipe's optimiser step, traced: (windows, targets) [N, w, w, 1] -> the batch's loss."""

    @tf.function(reduce_retracing=True)
    def step(inputs, outputs):
        with tf.GradientTape() as tape:
            loss = segmentation_loss(outputs, tf.cast(model(inputs, training=True), tf.float32))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        return loss

    return step


_SPEED_PROBE_STEPS = (5, 25)  # the steps between which the speed is timed (the first ones trace the graph)


def affordable_steps(budget_s: float, elapsed_s: float, seconds_per_step: float, done: int) -> int:
    """Steps the rest of the budget pays for, at the measured speed, counting those done; 10 % held back for the
    epochs' bookkeeping and the machine's variance."""
    return done + max(0, int((budget_s - elapsed_s) * 0.9 / seconds_per_step))


def train(config: SegmentationConfig, images: np.ndarray, targets: np.ndarray,
          progress: Callable[[int, int, float], None] | None = None,
          whole_slices: WholeSlices | None = None) -> TrainedSegmenter:
    """Trains on float grey ``images`` [N, H, W] in 0..1 (canonical: the Transform graph's) and bool ``targets``
    [N, H, W] (the consensus); ``progress(epoch, epochs, loss)`` after each epoch. With a ``time_budget_s``, the
    speed is timed over the first steps and the run shortened (the rate schedule with it) to what the budget
    affords on this machine. ``whole_slices``: a share of each batch's windows comes from them (an experiment of
    benchmarks/segmentation_candidates.py; the pipeline trains on the crops alone)."""
    tf_keras.utils.set_random_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    policy = dtype_policy(config)
    with keras_policy(policy):
        model = build_unet(config.unet)
    steps_per_epoch = max(1, len(images) // config.batch_size)
    planned = total = config.epochs * steps_per_epoch
    total_steps = tf.Variable(float(total), trainable=False)
    optimizer = tf_keras.optimizers.Adam(_CosineDecay(config.learning_rate, total_steps, alpha=0.02))

    step = training_step(model, optimizer)
    started, losses, done, probe_started = time.perf_counter(), [], 0, None
    for epoch in range(config.epochs):
        if done >= total:
            break
        order = rng.permutation(len(images))
        epoch_losses = []
        for index in range(steps_per_epoch):
            if done >= total:
                break
            rows = order[index * config.batch_size:(index + 1) * config.batch_size]
            inputs, outputs = sample_windows(images[rows], targets[rows], rng, config.window,
                                             config.negative_fraction)
            if whole_slices is not None and whole_slices.fraction > 0:
                count = max(1, round(len(rows) * whole_slices.fraction))
                context, context_targets = context_windows(whole_slices, rng, config.window, count)
                inputs[-count:], outputs[-count:] = context[..., None], context_targets[..., None]
            epoch_losses.append(float(step(tf.constant(inputs), tf.constant(outputs))))
            done += 1
            if config.time_budget_s and done == _SPEED_PROBE_STEPS[0]:
                probe_started = time.perf_counter()
            elif probe_started is not None and done == _SPEED_PROBE_STEPS[1]:
                now = time.perf_counter()
                speed = (now - probe_started) / (_SPEED_PROBE_STEPS[1] - _SPEED_PROBE_STEPS[0])
                total = min(planned, affordable_steps(config.time_budget_s, now - started, speed, done))
                total_steps.assign(float(total))
        if epoch_losses:
            losses.append(float(np.mean(epoch_losses)))
            if progress:
                progress(epoch + 1, -(-total // steps_per_epoch), losses[-1])
    return TrainedSegmenter(model, config, policy, time.perf_counter() - started, losses, done, planned)


_PREDICT = weakref.WeakKeyDictionary()  # model -> its traced inference function


def probabilities(model: tf_keras.Model, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Nodule probability per pixel, float32 [N, H, W], of float grey images [N, H, W] in 0..1 (H, W multiples of
    8)."""
    if model not in _PREDICT:
        _PREDICT[model] = tf.function(lambda x: tf.sigmoid(tf.cast(model(x, training=False), tf.float32)),
                                      reduce_retracing=True)
    predict = _PREDICT[model]
    batches = [predict(tf.constant(images[i:i + batch_size, ..., None].astype(np.float32))).numpy()
               for i in range(0, len(images), batch_size)]
    return np.concatenate(batches)[..., 0]


def dice(predicted: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Dice per image of bool [N, H, W] masks (1 where both are empty)."""
    overlap = (predicted & target).sum(axis=(1, 2))
    total = predicted.sum(axis=(1, 2)) + target.sum(axis=(1, 2))
    return np.where(total == 0, 1.0, 2.0 * overlap / np.maximum(total, 1))


def iou(predicted: np.ndarray, target: np.ndarray) -> np.ndarray:
    union = (predicted | target).sum(axis=(1, 2))
    return np.where(union == 0, 1.0, (predicted & target).sum(axis=(1, 2)) / np.maximum(union, 1))


def patient_mean(values: np.ndarray, patients: np.ndarray) -> float:
    """Mean over patients of each patient's mean: every patient counts once, however many slices they have."""
    return float(np.mean([values[patients == patient].mean() for patient in np.unique(patients)]))


def choose_threshold(probability: np.ndarray, target: np.ndarray, patients: np.ndarray,
                     candidates: tuple[float, ...] = tuple(np.round(np.arange(0.2, 0.81, 0.05), 2))) -> float:
    """The probability threshold of best patient-mean Dice on a validation set."""
    scores = {threshold: patient_mean(dice(probability >= threshold, target), patients) for threshold in candidates}
    return max(scores, key=scores.get)
