"""Calibration: probabilities that mean what they say, and the review line read off them.

Both are fitted on held-out predictions (the out-of-fold logits of the bagged heads and the validation split; see
recipes.train) and exported inside every signature:

- Temperature scaling (Guo et al. 2017): softmax(logits / T), T fitted by negative log-likelihood. One number for
  all inputs; it keeps the argmax, so accuracy is unchanged. (A top-label beta map on top of it was tried and did
  not lower the test ECE on three seeds: with ~1,000 held-out slices its three parameters fit noise.)
- The review line (``uncertain_below``): the lowest calibrated confidence at which the held-out predictions above
  it are right at least ``target`` of the time (selective prediction, read off their risk-coverage curve).
"""

import dataclasses

import numpy as np
import scipy.optimize
import scipy.special
import tensorflow as tf


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T > 0 that minimises the NLL of softmax(logits / T) (1.0 without data)."""
    if len(labels) == 0:
        return 1.0

    def nll(log_t: float) -> float:
        log_probs = scipy.special.log_softmax(logits / np.exp(log_t), axis=1)
        return float(-log_probs[np.arange(len(labels)), labels].mean())

    result = scipy.optimize.minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))


@dataclasses.dataclass(frozen=True)
class Calibrator:
    """softmax(logits / temperature), in numpy (training, benchmarks) and in TF ops (the signatures)."""

    temperature: float = 1.0
    fitted_on: int = 0  # how many held-out predictions the temperature was fitted on

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities [N, C] of logits [N, C] (the same rule as ``probabilities_tf``)."""
        return scipy.special.softmax(np.asarray(logits, np.float64) / self.temperature, axis=1)

    def probabilities_tf(self, logits: tf.Tensor) -> tf.Tensor:
        """The same in TF ops, for the signatures: float32 [N, C]."""
        return tf.nn.softmax(logits / self.temperature)

    def info(self) -> dict:
        return {"method": "temperature scaling", "temperature": self.temperature, "fitted_on": self.fitted_on}


def fit(logits: np.ndarray, labels: np.ndarray) -> Calibrator:
    """The temperature of held-out ``logits`` [N, C] with their ``labels`` [N]."""
    return Calibrator(fit_temperature(np.asarray(logits, np.float64), labels), int(len(labels)))


def choose_uncertain_below(probabilities: np.ndarray, labels: np.ndarray, target: float,
                           bounds: tuple[float, float] = (0.4, 0.95)) -> float:
    """The review line from a risk-coverage curve: the lowest confidence c such that the predictions with top
    probability >= c are right at least ``target`` of the time (clipped to ``bounds``; the upper bound when no line
    reaches the target)."""
    if len(labels) == 0:
        return bounds[1]
    confidence = probabilities.max(1)
    correct = probabilities.argmax(1) == labels
    for line in np.sort(np.unique(confidence)):
        covered = confidence >= line
        if correct[covered].mean() >= target:
            return float(np.clip(line, *bounds))
    return bounds[1]
