"""Training recipes for the VGG16 classifier.

The network: VGG16 up to ``feature_layer`` (default block4_conv3), global average and global max pooling of that
layer's activations side by side, and ``ensemble_size`` heads (batch norm, dropout, dense) whose logits are averaged.
Why block 4: the pretrained block 5 of HED's VGG16 is specialised for edge detection; heads on its pooled features
reach 0.63 official-test accuracy, on block4_conv3's 0.82 (seed 0; docs/architecture.md has the table per layer).

``cpu`` (default, about 2 minutes on 2 CPU cores): the VGG16 layers stay frozen and the pooled features of every
training image are computed once; the heads train on them. ``full``: every layer up to ``feature_layer``
fine-tuned with on-the-fly augmentation, for machines with a GPU.
Both finish with temperature scaling on the validation split, so the exported probabilities are calibrated.
"""

import contextlib
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
    feature_layer: str = "block4_conv3"  # the VGG16 layer whose pooled activations the heads read
    batch_size: int = 32
    augmented_views: int = 1        # cpu: cached views per training image; the first is the image as it is
    head_epochs: int = 100          # cpu: the heads' training; full: stage 1 (heads only)
    head_learning_rate: float = 1e-3
    finetune_epochs: int = 10       # full: stage 2 (every layer up to feature_layer + head)
    finetune_learning_rate: float = 5e-5
    ensemble_size: int = 5          # cpu: heads trained from different seeds on the same features; logits averaged
    precision: str = "auto"         # cpu features: "bfloat16" (mixed) where the CPU has native bf16, else "float32"
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
        if config.precision not in ("auto", "bfloat16", "float32"):
            raise ValueError(f"precision must be 'auto', 'bfloat16' or 'float32', not {config.precision!r}")
        if config.feature_layer not in vgg16.LAYER_NAMES:
            raise ValueError(f"feature_layer must be one of VGG16's layers {vgg16.LAYER_NAMES}, "
                             f"not {config.feature_layer!r}")
        if config.ensemble_size < 1:
            raise ValueError("ensemble_size must be >= 1")
        if config.augmented_views < 1:
            raise ValueError("augmented_views must be >= 1 (the first view is the image as it is)")
        if config.recipe == "full":
            if values.get("ensemble_size", 1) != 1:
                raise ValueError("the full recipe trains one network end to end: ensemble_size must be 1")
            config.ensemble_size = 1
        return config


@dataclasses.dataclass
class Networks:
    """Views of one network: the VGG16 trunk, its pooled features and ``ensemble_size`` heads."""

    classifier: tf_keras.Model     # pixels -> logits (the mean of the heads' logits)
    gradcam_model: tf_keras.Model  # pixels -> (feature-layer activations, logits)
    features: tf_keras.Model       # pixels -> pooled features [N, 2 x channels] (GAP, then GMP)
    trunk: tf_keras.Model          # pixels -> feature-layer activations (frozen in the cpu recipe)
    heads: list[tf_keras.Model]    # pooled features -> logits


@dataclasses.dataclass
class Classifier:
    """The trained network and the views of it that export and Grad-CAM need."""

    networks: Networks
    temperature: float

    @property
    def model(self) -> tf_keras.Model:
        """pixels -> logits."""
        return self.networks.classifier

    @property
    def gradcam_model(self) -> tf_keras.Model:
        """pixels -> (feature-layer activations, logits)."""
        return self.networks.gradcam_model

    @property
    def gradcam_layer(self) -> str:
        """The VGG16 layer whose activations Grad-CAM weighs (the trunk's last)."""
        return self.networks.trunk.layers[-1].name


def _head(config: TrainingConfig, index: int) -> tf_keras.Model:
    return tf_keras.Sequential(
        [
            # Pretrained activations are large and unevenly scaled (max pooling more so): normalise them.
            tf_keras.layers.BatchNormalization(name="norm"),
            tf_keras.layers.Dropout(config.dropout, name="dropout"),
            # float32 logits even under mixed precision, for a stable loss and softmax
            tf_keras.layers.Dense(features.NUM_CLASSES, name="logits", dtype="float32"),
        ],
        name="head" if index == 0 else f"head_{index}",
    )


