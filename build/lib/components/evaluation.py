"""TFMA configuration for the Evaluator, and reading its results back as plain numbers.

Metrics on the official test split, sliced overall, by class and by leaked/leak-free. Accuracy,
per-class precision/recall/F1 and macro-F1 are argmax-based (derived from the confusion matrix);
one-vs-rest AUC comes from TFMA's binarized AUC. Blessing: accuracy >= floor and no regression
against the last blessed model.
"""

import os

import numpy as np

from components import features
from radassist.contract import Output, Signature


def eval_config(accuracy_floor: float, regression_tolerance: float = 0.0):
    """TFMA's EvalConfig: the slices and the blessing thresholds (TFMA is imported here: the scoring helpers below
    are plain numpy, for callers that never evaluate)."""
    from tensorflow_model_analysis.proto import config_pb2

    class_ids = list(range(features.NUM_CLASSES))
    return config_pb2.EvalConfig(
        model_specs=[
            config_pb2.ModelSpec(
                signature_name=Signature.SERVING_DEFAULT,
                label_key=features.LABEL_KEY,
                prediction_key=Output.PROBABILITIES,
            )
        ],
        slicing_specs=[
            config_pb2.SlicingSpec(),
            config_pb2.SlicingSpec(feature_keys=[features.LEAKED_KEY]),
            config_pb2.SlicingSpec(feature_keys=[features.LABEL_KEY]),
        ],
        metrics_specs=[
            config_pb2.MetricsSpec(
                metrics=[
                    config_pb2.MetricConfig(class_name="ExampleCount"),
                    config_pb2.MetricConfig(
                        class_name="SparseCategoricalAccuracy",
                        threshold=config_pb2.MetricThreshold(
                            value_threshold=config_pb2.GenericValueThreshold(lower_bound={"value": accuracy_floor}),
                            change_threshold=config_pb2.GenericChangeThreshold(
                                direction=config_pb2.MetricDirection.HIGHER_IS_BETTER,
                                absolute={"value": -regression_tolerance - 1e-10},
                            ),
                        ),
                    ),
                    config_pb2.MetricConfig(class_name="MultiClassConfusionMatrixPlot"),
                ]
            ),
            config_pb2.MetricsSpec(
                binarize=config_pb2.BinarizationOptions(class_ids={"values": class_ids}),
                metrics=[
                    config_pb2.MetricConfig(class_name="AUC"),
                    config_pb2.MetricConfig(class_name="ConfusionMatrixPlot", config='{"num_thresholds": 50}'),
                ],
            ),
        ],
    )


def _value(metric) -> float:
    if metric.HasField("double_value"):
        return float(metric.double_value.value)
    if metric.HasField("bounded_value"):
        return float(metric.bounded_value.value.value)
    raise ValueError(f"unsupported metric value: {metric}")


def _slice_name(slice_key) -> str:
    if not slice_key:
        return "overall"
    return ",".join(f"{name}={value}" for name, value in slice_key)


def confusion_matrix(plot) -> np.ndarray:
    """[true, predicted] counts from a MultiClassConfusionMatrixPlot at the argmax threshold (0.0)."""
    matrix = np.zeros((features.NUM_CLASSES, features.NUM_CLASSES), dtype=np.int64)
    per_threshold = plot.multi_class_confusion_matrix_at_thresholds.matrices
    at_zero = min(per_threshold, key=lambda m: abs(m.threshold))
    for entry in at_zero.entries:
        if 0 <= entry.predicted_class_id < features.NUM_CLASSES:
            matrix[entry.actual_class_id, entry.predicted_class_id] += int(entry.num_weighted_examples)
    return matrix


def scores_from_confusion(matrix: np.ndarray) -> dict[str, float]:
    """Accuracy, per-class precision/recall/F1 and macro-F1 over the classes present in the slice."""
    result = {"accuracy": float(np.trace(matrix) / max(matrix.sum(), 1))}
    f1s = []
    for i, name in enumerate(features.CLASS_NAMES):
        tp, support, predicted = matrix[i, i], matrix[i].sum(), matrix[:, i].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        result[f"precision/{name}"], result[f"recall/{name}"], result[f"f1/{name}"] = precision, recall, f1
        if support:
            f1s.append(f1)
    result["macro_f1"] = float(np.mean(f1s)) if f1s else 0.0
    return result


def load_results(evaluation_uri: str, model_name: str = "") -> dict:
    """Evaluator output -> {slice: {metric: value}}, {slice: confusion matrix}, {class: ROC points}."""
    import tensorflow_model_analysis as tfma

    metrics: dict[str, dict[str, float]] = {}
    for record in tfma.load_metrics(evaluation_uri):
        name = _slice_name(tfma.slicer.deserialize_slice_key(record.slice_key))
        for key_and_value in record.metric_keys_and_values:
            key = key_and_value.key
            if key.model_name != model_name or key.is_diff:
                continue
            label = key.name
            if key.sub_key.HasField("class_id"):
                label = f"{key.name}/{features.CLASS_NAMES[key.sub_key.class_id.value]}"
            try:
                metrics.setdefault(name, {})[label] = _value(key_and_value.value)
            except ValueError:
                continue
    matrices, roc = {}, {}
    for record in tfma.load_plots(evaluation_uri):
        name = _slice_name(tfma.slicer.deserialize_slice_key(record.slice_key))
        for plot_entry in record.plot_keys_and_values:
            key, plot = plot_entry.key, plot_entry.value
            if plot.HasField("multi_class_confusion_matrix_at_thresholds"):
                matrices[name] = confusion_matrix(plot)
            elif plot.HasField("confusion_matrix_at_thresholds") and name == "overall":
                points = [
                    (m.false_positives / max(m.false_positives + m.true_negatives, 1),
                     m.true_positives / max(m.true_positives + m.false_negatives, 1))
                    for m in plot.confusion_matrix_at_thresholds.matrices
                ]
                roc[features.CLASS_NAMES[key.sub_key.class_id.value]] = sorted(points)
    for name, matrix in matrices.items():
        metrics.setdefault(name, {}).update(scores_from_confusion(matrix))
    return {"metrics": metrics, "confusion_matrices": {k: v.tolist() for k, v in matrices.items()}, "roc": roc}


def blessed(blessing_uri: str) -> bool:
    return os.path.exists(os.path.join(blessing_uri, "BLESSED"))
