"""Training recipes for the VGG16 classifier.

``cpu`` (default, about 16 minutes on 2 CPU cores with bfloat16 for the Kaggle set): blocks 1-4 stay frozen and
their outputs are computed once for a few augmented views of every training image; then each of
``ensemble_size`` members trains its head on cached block-5 outputs and fine-tunes its own block 5 + head on the
cached block-4 outputs. The exported model runs blocks 1-4 once and averages the members' logits: single members
are unstable on this data (official-test accuracy 0.51-0.72 between members of one run), their mean is not.
``full``: every layer fine-tuned end to end with on-the-fly augmentation, for machines with a GPU.
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
    batch_size: int = 32
    augmented_views: int = 3        # cpu: cached views per training image (the first is unaugmented)
    head_epochs: int = 30           # stage 1: head only
    head_learning_rate: float = 1e-3
    finetune_epochs: int = 10       # stage 2: block 5 (cpu) or all layers (full) + head
    finetune_learning_rate: float = 5e-5
    average_last_epochs: int = 0    # cpu: average block 5 + head weights over the last N fine-tune epochs (SWA)
    ensemble_size: int = 4          # cpu: block-5 + head members on the shared blocks 1-4; logits averaged
    precision: str = "auto"         # cpu: "bfloat16" (mixed) where the CPU has native bf16, else "float32"
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
        if config.ensemble_size < 1:
            raise ValueError("ensemble_size must be >= 1")
        if config.recipe == "full":
            if values.get("ensemble_size", 1) != 1:
                raise ValueError("the full recipe trains one network end to end: ensemble_size must be 1")
            config.ensemble_size = 1
        return config


@dataclasses.dataclass
class Classifier:
    """The trained network and the views of it that export and Grad-CAM need."""

    networks: "Networks"
    temperature: float

    @property
    def model(self) -> tf_keras.Model:
        """pixels -> logits."""
        return self.networks.classifier

    @property
    def gradcam_model(self) -> tf_keras.Model:
        """pixels -> ([block5_conv3 activations of each member], logits)."""
        return self.networks.gradcam_model


@dataclasses.dataclass
class Member:
    """Block 5 + head of one ensemble member, as views on cached block-4 outputs (they share layers)."""

    top: tf_keras.Model            # block4_pool -> logits
    block5: tf_keras.Model         # block4_pool -> block5_pool
    head: tf_keras.Model           # block5_pool -> logits
    gradcam: tf_keras.Model        # block4_pool -> (block5_conv3 activations, logits)


@dataclasses.dataclass
class Networks:
    """Views of one VGG16 (blocks 1-4 shared) with ``ensemble_size`` block-5 + head members."""

    classifier: tf_keras.Model     # pixels -> logits (the mean of the members' logits)
    gradcam_model: tf_keras.Model  # pixels -> ([block5_conv3 activations of each member], logits)
    stem: tf_keras.Model           # pixels -> block4_pool (blocks 1-4, frozen in the cpu recipe)
    top: tf_keras.Model            # block4_pool -> logits (the mean of the members' logits)
    members: list[Member]
    base: tf_keras.Model


def _mean(tensors: list) -> tf.Tensor:
    return tensors[0] if len(tensors) == 1 else tf_keras.layers.Average()(tensors)


def _head(config: TrainingConfig, suffix: str) -> tf_keras.Model:
    return tf_keras.Sequential(
        [
            tf_keras.layers.GlobalAveragePooling2D(name="head_pool"),
            # Pretrained block-5 activations are large (mean ~4, sd ~10, max ~400): normalise them.
            tf_keras.layers.BatchNormalization(name="head_norm"),
            tf_keras.layers.Dropout(config.dropout, name="head_dropout"),
            # float32 logits even under mixed precision, for a stable loss and softmax
            tf_keras.layers.Dense(features.NUM_CLASSES, name="head_logits", dtype="float32"),
        ],
        name=f"head{suffix}",
    )


def _member(config: TrainingConfig, base: tf_keras.Model, index: int) -> Member:
    """Member 0 uses the base's own block 5; the others start from copies of its pretrained weights."""
    top_input = tf_keras.Input(shape=base.get_layer("block4_pool").output.shape[1:], name="block4_features")
    x = top_input
    for name in ("block5_conv1", "block5_conv2", "block5_conv3", "block5_pool"):
        pretrained = base.get_layer(name)
        layer = pretrained if index == 0 else pretrained.__class__.from_config(
            {**pretrained.get_config(), "name": f"member{index}_{name}"})
        x = layer(x)
        if layer is not pretrained:
            layer.set_weights(pretrained.get_weights())
        if name == features.GRADCAM_LAYER:
            activations = x
    suffix = "" if index == 0 else f"_{index}"
    head = _head(config, suffix)
    logits = head(x)
    return Member(
        top=tf_keras.Model(top_input, logits, name=f"top{suffix}"),
        block5=tf_keras.Model(top_input, x, name=f"block5{suffix}"),
        head=head,
        gradcam=tf_keras.Model(top_input, [activations, logits], name=f"member{suffix}"),
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
    """The Keras dtype policy a recipe trains under (the full recipe: always float32)."""
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
    """Builds VGG16 + classification head(s) and the partial views that the recipes train."""
    with _global_policy(policy):
        return _build_networks(config)


def _build_networks(config: TrainingConfig) -> Networks:
    base = vgg16.build_conv_base(config.weights)
    block4 = base.get_layer("block4_pool").output
    stem = tf_keras.Model(base.input, block4, name="stem")
    members = [_member(config, base, index) for index in range(config.ensemble_size)]
    outputs = [member.gradcam(block4) for member in members]
    logits = _mean([logits for _, logits in outputs])
    classifier = tf_keras.Model(base.input, logits, name="radassist_vgg16")
    # Grad-CAM of the ensemble's (mean) logit over all members' block5_conv3 channels together.
    gradcam_model = tf_keras.Model(base.input, [[activations for activations, _ in outputs], logits])
    top_input = tf_keras.Input(shape=block4.shape[1:], name="block4_features")
    top = tf_keras.Model(top_input, _mean([member.top(top_input) for member in members]), name="top")
    return Networks(classifier, gradcam_model, stem, top, members, base)


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
            batches.append(tf.cast(features_of(batch), tf.float16).numpy())
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


def fit_member(config: TrainingConfig, member: Member, cached: np.ndarray, labels: np.ndarray, index: int = 0,
               progress=None) -> None:
    """Stage 1 (head on cached block-5 outputs) and stage 2 (block 5 + head on cached block-4 outputs) of
    ensemble member ``index``; members differ in head initialisation, view sampling and batch order."""
    started = time.time()
    weights = class_weights(labels) if config.balance_classes else None
    targets = _one_hot(labels)
    rng = np.random.default_rng([config.seed, index])
    tf_keras.utils.set_random_seed(config.seed + 1000 * index)
    member_name = f"member {index + 1}/{config.ensemble_size}: " if config.ensemble_size > 1 else ""

    pooled = np.stack([_predict(member.block5, cached[:, v], config.batch_size).astype(np.float32)
                       for v in range(cached.shape[1])], 1)
    head_in = tf_keras.Input(shape=pooled.shape[2:])
    head_model = tf_keras.Model(head_in, member.head(head_in))
    head_model.compile(tf_keras.optimizers.Adam(config.head_learning_rate), loss=_loss(config))
    for _ in range(config.head_epochs):
        pick = rng.integers(0, pooled.shape[1], size=len(labels))
        head_model.fit(pooled[np.arange(len(pick)), pick], targets, batch_size=config.batch_size, epochs=1,
                       class_weight=weights, shuffle=True, verbose=0)
    log.info("%shead trained (%d epochs): %.0fs", member_name, config.head_epochs, time.time() - started)
    if progress:
        progress(f"{member_name}head trained")

    top = member.top
    top.compile(tf_keras.optimizers.Adam(config.finetune_learning_rate), loss=_loss(config))
    average = WeightAverage()
    for epoch in range(config.finetune_epochs):
        pick = rng.integers(0, cached.shape[1], size=len(labels))
        x = cached[np.arange(len(pick)), pick].astype(np.float32)
        history = top.fit(x, targets, batch_size=config.batch_size, epochs=1, class_weight=weights,
                          shuffle=True, verbose=0)
        log.info("%sfine-tune epoch %d/%d loss %.4f: %.0fs", member_name, epoch + 1, config.finetune_epochs,
                 history.history["loss"][-1], time.time() - started)
        if progress:
            progress(f"{member_name}fine-tune epoch {epoch + 1}/{config.finetune_epochs}")
        if epoch >= config.finetune_epochs - config.average_last_epochs:
            average.add(top.get_weights())
    if average.count > 1:
        top.set_weights([w.astype(np.float32) for w in average.weights])
        log.info("block 5 + head: weights averaged over the last %d epochs", average.count)


def train_cpu(config: TrainingConfig, train: tuple, valid: tuple, progress=None) -> Classifier:
    """CPU recipe. ``train``/``valid`` are (pixels float32 [N,224,224,3], labels int [N]) numpy pairs."""
    nets = build_networks(config)
    policy = dtype_policy(config)
    # Mixed bfloat16 (float32 weights, bfloat16 arithmetic) is about 2x faster on CPUs with native bf16.
    # It trains a twin of the networks; the float32 networks take its weights and are what is exported.
    trained = nets
    if policy != "float32":
        trained = build_networks(dataclasses.replace(config, weights="none"), policy)
        trained.classifier.set_weights(nets.classifier.get_weights())
    log.info("cpu recipe: %d member(s), dtype policy %s", config.ensemble_size, policy)
    train_pixels, train_labels = train
    cached = cache_block4_features(config, trained, train_pixels, progress)
    for index, member in enumerate(trained.members):
        fit_member(config, member, cached, train_labels, index, progress)
    if trained is not nets:
        nets.classifier.set_weights(trained.classifier.get_weights())
    return Classifier(nets, _calibrate(nets.classifier, valid, config))


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
    return Classifier(nets, _calibrate(classifier, valid, config))


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
