"""Training recipes for the VGG16 classifier.

``cpu`` (default, about 10-15 minutes on 2 CPU cores for the Kaggle set): blocks 1-4 stay frozen and their
outputs are computed once for a few augmented views of every training image; then the head is trained
on cached block-5 outputs, and block 5 + head are fine-tuned together on the cached block-4 outputs.
``full``: every layer fine-tuned end to end with on-the-fly augmentation, for machines with a GPU.
Both finish with temperature scaling on the validation split, so the exported probabilities are calibrated.
"""

import dataclasses
import logging
import time

import numpy as np
import scipy.optimize
import tensorflow as tf
import tf_keras

from components import features, imaging
from components.trainer import vgg16

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainingConfig:
    """Every knob of a training run; defaults are the CPU recipe. Passed as the Trainer's custom_config."""

    recipe: str = "cpu"
    seed: int = 0
    weights: str = "hed"
    batch_size: int = 32
    augmented_views: int = 3        # cpu: cached views per training image (the first is unaugmented)
    head_epochs: int = 30           # stage 1: head only
    head_learning_rate: float = 1e-3
    finetune_epochs: int = 10       # stage 2: block 5 (cpu) or all layers (full) + head
    finetune_learning_rate: float = 5e-5
    average_last_epochs: int = 0    # cpu: average block 5 + head weights over the last N fine-tune epochs (SWA)
    label_smoothing: float = 0.1
    dropout: float = 0.3
    balance_classes: bool = False   # class-balanced loss weights (True trades accuracy for minority recall)

    @classmethod
    def from_dict(cls, values: dict | None) -> "TrainingConfig":
        values = dict(values or {})
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown training options: {sorted(unknown)}")
        config = cls(**values)
        if config.recipe not in ("cpu", "full"):
            raise ValueError(f"recipe must be 'cpu' or 'full', not {config.recipe!r}")
        return config


@dataclasses.dataclass
class Classifier:
    """The trained network and the views of it that export and Grad-CAM need."""

    model: tf_keras.Model          # pixels -> logits
    gradcam_model: tf_keras.Model  # pixels -> (block5_conv3 activations, logits)
    temperature: float


@dataclasses.dataclass
class Networks:
    """Views of one VGG16 + head; they share layers (and so weights)."""

    classifier: tf_keras.Model     # pixels -> logits
    gradcam_model: tf_keras.Model  # pixels -> (block5_conv3 activations, logits)
    stem: tf_keras.Model           # pixels -> block4_pool (blocks 1-4, frozen in the cpu recipe)
    top: tf_keras.Model            # block4_pool -> logits (block 5 + head)
    block5: tf_keras.Model         # block4_pool -> block5_pool
    base: tf_keras.Model
    head: tf_keras.Model


def build_networks(config: TrainingConfig) -> Networks:
    """Builds VGG16 + classification head and the partial views that the recipes train."""
    base = vgg16.build_conv_base(config.weights)
    head = tf_keras.Sequential(
        [
            tf_keras.layers.GlobalAveragePooling2D(name="head_pool"),
            # Pretrained block-5 activations are large (mean ~4, sd ~10, max ~400): normalise them.
            tf_keras.layers.BatchNormalization(name="head_norm"),
            tf_keras.layers.Dropout(config.dropout, name="head_dropout"),
            tf_keras.layers.Dense(features.NUM_CLASSES, name="head_logits"),
        ],
        name="head",
    )
    logits = head(base.output)
    classifier = tf_keras.Model(base.input, logits, name="radassist_vgg16")
    gradcam_model = tf_keras.Model(base.input, [base.get_layer(features.GRADCAM_LAYER).output, logits])
    stem = tf_keras.Model(base.input, base.get_layer("block4_pool").output, name="stem")
    top_input = tf_keras.Input(shape=stem.output.shape[1:], name="block4_features")
    x = top_input
    for name in ("block5_conv1", "block5_conv2", "block5_conv3", "block5_pool"):
        x = base.get_layer(name)(x)
    top = tf_keras.Model(top_input, head(x), name="top")
    block5 = tf_keras.Model(top_input, x, name="block5")
    return Networks(classifier, gradcam_model, stem, top, block5, base, head)


