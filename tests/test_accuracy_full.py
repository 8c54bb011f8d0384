"""The default CPU recipe on the full Kaggle set: a guard against regressions of accuracy, robustness to export
shifts, the out-of-distribution gate and calibration (about 8 minutes). benchmarks/robustness.py measures the
same over the whole shift suite and 3 seeds (benchmarks/results/robustness.json)."""

import numpy as np
import pytest
import tensorflow as tf

from benchmarks import robustness
from benchmarks.accuracy import load_dataset
from components.trainer import recipes

# Floors, with room for seed and machine differences below what 3 seeds measured (robustness.json).
OFFICIAL_FLOOR = 0.85
LEAK_FREE_FLOOR = 0.82
SHIFT_DROP_CEILING = 0.06      # the export shifts of the issue; the benchmark measured 0.010-0.013 (robustness.json)
IN_DISTRIBUTION_FLAGGED_CEILING = 0.05
NON_CT_FLAGGED_FLOOR = 0.95
ECE_CEILING = 0.06             # measured 0.016-0.044 per seed; 315 images and 15 bins give a noise floor near 0.03
TRAINING_BUDGET_SECONDS = 20 * 60
SHIFTS = ("pad_0.15", "gamma_1.6", "crop_0.10", "rotate_10")


@pytest.mark.full_data
def test_default_recipe_is_accurate_robust_calibrated_and_withholds_non_ct_pictures(full_data_dir):
    data, audit_result = load_dataset(full_data_dir)
    leaked = np.array([audit_result.is_leaked("test", f) for f in data["test"][2]])
    extractor = tf.function(recipes.build_networks(recipes.TrainingConfig()).features)

    def image_set(encoded):
        return robustness.ImageSet(encoded, data["reference"], extractor)

    sets = {split: image_set(data[split][3]) for split in ("valid", "test")}
    shifted = {name: image_set(robustness.shifted(data["test"][3], robustness.SHIFTS[name][2])) for name in SHIFTS}
    pictures = {**robustness.non_ct_pictures(), **robustness.text_pages()}
    ood_sets = {"non_ct": (image_set(list(pictures.values())), list(pictures))}
    result = robustness.run_seed(recipes.TrainingConfig(seed=0), data, leaked, sets, shifted, ood_sets)

    assert result["official_accuracy"] >= OFFICIAL_FLOOR
    assert result["leak_free_accuracy"] >= LEAK_FREE_FLOOR
    assert result["train_seconds"] < TRAINING_BUDGET_SECONDS
    drops = {name: result["official_accuracy"] - shift["accuracy"] for name, shift in result["shifts"].items()}
    assert max(drops.values()) <= SHIFT_DROP_CEILING, drops
    assert result["in_distribution_flagged"] <= IN_DISTRIBUTION_FLAGGED_CEILING
    assert result["ood"]["non_ct"]["flagged"] >= NON_CT_FLAGGED_FLOOR, result["ood"]["non_ct"]["unflagged"]
    assert result["calibration"]["official"]["ece"] <= ECE_CEILING
    assert 0.4 <= result["uncertain_below"] < 0.95  # read off the held-out curve, not stuck at the cap
