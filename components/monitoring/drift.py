"""Drift of a window of logged traffic against the model's training images: pure functions, tested without TFX.

- Feature groups (components/monitoring/features.GROUPS): TFDV statistics of both sides and
  ``tfdv.validate_statistics`` with drift comparators in the schema: Jensen-Shannon divergence for numeric
  features, L-infinity distance for the predicted class. A group's score is its largest measurement over its
  threshold. Histogram distances of a few hundred images are noisy (two samples of one distribution often differ
  by more than a useful threshold), so a group drifts only when its score is above 1.0 and the same permutation
  test as the embedding's, on the group's features in the baseline's units, finds the difference significant.
- The embedding: the maximum mean discrepancy (Gaussian kernel, median-distance bandwidth of the baseline) between
  the window's and the baseline's embeddings, with a permutation test; it drifts when the p-value is under
  ``alpha`` and MMD^2 is above ``min_mmd2`` (significant and not negligible).
Exact duplicates in a window (the same image sent twice) count once: a repeat is not new evidence of drift.
"""

import dataclasses

import numpy as np
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2, statistics_pb2

from components.monitoring import features


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """The drift lines, recorded in the schema (comparators) and the summary."""

    jensen_shannon: float = 0.1   # numeric features (TFDV's histogram JS divergence)
    l_infinity: float = 0.2       # the predicted-class mix
    alpha: float = 0.01           # the embedding's permutation test
    min_mmd2: float = 0.02        # and its effect size floor
    permutations: int = 500
    min_examples: int = 30        # fewer distinct images in a window: no verdict (too few to tell)


def drift_schema(baseline: statistics_pb2.DatasetFeatureStatisticsList,
                 thresholds: Thresholds) -> schema_pb2.Schema:
    """The schema inferred from the baseline's statistics with a drift comparator on every monitored feature."""
    schema = tfdv.infer_schema(baseline)
    for feature in schema.feature:
        if feature.name in features.CATEGORICAL:
            feature.drift_comparator.infinity_norm.threshold = thresholds.l_infinity
        elif feature.name in features.NUMERIC:
            feature.drift_comparator.jensen_shannon_divergence.threshold = thresholds.jensen_shannon
        # A class the baseline never predicted is drift, not a schema error; a new signature or version is news.
        feature.ClearField("domain_info")
        feature.ClearField("presence")  # outputs an older model lacks are reported missing, not failed
    del schema.string_domain[:]
    return schema


def statistics(columns: dict[str, np.ndarray]) -> statistics_pb2.DatasetFeatureStatisticsList:
    """TFDV statistics of the monitored feature columns (the embedding is tested separately)."""
    import pandas as pd

    frame = pd.DataFrame({name: columns[name] for name in (*features.NUMERIC, *features.CATEGORICAL)
                          if name in columns})
    return tfdv.generate_statistics_from_dataframe(frame)


def feature_drift(baseline: statistics_pb2.DatasetFeatureStatisticsList,
                  window: statistics_pb2.DatasetFeatureStatisticsList,
                  schema: schema_pb2.Schema) -> tuple[dict, anomalies_pb2.Anomalies]:
    """Per-group scores from TFDV's drift comparators: {group: {"score", "drifted", "features": {name: {"value",
    "threshold"}}}} and the anomalies proto (for the TFDV view)."""
    anomalies = tfdv.validate_statistics(window, schema, previous_statistics=baseline)
    constant = _same_constant(baseline, window)
    measured = {}
    for info in anomalies.drift_skew_info:
        name = info.path.step[0]
        for measurement in info.drift_measurements:
            if measurement.threshold > 0:
                measured[name] = {"value": 0.0 if name in constant else round(float(measurement.value), 4),
                                  "threshold": float(measurement.threshold)}
    groups = {}
    for group, names in features.GROUPS.items():
        found = {name: measured[name] for name in names if name in measured}
        score = max((m["value"] / m["threshold"] for m in found.values()), default=0.0)
        groups[group] = {"score": round(score, 4), "drifted": score > 1.0, "features": found}
    return groups, anomalies


def _same_constant(baseline: statistics_pb2.DatasetFeatureStatisticsList,
                   window: statistics_pb2.DatasetFeatureStatisticsList) -> set[str]:
    """Numeric features holding one and the same value on both sides (no colour in any CT, nothing out of domain):
    TFDV's Jensen-Shannon divergence of two such point masses is 1.0, so they are measured as 0 here (two different
    constants keep TFDV's maximal distance)."""
    def constants(statistics) -> dict[str, float]:
        found = {}
        for feature in statistics.datasets[0].features if statistics.datasets else ():
            if feature.HasField("num_stats") and feature.num_stats.min == feature.num_stats.max:
                found[feature.path.step[0]] = feature.num_stats.min
        return found

    reference, current = constants(baseline), constants(window)
    return {name for name, value in reference.items() if current.get(name) == value}


def _kernel(a: np.ndarray, b: np.ndarray, bandwidth: float) -> np.ndarray:
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T
    return np.exp(-np.maximum(squared, 0.0) / (2 * bandwidth ** 2))


def median_bandwidth(baseline: np.ndarray, seed: int = 0, sample: int = 500) -> float:
    """The median pairwise distance of (a sample of) the baseline: the usual kernel bandwidth."""
    rng = np.random.default_rng(seed)
    points = baseline[rng.choice(len(baseline), min(sample, len(baseline)), replace=False)]
    distances = np.sqrt(np.maximum(((points[:, None] - points[None]) ** 2).sum(-1), 0.0))
    return float(np.median(distances[np.triu_indices(len(points), 1)])) or 1.0


