"""Training recipes for the VGG16 classifier.

The network: VGG16 up to ``feature_layer`` (default block4_conv3), global average and global max pooling of that
layer's activations side by side, and ``ensemble_size`` heads (batch norm, dropout, dense) whose logits are averaged.
Why block 4: the pretrained block 5 of HED's VGG16 is specialised for edge detection, and heads on its pooled
features are far less accurate than on block4_conv3's (docs/architecture.md has the table per layer).

``cpu`` (default, minutes on a laptop's CPU): the VGG16 layers stay frozen and the pooled features of every
training image are computed once; the heads train on them, bagged: the training images are split into
``bagging_folds`` folds (exact duplicates kept together) and ``ensemble_size`` heads are trained on all folds but
one, for each fold. The exported classifier averages all of them; each training image's out-of-fold logits (the
heads that never saw it) are held-out predictions to calibrate on. Heads trained on all the data and calibrated on
smaller fold heads were over-confident on new images (their logit margins are larger): the bag is
calibrated on exactly the heads it exports. ``full``: every layer up to ``feature_layer`` fine-tuned with
on-the-fly augmentation, for machines with a GPU.
Both finish with calibration (components/trainer/calibration.py: a temperature) fitted on held-out predictions, the
review line read off them, and the out-of-distribution gate.
"""

import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterable, Iterator

import numpy as np
import tensorflow as tf
import tf_keras

from components import features
from components.trainer import calibration, ood, vgg16

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainingConfig:
    """Every knob of a training run; defaults are the CPU recipe. Passed as the Trainer's custom_config."""

    recipe: str = "cpu"
    seed: int = 0
    weights: str = "hed"
    feature_layer: str = "block4_conv3"  # the VGG16 layer whose pooled activations the heads read
    batch_size: int = 32
    augmented_views: int = 3        # views per training image: the image as it is, then acquisition-shifted exports
    head_epochs: int = 100          # cpu: the heads' training; full: stage 1 (heads only)
    head_learning_rate: float = 1e-3
    finetune_epochs: int = 10       # full: stage 2 (every layer up to feature_layer + head)
    finetune_learning_rate: float = 5e-5
    ensemble_size: int = 5          # cpu: heads per fold, trained from different seeds on the same features
    bagging_folds: int = 5          # cpu: folds of the bag (ensemble_size heads per fold, trained without it;
                                    # the classifier averages all of them); 1: every head sees all training images
    grid_pooling: int = 2           # the heads also read average and max pooling per cell of a g x g grid (0: none)
    precision: str = "auto"         # cpu features: "bfloat16" (mixed) where the CPU has native bf16, else "float32"
    label_smoothing: float = 0.1
    dropout: float = 0.3
    balance_classes: bool = False   # class-balanced loss weights (True trades accuracy for minority recall)
    review_accuracy: float = 0.95   # the "uncertain" line: lowest calibrated confidence whose covered held-out
                                    # accuracy reaches this (selective prediction), calibration.choose_uncertain_below
    ood_quantile: float = 0.95      # the gate's threshold: this quantile of held-out in-distribution distances

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
        if config.bagging_folds < 1:
            raise ValueError("bagging_folds must be >= 1 (1: no bagging)")
        if config.grid_pooling < 0 or config.grid_pooling > 4:
            raise ValueError("grid_pooling must be 0 (global pooling only) to 4 cells a side")
        if config.augmented_views < 1:
            raise ValueError("augmented_views must be >= 1 (the first view is the image as it is)")
        if config.recipe == "full":
            if values.get("ensemble_size", 1) != 1:
                raise ValueError("the full recipe trains one network end to end: ensemble_size must be 1")
            config.ensemble_size = 1
            config.bagging_folds = 1
        return config

    @property
    def head_count(self) -> int:
        """How many heads the classifier averages: ``ensemble_size`` per fold of the bag."""
        return self.ensemble_size * self.bagging_folds


@dataclasses.dataclass
class Networks:
    """Views of one network: the VGG16 trunk, its pooled features and ``head_count`` heads."""

    classifier: tf_keras.Model     # pixels -> logits (the mean of the heads' logits)
    gradcam_model: tf_keras.Model  # pixels -> (feature-layer activations, pooled features, logits)
    features: tf_keras.Model       # pixels -> pooled features: GAP, GMP [2 x channels], then per grid cell
    trunk: tf_keras.Model          # pixels -> feature-layer activations (frozen in the cpu recipe)
    heads: list[tf_keras.Model]    # pooled features -> logits

    @property
    def global_width(self) -> int:
        """How many of the pooled features are the global ones (average, then max pooling over the whole map):
        what the out-of-distribution gate reads."""
        return 2 * int(self.trunk.output.shape[-1])

    def logits_from_pooled(self, pooled: np.ndarray) -> np.ndarray:
        """The classifier's logits from pooled features (the mean of the heads', as the network computes)."""
        if len(pooled) == 0:
            return np.zeros((0, features.NUM_CLASSES), np.float32)
        return _head_logits(self.heads, pooled)