def augmenter(seed: int) -> tf_keras.Sequential:
    """Training-only augmentation, applied to 0..255 grayscale before VGG preprocessing."""
    return tf_keras.Sequential(
        [
            tf_keras.layers.RandomFlip("horizontal", seed=seed),
            tf_keras.layers.RandomRotation(0.03, fill_mode="constant", seed=seed + 1),
            tf_keras.layers.RandomZoom((-0.15, 0.05), fill_mode="constant", seed=seed + 2),
            tf_keras.layers.RandomTranslation(0.05, 0.05, fill_mode="constant", seed=seed + 3),
            tf_keras.layers.RandomContrast(0.15, seed=seed + 4),
            tf_keras.layers.RandomBrightness(0.08, value_range=(0.0, 255.0), seed=seed + 5),
        ],
        name="augment",
    )


def augment_pixels(pixels: tf.Tensor, augment: tf_keras.Sequential) -> tf.Tensor:
    """Augments VGG-preprocessed pixels: undo the mean, augment gray, preprocess again."""
    gray = pixels[..., :1] + features.VGG_MEAN_BGR[0]
    gray = tf.clip_by_value(augment(gray, training=True), 0.0, 255.0)
    return imaging.vgg_preprocess(gray)


def class_weights(labels: np.ndarray) -> dict[int, float]:
    counts = np.bincount(labels, minlength=features.NUM_CLASSES).astype(np.float64)
    counts[counts == 0] = 1.0
    return {i: float(len(labels) / (features.NUM_CLASSES * c)) for i, c in enumerate(counts)}


def _loss(config: TrainingConfig):
    return tf_keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=config.label_smoothing)