def _mmd2(kernel: np.ndarray, first: np.ndarray) -> float:
    """Unbiased MMD^2 of the split of a joint kernel matrix into ``first`` (bool mask) and the rest."""
    a, b = kernel[np.ix_(first, first)], kernel[np.ix_(~first, ~first)]
    n, m = len(a), len(b)
    within_a = (a.sum() - np.trace(a)) / (n * (n - 1))
    within_b = (b.sum() - np.trace(b)) / (m * (m - 1))
    return float(within_a + within_b - 2 * kernel[np.ix_(first, ~first)].mean())


def permutation_test(baseline: np.ndarray, window: np.ndarray, permutations: int, seed: int = 0) -> tuple[float, float]:
    """MMD^2 of two samples [N, D], [M, D] (each column in the baseline's units) and its permutation p-value."""
    baseline, window = np.asarray(baseline, np.float64), np.asarray(window, np.float64)
    scale = baseline.std(0) + 1e-6  # each column in the baseline's units, so no axis dominates the distance
    joint = np.concatenate([window, baseline]) / scale
    kernel = _kernel(joint, joint, median_bandwidth(baseline / scale, seed))
    first = np.zeros(len(joint), bool)
    first[:len(window)] = True
    observed = _mmd2(kernel, first)
    rng = np.random.default_rng(seed)
    exceed = sum(_mmd2(kernel, rng.permutation(first)) >= observed for _ in range(permutations))
    return observed, (exceed + 1) / (permutations + 1)


def group_matrix(columns: dict[str, np.ndarray], group: str, classes: list[str]) -> np.ndarray:
    """A group's features as a matrix [N, D]: numeric columns as they are (missing ones left out), the predicted
    class one-hot over ``classes``."""
    parts = []
    for name in features.GROUPS[group]:
        if name == features.PREDICTED_CLASS:
            parts.extend((columns[name] == value).astype(np.float64) for value in classes)
        elif name in columns and np.isfinite(columns[name]).all():
            parts.append(np.asarray(columns[name], np.float64))
    return np.stack(parts, axis=1)


def embedding_drift(baseline: np.ndarray, window: np.ndarray, thresholds: Thresholds, seed: int = 0) -> dict:
    """MMD^2 of the window's embeddings against the baseline's and its permutation p-value."""
    baseline, window = np.asarray(baseline, np.float64), np.asarray(window, np.float64)
    observed, p_value = permutation_test(baseline, window, thresholds.permutations, seed)
    drifted = p_value < thresholds.alpha and observed > thresholds.min_mmd2
    return {"mmd2": round(observed, 5), "p_value": round(p_value, 4), "alpha": thresholds.alpha,
            "min_mmd2": thresholds.min_mmd2, "score": round(observed / thresholds.min_mmd2, 4)
            if p_value < thresholds.alpha else 0.0, "drifted": bool(drifted)}


def distinct(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The rows of the first occurrence of each image (by sha256)."""
    _, first = np.unique(columns[features.SHA256], return_index=True)
    keep = np.sort(first)
    return {name: column[keep] for name, column in columns.items()}


def window_report(baseline: dict[str, np.ndarray], window: dict[str, np.ndarray], thresholds: Thresholds,
                  baseline_statistics=None, window_statistics=None, seed: int = 0) -> dict:
    """The drift verdict of a window's feature columns against the baseline's: groups, embedding, alert and the
    window's summary figures (OOD share, class mix, confidence)."""
    window = distinct(window)
    count = len(window[features.SHA256])
    report = {"images": int(count), "thresholds": dataclasses.asdict(thresholds),
              "ood_share": round(float(np.mean(window["out_of_domain"])), 4) if count else None,
              "review_share": round(float(np.mean(window["needs_review"])), 4) if count else None,
              "confidence_mean": round(float(np.mean(window["confidence"])), 4) if count else None,
              "class_mix": {str(name): round(float(np.mean(window[features.PREDICTED_CLASS] == name)), 4)
                            for name in sorted(set(window[features.PREDICTED_CLASS]))} if count else {}}
    if count < thresholds.min_examples:
        return {**report, "groups": {}, "embedding": None, "alert": False,
                "verdict": f"too few distinct images ({count} < {thresholds.min_examples})"}
    baseline_statistics = baseline_statistics or statistics(baseline)
    schema = drift_schema(baseline_statistics, thresholds)
    groups, anomalies = feature_drift(baseline_statistics, window_statistics or statistics(window), schema)
    classes = sorted(set(baseline[features.PREDICTED_CLASS]) | set(window[features.PREDICTED_CLASS]))
    for group, result in groups.items():
        _, p_value = permutation_test(group_matrix(baseline, group, classes), group_matrix(window, group, classes),
                                      thresholds.permutations, seed)
        result["p_value"] = round(p_value, 4)
        result["drifted"] = bool(result["score"] > 1.0 and p_value < thresholds.alpha)
    embedding = None
    if features.EMBEDDING in window and features.EMBEDDING in baseline:
        embedding = embedding_drift(baseline[features.EMBEDDING], window[features.EMBEDDING], thresholds, seed)
    drifted = [group for group, result in groups.items() if result["drifted"]]
    if embedding and embedding["drifted"]:
        drifted.append("embedding")
    return {**report, "groups": groups, "embedding": embedding, "drifted_groups": drifted, "alert": bool(drifted),
            "verdict": "drift: " + ", ".join(drifted) if drifted else "no drift",
            "_anomalies": anomalies, "_schema": schema}