@dataclasses.dataclass
class Classifier:
    """The trained network, its calibration and out-of-distribution gate, and the views export and Grad-CAM need."""

    networks: Networks
    calibrator: calibration.Calibrator
    gate: ood.FeatureGate
    uncertain_below: float          # calibrated top probability under which a prediction needs review

    @property
    def temperature(self) -> float:
        return self.calibrator.temperature

    @property
    def model(self) -> tf_keras.Model:
        """pixels -> logits."""
        return self.networks.classifier

    @property
    def gradcam_model(self) -> tf_keras.Model:
        """pixels -> (feature-layer activations, pooled features, logits): what every signature computes once."""
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
def keras_policy(name: str):
    """Keras' global dtype policy set to ``name`` within the block (networks built there compute in it)."""
    previous = tf_keras.mixed_precision.global_policy()
    tf_keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        tf_keras.mixed_precision.set_global_policy(previous)


def build_networks(config: TrainingConfig, policy: str = "float32") -> Networks:
    """Builds the VGG16 trunk, the pooling and the heads, and the views of them that the recipes train."""
    with keras_policy(policy):
        return _build_networks(config)


def _build_networks(config: TrainingConfig) -> Networks:
    base = vgg16.build_conv_base(config.weights)
    trunk = tf_keras.Model(base.input, base.get_layer(config.feature_layer).output, name="trunk")
    activations = trunk.output
    parts = [tf_keras.layers.GlobalAveragePooling2D(name="average_pool")(activations),
             tf_keras.layers.GlobalMaxPooling2D(name="max_pool")(activations)]
    if config.grid_pooling > 1:
        # Canonicalisation deskews and frames every slice on its lungs, so a cell of the grid is the same part of
        # the chest in every image (left and right lung, front and back): pooled per cell, position counts.
        cell = (activations.shape[1] // config.grid_pooling, activations.shape[2] // config.grid_pooling)
        for name, layer in (("grid_average_pool", tf_keras.layers.AveragePooling2D),
                            ("grid_max_pool", tf_keras.layers.MaxPooling2D)):
            parts.append(tf_keras.layers.Flatten(name=f"{name}_flat")(layer(cell, name=name)(activations)))
    pooled = tf_keras.layers.Concatenate(name="pooled", dtype="float32")(parts)
    heads = [_head(config, index) for index in range(config.head_count)]
    outputs = [head(pooled) for head in heads]
    logits = outputs[0] if len(outputs) == 1 else tf_keras.layers.Average(name="mean_logits")(outputs)
    return Networks(
        classifier=tf_keras.Model(base.input, logits, name="radassist_vgg16"),
        gradcam_model=tf_keras.Model(base.input, [activations, pooled, logits], name="gradcam"),
        features=tf_keras.Model(base.input, pooled, name="features"),
        trunk=trunk,
        heads=heads,
    )


def class_weights(labels: np.ndarray) -> dict[int, float]:
    counts = np.bincount(labels, minlength=features.NUM_CLASSES).astype(np.float64)
    counts[counts == 0] = 1.0
    return {i: float(len(labels) / (features.NUM_CLASSES * c)) for i, c in enumerate(counts)}


def _loss(config: TrainingConfig):
    return tf_keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=config.label_smoothing)


def _one_hot(labels: np.ndarray) -> np.ndarray:
    return np.eye(features.NUM_CLASSES, dtype=np.float32)[labels]


def pooled_features(extractor: tf_keras.Model, views: Iterable[np.ndarray], batch_size: int = 32,
                    progress=None) -> np.ndarray:
    """Pooled features of each view of the images (arrays of pixels [N, 224, 224, 3]) -> float32 [N, views, D]."""
    # Compiled, so Grappler fuses conv + bias + ReLU (about 25% faster than eager on CPU).
    function = tf.function(lambda batch: extractor(batch, training=False))
    started = time.time()
    result = []
    for view, pixels in enumerate(views):
        result.append(np.concatenate([function(tf.constant(pixels[start:start + batch_size])).numpy()
                                      for start in range(0, len(pixels), batch_size)]))
        log.info("features, view %d: %.0fs", view + 1, time.time() - started)
        if progress:
            progress(f"features view {view + 1}")
    return np.stack(result, axis=1).astype(np.float32)


