import numpy as np
import pytest

from components import evaluation, features


def test_scores_from_confusion_matrix():
    matrix = np.array([[8, 2, 0, 0], [1, 4, 0, 0], [0, 5, 5, 0], [0, 0, 0, 10]])
    scores = evaluation.scores_from_confusion(matrix)
    assert scores["accuracy"] == pytest.approx(27 / 35)
    assert scores["recall/adenocarcinoma"] == pytest.approx(0.8)
    assert scores["precision/large.cell.carcinoma"] == pytest.approx(4 / 11)
    f1 = [2 * p * r / (p + r) for p, r in [(8 / 9, 0.8), (4 / 11, 0.8), (1.0, 0.5), (1.0, 1.0)]]
    assert scores["macro_f1"] == pytest.approx(np.mean(f1))


def test_macro_f1_ignores_classes_absent_from_the_slice():
    matrix = np.zeros((features.NUM_CLASSES, features.NUM_CLASSES), dtype=int)
    matrix[3, 3] = 5
    assert evaluation.scores_from_confusion(matrix)["macro_f1"] == pytest.approx(1.0)


@pytest.mark.slow  # imports TFMA (about 10 s)
def test_eval_config_slices_and_blessing_thresholds():
    config = evaluation.eval_config(accuracy_floor=0.7)
    assert [list(s.feature_keys) for s in config.slicing_specs] == [[], [features.LEAKED_KEY], [features.LABEL_KEY]]
    accuracy = next(m for m in config.metrics_specs[0].metrics if m.class_name == "SparseCategoricalAccuracy")
    assert accuracy.threshold.value_threshold.lower_bound.value == pytest.approx(0.7)
    assert accuracy.threshold.change_threshold.absolute.value <= 0.0
