"""The out-of-distribution gate: is an input like the images the model was trained and validated on?

Two parts, both exported inside every signature (see export.py):
- an input check on statistics of the image itself (grey, not blank, a sensible size and shape, a body present
  that encloses dark lungs), with fixed limits (``InputLimits``);
- a feature-space distance: class-conditional Mahalanobis distance with one shared, Ledoit-Wolf-shrunk covariance
  (Lee et al. 2018) on the globally pooled features (average and max over the whole feature map; the heads read
  these and more, per grid cell), fitted on the training split. Its threshold is a high quantile of
  in-distribution distances that the gate did not see while fitting: k-fold cross-fitted distances of the
  training images plus the validation images' distances. ``ood_score`` is the distance divided by that
  threshold, so 1.0 is the line for every model version.
"""

import dataclasses

import numpy as np
import tensorflow as tf
from sklearn.covariance import LedoitWolf

# Reasons, in the order they are checked; the first that applies is reported.
REASON_NOT_GREYSCALE = "not_greyscale"
REASON_BLANK = "blank"
REASON_TOO_SMALL = "too_small"
REASON_ODD_SHAPE = "odd_shape"
REASON_NO_BODY = "no_body"
REASON_NO_LUNGS = "no_lungs"
REASON_FEATURE_DISTANCE = "unlike_training_images"
EMBEDDING_DIMENSIONS = 16  # principal axes of the standardised pooled training features in ``embedding``
REASONS = (REASON_NOT_GREYSCALE, REASON_BLANK, REASON_TOO_SMALL, REASON_ODD_SHAPE, REASON_NO_BODY,
           REASON_NO_LUNGS, REASON_FEATURE_DISTANCE)


@dataclasses.dataclass(frozen=True)
class InputLimits:
    """Fixed limits of the input check (CT slices are grey, show a body and are roughly square)."""

    max_colour_fraction: float = 0.05   # share of coloured pixels (drawn annotation lines stay far below)
    min_contrast: float = 4.0           # standard deviation of the gray levels, 0..255
    min_side: int = 64                  # pixels
    max_aspect: float = 3.0             # longer side / shorter side
    min_body_fraction: float = 0.05     # the body's share of the image
    min_enclosed_dark: float = 0.005    # dark share of the body with what it encloses: no lungs, not a chest slice


DEFAULT_LIMITS = InputLimits()


@dataclasses.dataclass
class FeatureGate:
    """Class-conditional Mahalanobis distance on standardised pooled features, and its threshold."""

    mean: np.ndarray          # [D] standardisation
    scale: np.ndarray         # [D]
    class_means: np.ndarray   # [C, D] in standardised units
    whitening: np.ndarray     # [D, D]: ||(z - mu_c) @ whitening|| is the Mahalanobis distance
    threshold: float          # distance above which an input is out of domain
    quantile: float           # of the held-out in-distribution distances the threshold is
    fitted_on: dict           # counts and shrinkage, for the model info
    principal_axes: np.ndarray  # [D, K]: ``embedding`` = standardised features @ principal_axes

    def distances(self, pooled: np.ndarray) -> np.ndarray:
        """Pooled features [N, D] -> the distance to the nearest class [N]."""
        return _distances(self.mean, self.scale, self.class_means, self.whitening, pooled)

    def info(self) -> dict:
        return {"method": "class-conditional Mahalanobis, shared Ledoit-Wolf covariance, globally pooled features",
                "threshold": self.threshold, "quantile": self.quantile, **self.fitted_on}


def _distances(mean, scale, class_means, whitening, pooled) -> np.ndarray:
    projected = ((pooled - mean) / scale) @ whitening
    centres = class_means @ whitening
    squared = ((projected[:, None, :] - centres[None]) ** 2).sum(-1)
    return np.sqrt(squared.min(axis=1))


def _fit_parts(pooled: np.ndarray, labels: np.ndarray, num_classes: int):
    mean = pooled.mean(0)
    scale = pooled.std(0) + 1e-3 * (pooled.std(0).mean() + 1e-6)
    standard = (pooled - mean) / scale
    class_means = np.stack([standard[labels == c].mean(0) if np.any(labels == c) else np.zeros(standard.shape[1])
                            for c in range(num_classes)])
    within = standard - class_means[labels]
    estimator = LedoitWolf(assume_centered=True).fit(within)
    eigenvalues, eigenvectors = np.linalg.eigh(estimator.covariance_)
    whitening = eigenvectors / np.sqrt(np.maximum(eigenvalues, 1e-6))
    return mean, scale, class_means, whitening, float(estimator.shrinkage_)


def principal_axes(standard: np.ndarray, dimensions: int = EMBEDDING_DIMENSIONS) -> np.ndarray:
    """The ``dimensions`` leading principal axes [D, K] of standardised features [N, D], signs fixed (the largest
    loading of each axis positive) so that retraining on the same data gives the same embedding."""
    centred = standard - standard.mean(0)
    _, _, rows = np.linalg.svd(centred, full_matrices=False)
    axes = rows[:dimensions].T
    signs = np.sign(axes[np.abs(axes).argmax(0), np.arange(axes.shape[1])])
    axes = axes * np.where(signs == 0, 1.0, signs)
    if axes.shape[1] < dimensions:  # fewer examples or features than axes: pad, the embedding keeps its width
        axes = np.pad(axes, ((0, 0), (0, dimensions - axes.shape[1])))
    return axes