def fit_heads(config: TrainingConfig, heads: list[tf_keras.Model], pooled: np.ndarray, labels: np.ndarray,
              seed_offset: int = 0) -> None:
    """Trains ``heads`` on cached pooled features [N, views, D] as one joint model (a pass over the data per epoch
    trains them all; each head's loss reaches only its own weights). Each head sees its own random view of each
    image; heads differ in initialisation, dropout masks and views."""
    seed = config.seed + seed_offset
    tf_keras.utils.set_random_seed(seed)
    views, count = pooled.shape[1], len(heads)
    weights = np.ones(len(labels), np.float32)
    if config.balance_classes:
        per_class = class_weights(labels)
        weights = np.array([per_class[label] for label in labels], np.float32)

    def pick(x, y, w):
        chosen = tf.random.uniform([count], 0, views, tf.int32, seed=seed)
        return tuple(x[chosen[i]] for i in range(count)), (y,) * count, (w,) * count

    dataset = (
        tf.data.Dataset.from_tensor_slices((pooled, _one_hot(labels), weights))
        .shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
        .map(pick)
        .batch(config.batch_size)
    )
    inputs = [tf_keras.Input(shape=pooled.shape[2:]) for _ in heads]
    model = tf_keras.Model(inputs, [head(x) for head, x in zip(heads, inputs, strict=True)])
    model.compile(tf_keras.optimizers.Adam(config.head_learning_rate), loss=[_loss(config)] * count)
    model.fit(dataset, epochs=config.head_epochs, verbose=0)


def _head_logits(heads: list[tf_keras.Model], pooled: np.ndarray) -> np.ndarray:
    pooled = tf.constant(pooled, tf.float32)
    return np.mean([head(pooled, training=False).numpy() for head in heads], axis=0)


def fit_bag(config: TrainingConfig, heads: list[tf_keras.Model], pooled: np.ndarray,
            labels: np.ndarray) -> np.ndarray:
    """Trains the bag: ``config.ensemble_size`` of ``heads`` per fold, on the other folds (exact duplicates kept
    together, so no image is scored by heads that saw its copy). Returns the out-of-fold logits [N, C] of the
    training images as they are (empty with one fold: every head saw every image)."""
    size, folds = config.ensemble_size, config.bagging_folds
    if folds == 1:
        fit_heads(config, heads, pooled, labels)
        return np.zeros((0, features.NUM_CLASSES), np.float32)
    logits = np.zeros((len(labels), features.NUM_CLASSES), np.float32)
    split = ood.duplicate_aware_folds(pooled[:, 0], folds, config.seed)
    if len(split) < 2:
        raise ValueError(f"bagging_folds={folds} needs at least 2 distinct training images")
    for index, held_out in enumerate(split):
        kept = np.setdiff1d(np.arange(len(labels)), held_out)
        members = heads[index * size:(index + 1) * size]
        fit_heads(config, members, pooled[kept], labels[kept], seed_offset=100_000 * index)
        logits[held_out] = _head_logits(members, pooled[held_out, 0])
    if len(split) < folds:  # fewer distinct images than folds: the spare heads learn from all of them
        fit_heads(config, heads[len(split) * size:], pooled, labels, seed_offset=100_000 * folds)
    return logits


@dataclasses.dataclass
class Trained:
    """What a recipe hands to calibration and the gate."""

    networks: Networks
    train_pooled: np.ndarray             # pooled features of the training images as they are [N, D]
    calibration_logits: np.ndarray       # held-out logits beside the validation split's (may be empty) [M, C]
    calibration_labels: np.ndarray       # [M]


def _views(pixels: np.ndarray, shifted_views, count: int) -> Iterator[np.ndarray]:
    """The training images as they are, then ``count - 1`` acquisition-shifted exports of them."""
    yield pixels
    if count > 1 and shifted_views is None:
        raise ValueError("augmented_views > 1 needs shifted_views: the shifted exports come from the raw images")
    for view in range(1, count):
        yield shifted_views(view)