def _one_hot(labels: np.ndarray) -> np.ndarray:
    return np.eye(features.NUM_CLASSES, dtype=np.float32)[labels]


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature scaling (Guo et al. 2017): the T > 0 that minimises validation NLL of softmax(logits/T)."""
    if len(labels) == 0:
        return 1.0

    def nll(log_t: float) -> float:
        scaled = logits / np.exp(log_t)
        scaled = scaled - scaled.max(axis=1, keepdims=True)
        log_probs = scaled - np.log(np.exp(scaled).sum(axis=1, keepdims=True))
        return float(-log_probs[np.arange(len(labels)), labels].mean())

    result = scipy.optimize.minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))


def _predict(model: tf_keras.Model, inputs: np.ndarray, batch_size: int) -> np.ndarray:
    return model.predict(inputs, batch_size=batch_size, verbose=0)


def cache_block4_features(config: TrainingConfig, nets: Networks, train_pixels: np.ndarray, progress=None):
    """Blocks 1-4 outputs for ``augmented_views`` views of each image -> float16 [N, V, 14, 14, 512]."""
    augment = augmenter(config.seed)
    # Compiled, so Grappler fuses conv + bias + ReLU (about 25% faster than eager on CPU).
    stem_plain = tf.function(lambda pixels: nets.stem(pixels, training=False))
    stem_augmented = tf.function(lambda pixels: nets.stem(augment_pixels(pixels, augment), training=False))
    started = time.time()
    views = []
    for view in range(max(1, config.augmented_views)):
        batches = []
        for start in range(0, len(train_pixels), config.batch_size):
            batch = tf.constant(train_pixels[start : start + config.batch_size])
            features_of = stem_augmented if view > 0 else stem_plain
            batches.append(features_of(batch).numpy().astype(np.float16))
        views.append(np.concatenate(batches))
        log.info("block 1-4 features, view %d/%d: %.0fs", view + 1, config.augmented_views, time.time() - started)
        if progress:
            progress(f"cached features view {view + 1}/{config.augmented_views}")
    return np.stack(views, axis=1)


class WeightAverage:
    """Running mean of a model's weights over snapshots (stochastic weight averaging; VGG16 has no BatchNorm,
    so the averaged weights need no statistics update)."""

    def __init__(self):
        self.weights: list[np.ndarray] | None = None
        self.count = 0

    def add(self, weights: list[np.ndarray]) -> None:
        self.count += 1
        if self.weights is None:
            self.weights = [np.array(w, dtype=np.float64) for w in weights]
        else:
            self.weights = [mean + (np.asarray(w, dtype=np.float64) - mean) / self.count
                            for mean, w in zip(self.weights, weights, strict=True)]


def fit_top(config: TrainingConfig, nets: Networks, cached: np.ndarray, labels: np.ndarray, progress=None):
    """Stage 1 (head on cached block-5 outputs) and stage 2 (block 5 + head on cached block-4 outputs)."""
    started = time.time()
    weights = class_weights(labels) if config.balance_classes else None
    targets = _one_hot(labels)
    rng = np.random.default_rng(config.seed)

    pooled = np.stack([_predict(nets.block5, cached[:, v], config.batch_size) for v in range(cached.shape[1])], 1)
    head_in = tf_keras.Input(shape=pooled.shape[2:])
    head_model = tf_keras.Model(head_in, nets.head(head_in))
    head_model.compile(tf_keras.optimizers.Adam(config.head_learning_rate), loss=_loss(config))
    for _ in range(config.head_epochs):
        pick = rng.integers(0, pooled.shape[1], size=len(labels))
        head_model.fit(pooled[np.arange(len(pick)), pick], targets, batch_size=config.batch_size, epochs=1,
                       class_weight=weights, shuffle=True, verbose=0)
    log.info("head trained (%d epochs): %.0fs", config.head_epochs, time.time() - started)
    if progress:
        progress("head trained")

    top = nets.top
    top.compile(tf_keras.optimizers.Adam(config.finetune_learning_rate), loss=_loss(config))
    average = WeightAverage()
    for epoch in range(config.finetune_epochs):
        pick = rng.integers(0, cached.shape[1], size=len(labels))
        x = cached[np.arange(len(pick)), pick].astype(np.float32)
        history = top.fit(x, targets, batch_size=config.batch_size, epochs=1, class_weight=weights,
                          shuffle=True, verbose=0)
        log.info("fine-tune epoch %d/%d loss %.4f: %.0fs", epoch + 1, config.finetune_epochs,
                 history.history["loss"][-1], time.time() - started)
        if progress:
            progress(f"fine-tune epoch {epoch + 1}/{config.finetune_epochs}")
        if epoch >= config.finetune_epochs - config.average_last_epochs:
            average.add(top.get_weights())
    if average.count > 1:
        top.set_weights([w.astype(np.float32) for w in average.weights])
        log.info("block 5 + head: weights averaged over the last %d epochs", average.count)


def train_cpu(config: TrainingConfig, train: tuple, valid: tuple, progress=None) -> Classifier:
    """CPU recipe. ``train``/``valid`` are (pixels float32 [N,224,224,3], labels int [N]) numpy pairs."""
    nets = build_networks(config)
    train_pixels, train_labels = train
    cached = cache_block4_features(config, nets, train_pixels, progress)
    fit_top(config, nets, cached, train_labels, progress)
    return Classifier(nets.classifier, nets.gradcam_model, _calibrate(nets.classifier, valid, config))


def train_full(config: TrainingConfig, train: tuple, valid: tuple, progress=None) -> Classifier:
    """GPU recipe: head warm-up with the base frozen, then every layer fine-tuned, augmenting on the fly."""
    nets = build_networks(config)
    classifier, base = nets.classifier, nets.base
    train_pixels, train_labels = train
    augment = augmenter(config.seed)
    dataset = (
        tf.data.Dataset.from_tensor_slices((train_pixels, _one_hot(train_labels)))
        .shuffle(len(train_labels), seed=config.seed, reshuffle_each_iteration=True)
        .batch(config.batch_size)
        .map(lambda x, y: (augment_pixels(x, augment), y), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    weights = class_weights(train_labels) if config.balance_classes else None
    base.trainable = False
    classifier.compile(tf_keras.optimizers.Adam(config.head_learning_rate), loss=_loss(config))
    classifier.fit(dataset, epochs=config.head_epochs, class_weight=weights, verbose=2)
    if progress:
        progress("head trained")
    base.trainable = True
    classifier.compile(tf_keras.optimizers.Adam(config.finetune_learning_rate), loss=_loss(config))
    classifier.fit(dataset, epochs=config.finetune_epochs, class_weight=weights, verbose=2)
    if progress:
        progress("fine-tuned")
    return Classifier(classifier, nets.gradcam_model, _calibrate(classifier, valid, config))


def _calibrate(classifier: tf_keras.Model, valid: tuple, config: TrainingConfig) -> float:
    valid_pixels, valid_labels = valid
    if len(valid_labels) == 0:
        return 1.0
    logits = _predict(classifier, valid_pixels, config.batch_size)
    temperature = fit_temperature(logits, valid_labels)
    log.info("temperature %.3f (valid accuracy %.3f)", temperature, (logits.argmax(1) == valid_labels).mean())
    return temperature


def train(config: TrainingConfig, train_data: tuple, valid_data: tuple, progress=None) -> Classifier:
    """Trains with ``config.recipe``; seeds Python, NumPy and TensorFlow from ``config.seed``."""
    tf_keras.utils.set_random_seed(config.seed)
    recipe = train_cpu if config.recipe == "cpu" else train_full
    return recipe(config, train_data, valid_data, progress)
