"""Overlap metrics for TFMA (Keras metrics, named in the Evaluator's config by class and module): the mean over
slices of each slice's Dice or IoU between the predicted lesion mask and the consensus. A slice where both are empty
scores 1, where one is, 0. TFMA sums the metrics' variables over batches, so the totals are exact."""

import tensorflow as tf
import tf_keras


class _SliceOverlap(tf_keras.metrics.Metric):
    def __init__(self, name: str, threshold: float = 0.5, **kwargs):
        super().__init__(name=name, **kwargs)
        self.threshold = threshold
        self.total = self.add_weight("total", initializer="zeros", dtype=tf.float64)
        self.count = self.add_weight("count", initializer="zeros", dtype=tf.float64)

    def _score(self, overlap: tf.Tensor, predicted: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def update_state(self, y_true, y_pred, sample_weight=None):
        rows = tf.shape(y_true)[0]
        target = tf.cast(tf.reshape(y_true, [rows, -1]) > 0.5, tf.float64)
        predicted = tf.cast(tf.reshape(y_pred, [rows, -1]) >= self.threshold, tf.float64)
        overlap = tf.reduce_sum(target * predicted, axis=1)
        scores = self._score(overlap, tf.reduce_sum(predicted, axis=1), tf.reduce_sum(target, axis=1))
        self.total.assign_add(tf.reduce_sum(scores))
        self.count.assign_add(tf.cast(rows, tf.float64))

    def result(self):
        return tf.math.divide_no_nan(self.total, self.count)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}


class SliceDice(_SliceOverlap):
    """Mean per-slice Dice, 2|P∩T| / (|P| + |T|)."""

    def __init__(self, name: str = "dice", threshold: float = 0.5, **kwargs):
        super().__init__(name=name, threshold=threshold, **kwargs)

    def _score(self, overlap, predicted, target):
        total = predicted + target
        return tf.where(total > 0, 2.0 * overlap / tf.maximum(total, 1.0), tf.ones_like(total))


class SliceIoU(_SliceOverlap):
    """Mean per-slice IoU (Jaccard), |P∩T| / |P∪T|."""

    def __init__(self, name: str = "iou", threshold: float = 0.5, **kwargs):
        super().__init__(name=name, threshold=threshold, **kwargs)

    def _score(self, overlap, predicted, target):
        union = predicted + target - overlap
        return tf.where(union > 0, overlap / tf.maximum(union, 1.0), tf.ones_like(union))