def train_cpu(config: TrainingConfig, train: tuple, progress=None, shifted_views=None) -> Trained:
    """CPU recipe. ``train`` is (pixels float32 [N,224,224,3], labels int [N]); ``shifted_views(v)`` gives the
    pixels of acquisition-shifted view v (components/trainer/augment.py) when ``augmented_views`` > 1."""
    nets = build_networks(config)
    policy = dtype_policy(config)
    extractor = nets.features
    if policy != "float32":
        # Mixed bfloat16 halves the feature pass on CPUs with native bf16; the float32 network is what is
        # calibrated and exported (the heads see float32 features either way).
        twin = build_networks(dataclasses.replace(config, weights="none", ensemble_size=1, bagging_folds=1), policy)
        twin.trunk.set_weights(nets.trunk.get_weights())
        extractor = twin.features
    log.info("cpu recipe: %s features under %s, %d head(s) in %d fold(s)", config.feature_layer, policy,
             config.head_count, config.bagging_folds)
    train_pixels, train_labels = train
    pooled = pooled_features(extractor, _views(train_pixels, shifted_views, config.augmented_views),
                             config.batch_size, progress)
    started = time.time()
    out_of_fold = fit_bag(config, nets.heads, pooled, train_labels)
    log.info("%d heads trained (%d epochs): %.0fs", config.head_count, config.head_epochs, time.time() - started)
    if progress:
        progress(f"{config.head_count} heads trained")
    # Without a bag (one fold) there are no held-out training logits: calibration uses the validation split alone.
    calibration_labels = train_labels if len(out_of_fold) else np.zeros((0,), np.int64)
    return Trained(nets, pooled[:, 0], out_of_fold, calibration_labels)


def train_full(config: TrainingConfig, train: tuple, progress=None, shifted_views=None) -> Trained:
    """GPU recipe: head warm-up with the base frozen, then every layer fine-tuned, on the images as they are and
    their acquisition-shifted views."""
    nets = build_networks(config)
    classifier, trunk = nets.classifier, nets.trunk
    train_pixels, train_labels = train
    views = list(_views(train_pixels, shifted_views, config.augmented_views))
    dataset = (
        tf.data.Dataset.from_tensor_slices((np.concatenate(views), _one_hot(np.tile(train_labels, len(views)))))
        .shuffle(len(train_labels) * len(views), seed=config.seed, reshuffle_each_iteration=True)
        .batch(config.batch_size)
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
    empty = np.zeros((0, features.NUM_CLASSES), np.float32)
    return Trained(nets, nets.features.predict(train_pixels, batch_size=config.batch_size, verbose=0), empty,
                   np.zeros((0,), np.int64))


def train(config: TrainingConfig, train_data: tuple, valid_data: tuple, progress=None,
          shifted_views=None) -> Classifier:
    """Trains with ``config.recipe``, then calibrates on held-out predictions, chooses the review line and fits the
    out-of-distribution gate. ``shifted_views(v)``: pixels of acquisition-shifted view v of the training images
    (needed when ``augmented_views`` > 1). Seeds Python, NumPy and TensorFlow from ``config.seed``."""
    tf_keras.utils.set_random_seed(config.seed)
    recipe = train_cpu if config.recipe == "cpu" else train_full
    trained = recipe(config, train_data, progress, shifted_views)
    nets = trained.networks
    valid_pixels, valid_labels = valid_data
    valid_pooled = nets.features.predict(valid_pixels, batch_size=config.batch_size, verbose=0)
    valid_logits = nets.logits_from_pooled(valid_pooled)
    # Held-out predictions: the bag's out-of-fold training logits and the validation split (72 images on Kaggle).
    held_out_logits = np.concatenate([trained.calibration_logits, valid_logits])
    held_out_labels = np.concatenate([trained.calibration_labels, valid_labels]).astype(np.int64)
    calibrator = calibration.fit(held_out_logits, held_out_labels)
    uncertain_below = calibration.choose_uncertain_below(calibrator.probabilities(held_out_logits), held_out_labels,
                                                         config.review_accuracy)
    if len(valid_labels):
        log.info("calibration %s (valid accuracy %.3f)", calibrator, (valid_logits.argmax(1) == valid_labels).mean())
    width = nets.global_width
    gate = ood.fit_gate(trained.train_pooled[:, :width], train_data[1], valid_pooled[:, :width], features.NUM_CLASSES,
                        quantile=config.ood_quantile, seed=config.seed)
    log.info("out-of-distribution gate: threshold %.2f (%s); uncertain below %.2f", gate.threshold, gate.fitted_on,
             uncertain_below)
    if progress:
        progress("calibrated, gate fitted")
    return Classifier(nets, calibrator, gate, uncertain_below)