def fit_gate(pooled: np.ndarray, labels: np.ndarray, valid_pooled: np.ndarray, num_classes: int,
             quantile: float = 0.95, folds: int = 5, seed: int = 0) -> FeatureGate:
    """Fits the gate on training features and sets its threshold on held-out in-distribution distances."""
    pooled = np.asarray(pooled, np.float64)
    labels = np.asarray(labels)
    mean, scale, class_means, whitening, shrinkage = _fit_parts(pooled, labels, num_classes)
    held_out = [_distances(mean, scale, class_means, whitening, np.asarray(valid_pooled, np.float64))]
    for fold in duplicate_aware_folds(pooled, folds, seed):
        keep = np.setdiff1d(np.arange(len(labels)), fold)
        if len(np.unique(labels[keep])) < 2:
            continue
        held_out.append(_distances(*_fit_parts(pooled[keep], labels[keep], num_classes)[:4], pooled[fold]))
    held_out = np.concatenate(held_out)
    return FeatureGate(
        mean=mean.astype(np.float32), scale=scale.astype(np.float32), class_means=class_means.astype(np.float32),
        whitening=whitening.astype(np.float32), threshold=float(np.quantile(held_out, quantile)), quantile=quantile,
        principal_axes=principal_axes((pooled - mean) / scale).astype(np.float32),
        fitted_on={"train_examples": int(len(labels)), "held_out_distances": int(len(held_out)),
                   "held_out_distance_quantiles": {str(q): round(float(np.quantile(held_out, q)), 2)
                                                   for q in (0.5, 0.9, 0.95, 0.99)},
                   "cross_fit_folds": int(folds), "ledoit_wolf_shrinkage": round(shrinkage, 4),
                   "feature_dimensions": int(pooled.shape[1]), "embedding_dimensions": EMBEDDING_DIMENSIONS},
    )


def duplicate_aware_folds(pooled: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """Splits examples into ``folds`` random folds (index arrays) keeping exact duplicates (identical features:
    the Kaggle set repeats many files) in one fold, so a held-out image is never also in the fitting folds."""
    _, group = np.unique(np.round(np.asarray(pooled), 3), axis=0, return_inverse=True)
    group = group.reshape(-1)
    order = np.random.default_rng(seed).permutation(group.max() + 1) if len(group) else np.zeros(0, int)
    split = [np.flatnonzero(np.isin(group, part)) for part in np.array_split(order, min(folds, len(order)))]
    return [fold for fold in split if len(fold)]


def input_reason(stats: dict, limits: InputLimits = DEFAULT_LIMITS) -> tf.Tensor:
    """The input check, in TF ops, on a batch of ``imaging.canonical_batch`` statistics: string [N], "" where the
    image passes, else the first reason that applies."""
    height, width = stats["height"], stats["width"]
    shorter, longer = tf.minimum(height, width), tf.maximum(height, width)
    checks = (
        (REASON_NOT_GREYSCALE, stats["colour_fraction"] > limits.max_colour_fraction),
        (REASON_BLANK, stats["contrast"] < limits.min_contrast),
        (REASON_TOO_SMALL, shorter < limits.min_side),
        (REASON_ODD_SHAPE, longer > limits.max_aspect * shorter),
        (REASON_NO_BODY, stats["body_fraction"] < limits.min_body_fraction),
        (REASON_NO_LUNGS, stats["enclosed_dark_fraction"] < limits.min_enclosed_dark),
    )
    reason = tf.fill(tf.shape(height), "")
    for name, failed in reversed(checks):
        reason = tf.where(failed, name, reason)
    return reason


def gate_outputs(gate: FeatureGate, pooled: tf.Tensor, stats: dict, limits: InputLimits = DEFAULT_LIMITS) -> dict:
    """The gate in TF ops: ``ood_score`` float32 [N] (distance / threshold), ``in_domain`` bool [N],
    ``ood_reason`` string [N] ("" when in domain) and ``embedding`` float32 [N, K]."""
    standard = (pooled - gate.mean) / gate.scale
    projected = tf.matmul(standard, tf.constant(gate.whitening))
    centres = tf.constant(gate.class_means @ gate.whitening)
    squared = tf.reduce_sum(tf.square(projected[:, None, :] - centres[None]), axis=-1)
    score = tf.sqrt(tf.reduce_min(squared, axis=1)) / gate.threshold
    reason = input_reason(stats, limits)
    reason = tf.where(tf.equal(reason, "") & (score > 1.0), REASON_FEATURE_DISTANCE, reason)
    return {"ood_score": score, "in_domain": tf.equal(reason, ""), "ood_reason": reason,
            "embedding": tf.matmul(standard, tf.constant(gate.principal_axes))}