def bfloat16_native() -> bool:
    """True where the CPU multiplies bfloat16 in hardware (AVX512_BF16, AMX); elsewhere oneDNN emulates it,
    slower than float32."""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def dtype_policy(config: TrainingConfig) -> str:
    """The Keras dtype policy a recipe computes its training features under (the full recipe: always float32)."""
    if config.recipe == "full":
        return "float32"
    if config.precision == "auto":
        return "mixed_bfloat16" if bfloat16_native() else "float32"
    return "mixed_bfloat16" if config.precision == "bfloat16" else "float32"


@contextlib.contextmanager
def _global_policy(name: str):
    previous = tf_keras.mixed_precision.global_policy()
    tf_keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        tf_keras.mixed_precision.set_global_policy(previous)


def build_networks(config: TrainingConfig, policy: str = "float32") -> Networks:
    """Builds the VGG16 trunk, the pooling and the heads, and the views of them that the recipes train."""
    with _global_policy(policy):
        return _build_networks(config)


def _build_networks(config: TrainingConfig) -> Networks:
    base = vgg16.build_conv_base(config.weights)
    trunk = tf_keras.Model(base.input, base.get_layer(config.feature_layer).output, name="trunk")
    activations = trunk.output
    pooled = tf_keras.layers.Concatenate(name="pooled", dtype="float32")([
        tf_keras.layers.GlobalAveragePooling2D(name="average_pool")(activations),
        tf_keras.layers.GlobalMaxPooling2D(name="max_pool")(activations),
    ])
    heads = [_head(config, index) for index in range(config.ensemble_size)]
    outputs = [head(pooled) for head in heads]
    logits = outputs[0] if len(outputs) == 1 else tf_keras.layers.Average(name="mean_logits")(outputs)
    return Networks(
        classifier=tf_keras.Model(base.input, logits, name="radassist_vgg16"),
        gradcam_model=tf_keras.Model(base.input, [activations, logits], name="gradcam"),
        features=tf_keras.Model(base.input, pooled, name="features"),
        trunk=trunk,
        heads=heads,
    )


