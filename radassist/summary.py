"""After a local run: the figures that matter, read back from ML Metadata and the artifacts."""

import json
import os

from components import evaluation, features
from components.leakage_audit import REPORT_FILE, LeakageReport
from components.segmentation import features as segmentation_features
from pipelines.metadata import read_only_store


def _latest(store, type_name: str):
    artifacts = store.get_artifacts_by_type(type_name)
    return max(artifacts, key=lambda a: a.id) if artifacts else None


def _custom(artifact, key: str, default=None):
    if artifact is None or key not in artifact.custom_properties:
        return default
    value = artifact.custom_properties[key]
    return value.string_value or value.int_value


def read_summary(metadata_path: str) -> dict:
    """Latest audit counts, test metrics (overall and leak-free), blessing, pushed version and the trained model
    (its SavedModel, pushed or not)."""
    store = read_only_store(metadata_path)
    summary: dict = {}
    report = _latest(store, LeakageReport.TYPE_NAME)
    if report is not None:
        with open(os.path.join(report.uri, REPORT_FILE)) as handle:
            summary["audit"] = json.load(handle)["counts"]
    evaluation_artifact = _latest(store, "ModelEvaluation")
    if evaluation_artifact is not None:
        summary["metrics"] = evaluation.load_results(evaluation_artifact.uri)["metrics"]
    blessing = _latest(store, "ModelBlessing")
    summary["blessed"] = bool(_custom(blessing, "blessed", 0))
    pushed = _latest(store, "PushedModel")
    summary["pushed"] = bool(_custom(pushed, "pushed", 0))
    summary["pushed_destination"] = _custom(pushed, "pushed_destination") if summary["pushed"] else None
    summary["pushed_version"] = _custom(pushed, "pushed_version") if summary["pushed"] else None
    model = _latest(store, "Model")
    if model is not None:
        from tfx.utils import path_utils

        summary["trained_model"] = path_utils.serving_model_path(model.uri)
    return summary


def format_summary(summary: dict) -> str:
    lines = []
    metrics = summary.get("metrics", {})
    segmenter = "dice" in metrics.get("overall", {})
    audit = {} if segmenter else summary.get("audit", {})  # the leakage audit is the classifier's
    if audit:
        lines.append(
            f"data: train {audit.get('train_examples')}  valid {audit.get('valid_examples')}  "
            f"test {audit.get('test_examples')} ({audit.get('test_leaked')} leaked: "
            f"{audit.get('test_leaked_exact')} exact, {audit.get('test_leaked_near')} near); "
            f"label conflicts {audit.get('label_conflict_groups')}"
        )
    if segmenter:
        lines.extend(_segmenter_rows(metrics))
    else:
        lines.extend(_classifier_rows(metrics))
    verdict = "BLESSED" if summary.get("blessed") else "NOT blessed"
    pushed = (f"pushed version {summary['pushed_version']} -> {summary['pushed_destination']}"
              if summary.get("pushed") else "not pushed")
    lines.append(f"model: {verdict}, {pushed}")
    return "\n".join(lines)


def _segmenter_rows(metrics: dict) -> list[str]:
    """Test Dice and IoU (mean per slice), overall and by nodule size, smallest first."""
    sizes = [name for _, _, name in segmentation_features.SIZE_BINS]
    names = ["overall"] + [f"{segmentation_features.SIZE_BIN_KEY}={size}" for size in sizes]
    lines = [f"{'test slices':<26}{'n':>6}{'Dice':>8}{'IoU':>8}"]
    for name in names:
        values = metrics.get(name)
        if values:
            lines.append(f"{name:<26}{int(values.get('example_count', 0)):>6}{values['dice']:>8.3f}"
                         f"{values.get('iou', float('nan')):>8.3f}")
    return lines


def _classifier_rows(metrics: dict) -> list[str]:
    lines = []
    rows = [("official test", metrics.get("overall", {})), ("leak-free test", metrics.get("leaked=0", {})),
            ("leaked only", metrics.get("leaked=1", {}))]
    lines.append(f"{'slice':<16}{'n':>6}{'accuracy':>10}{'macro-F1':>10}  " +
                 "  ".join(f"{'rec ' + n[:8]:>12}" for n in features.CLASS_NAMES))
    for name, values in rows:
        if not values:
            continue
        recalls = "  ".join(f"{values.get(f'recall/{n}', float('nan')):>12.3f}" for n in features.CLASS_NAMES)
        lines.append(f"{name:<16}{int(values.get('example_count', 0)):>6}{values.get('accuracy', float('nan')):>10.3f}"
                     f"{values.get('macro_f1', float('nan')):>10.3f}  {recalls}")
    return lines