def augmenter(seed: int) -> tf_keras.Sequential:
    """Training-only augmentation, applied to 0..255 grayscale before VGG preprocessing. No flips: chest anatomy
    is not left-right symmetric (heart, aorta), and mirrored slices cost 0.05-0.09 test accuracy here
    (benchmarks/mirroring.py)."""
    return tf_keras.Sequential(
        [
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


def pooled_features(config: TrainingConfig, extractor: tf_keras.Model, pixels: np.ndarray, progress=None,
                    views: int = 1) -> np.ndarray:
    """Pooled features of ``views`` views of each image -> float32 [N, views, D]; view 0 is the image as it is,
    the others are augmented."""
    augment = augmenter(config.seed)
    # Compiled, so Grappler fuses conv + bias + ReLU (about 25% faster than eager on CPU).
    plain = tf.function(lambda batch: extractor(batch, training=False))
    augmented = tf.function(lambda batch: extractor(augment_pixels(batch, augment), training=False))
    started = time.time()
    result = []
    for view in range(views):
        function = augmented if view else plain
        result.append(np.concatenate([function(tf.constant(pixels[start:start + config.batch_size])).numpy()
                                      for start in range(0, len(pixels), config.batch_size)]))
        log.info("features, view %d/%d: %.0fs", view + 1, views, time.time() - started)
        if progress:
            progress(f"features view {view + 1}/{views}")
    return np.stack(result, axis=1).astype(np.float32)


def fit_head(config: TrainingConfig, head: tf_keras.Model, pooled: np.ndarray, labels: np.ndarray,
             index: int = 0) -> None:
    """Trains head ``index`` on cached pooled features [N, views, D], one random view of each image per epoch;
    heads differ in initialisation, dropout masks, view sampling and batch order."""
    seed = config.seed + 1000 * index
    tf_keras.utils.set_random_seed(seed)
    views = pooled.shape[1]
    dataset = (
        tf.data.Dataset.from_tensor_slices((pooled, _one_hot(labels)))
        .shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
        .map(lambda x, y: (x[tf.random.uniform([], 0, views, tf.int32, seed=seed)], y))
        .batch(config.batch_size)
    )
    inputs = tf_keras.Input(shape=pooled.shape[2:])
    model = tf_keras.Model(inputs, head(inputs))
    model.compile(tf_keras.optimizers.Adam(config.head_learning_rate), loss=_loss(config))
    weights = class_weights(labels) if config.balance_classes else None
    model.fit(dataset, epochs=config.head_epochs, class_weight=weights, verbose=0)


def train_cpu(config: TrainingConfig, train: tuple, valid: tuple, progress=None) -> Classifier:
    """CPU recipe. ``train``/``valid`` are (pixels float32 [N,224,224,3], labels int [N]) numpy pairs."""
    nets = build_networks(config)
    policy = dtype_policy(config)
    extractor = nets.features
    if policy != "float32":
        # Mixed bfloat16 halves the feature pass on CPUs with native bf16; the float32 network is what is
        # calibrated and exported (the heads see float32 features either way).
        twin = build_networks(dataclasses.replace(config, weights="none", ensemble_size=1), policy)
        twin.trunk.set_weights(nets.trunk.get_weights())
        extractor = twin.features
    log.info("cpu recipe: %s features under %s, %d head(s)", config.feature_layer, policy, config.ensemble_size)
    train_pixels, train_labels = train
    pooled = pooled_features(config, extractor, train_pixels, progress, views=config.augmented_views)
    for index, head in enumerate(nets.heads):
        started = time.time()
        fit_head(config, head, pooled, train_labels, index)
        log.info("head %d/%d trained (%d epochs): %.0fs", index + 1, config.ensemble_size, config.head_epochs,
                 time.time() - started)
        if progress:
            progress(f"head {index + 1}/{config.ensemble_size} trained")
    return Classifier(nets, _calibrate(nets.classifier, valid, config))


def train_full(config: TrainingConfig, train: tuple, valid: tuple, progress=None) -> Classifier:
    """GPU recipe: head warm-up with the base frozen, then every layer fine-tuned, augmenting on the fly."""
    nets = build_networks(config)
    classifier, trunk = nets.classifier, nets.trunk
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
    trunk.trainable = False
    classifier.compile(tf_keras.optimizers.Adam(config.head_learning_rate), loss=_loss(config))
    classifier.fit(dataset, epochs=config.head_epochs, class_weight=weights, verbose=2)
    if progress:
        progress("head trained")
    trunk.trainable = True
    classifier.compile(tf_keras.optimizers.Adam(config.finetune_learning_rate), loss=_loss(config))
    classifier.fit(dataset, epochs=config.finetune_epochs, class_weight=weights, verbose=2)
    if progress:
        progress("fine-tuned")
    return Classifier(nets, _calibrate(classifier, valid, config))


def _calibrate(classifier: tf_keras.Model, valid: tuple, config: TrainingConfig) -> float:
    valid_pixels, valid_labels = valid
    if len(valid_labels) == 0:
        return 1.0
    logits = classifier.predict(valid_pixels, batch_size=config.batch_size, verbose=0)
    temperature = fit_temperature(logits, valid_labels)
    log.info("temperature %.3f (valid accuracy %.3f)", temperature, (logits.argmax(1) == valid_labels).mean())
    return temperature


def train(config: TrainingConfig, train_data: tuple, valid_data: tuple, progress=None) -> Classifier:
    """Trains with ``config.recipe``; seeds Python, NumPy and TensorFlow from ``config.seed``."""
    tf_keras.utils.set_random_seed(config.seed)
    recipe = train_cpu if config.recipe == "cpu" else train_full
    return recipe(config, train_data, valid_data, progress)
