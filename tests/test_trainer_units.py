import dataclasses

import h5py
import numpy as np
import pytest
import tensorflow as tf

from components import features
from components.trainer import calibration, ood, recipes, vgg16

pytestmark = pytest.mark.slow  # real VGG16 graphs and training: minutes on 2 cores


def test_hed_weights_fill_all_13_vgg16_conv_layers():
    model = vgg16.build_conv_base("hed")
    with h5py.File(vgg16.hed_weights_path(), "r") as weights:
        np.testing.assert_array_equal(model.get_layer("block1_conv1").get_weights()[0],
                                      weights["block1/layers/conv2d/vars/0"][()])
        np.testing.assert_array_equal(model.get_layer("block5_conv3").get_weights()[1],
                                      weights["block5/layers/conv2d_2/vars/1"][()])
    assert sum(1 for layer in model.layers if layer.name.endswith(tuple(f"conv{i}" for i in (1, 2, 3)))) == 13


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(vgg16.WeightsUnavailable, match="not found"):
        vgg16.build_conv_base(str(tmp_path / "nope.h5"))


def test_temperature_scaling_recovers_the_true_temperature():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(4000, features.NUM_CLASSES)) * 2.0
    probabilities = np.exp(true_logits) / np.exp(true_logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(features.NUM_CLASSES, p=p) for p in probabilities])
    # The model is overconfident by a factor of 3: the fitted temperature should undo it.
    assert calibration.fit_temperature(true_logits * 3.0, labels) == pytest.approx(3.0, rel=0.1)
    # Already calibrated logits stay as they are.
    fitted = calibration.fit(true_logits, labels)
    assert fitted.fitted_on == 4000
    np.testing.assert_allclose(fitted.probabilities(true_logits), probabilities, atol=0.02)


def test_calibrated_probabilities_sum_to_one_keep_the_class_and_match_in_tensorflow():
    logits = (np.random.default_rng(3).normal(size=(300, features.NUM_CLASSES)) * 3.0).astype(np.float32)
    calibrator = calibration.Calibrator(temperature=1.7)
    probabilities = calibrator.probabilities(logits)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-6)
    assert (probabilities.argmax(1) == logits.argmax(1)).all()
    assert (probabilities.max(1) < calibration.Calibrator().probabilities(logits).max(1)).all()  # T > 1 softens
    np.testing.assert_allclose(calibrator.probabilities_tf(tf.constant(logits)).numpy(), probabilities, atol=1e-5)


def test_bag_scores_each_training_image_with_heads_that_never_saw_it():
    # Random labels on wide random features: heads memorise what they saw (in-sample accuracy near 1) and know
    # nothing about the rest, so out-of-fold accuracy near chance shows no image was scored by its own heads.
    rng = np.random.default_rng(0)
    pooled = rng.normal(size=(160, 1, 512)).astype(np.float32)
    labels = rng.integers(0, features.NUM_CLASSES, 160)
    config = recipes.TrainingConfig(ensemble_size=1, bagging_folds=4, head_epochs=60, dropout=0.0,
                                    label_smoothing=0.0)
    heads = [recipes._head(config, index) for index in range(config.head_count)]
    out_of_fold = recipes.fit_bag(config, heads, pooled, labels)
    in_sample = recipes._head_logits(heads, pooled[:, 0]).argmax(1)
    assert out_of_fold.shape == (160, features.NUM_CLASSES) and np.abs(out_of_fold).sum(1).min() > 0
    assert (in_sample == labels).mean() > 0.7  # the bag: every image was seen by 3 of its 4 heads
    assert (out_of_fold.argmax(1) == labels).mean() < 0.45
    one_fold = dataclasses.replace(config, bagging_folds=1)
    assert recipes.fit_bag(one_fold, heads[:1], pooled, labels).shape == (0, features.NUM_CLASSES)
    # Three distinct images for four folds: three folds, and the fourth fold's head learns from all of them.
    few = dataclasses.replace(config, head_epochs=1)
    spare = [recipes._head(few, index) for index in range(few.head_count)]
    assert recipes.fit_bag(few, spare, pooled[[0, 1, 2, 0]], labels[[0, 1, 2, 0]]).shape == (4, features.NUM_CLASSES)
    assert all(head.built and np.abs(head.get_layer("norm").moving_mean.numpy()).max() > 0 for head in spare)
    with pytest.raises(ValueError, match="at least 2 distinct"):
        recipes.fit_bag(few, spare, pooled[[5, 5]], labels[[5, 5]])


def test_training_config_rejects_unknown_options_and_recipes():
    with pytest.raises(ValueError, match="unknown training options"):
        recipes.TrainingConfig.from_dict({"epochs": 3})
    with pytest.raises(ValueError, match="recipe"):
        recipes.TrainingConfig.from_dict({"recipe": "tpu"})
    assert recipes.TrainingConfig.from_dict({"seed": 4}).seed == 4


def test_class_weights_balance_the_classes():
    weights = recipes.class_weights(np.array([0, 0, 0, 1, 2, 3]))
    assert weights[0] * 3 == pytest.approx(weights[1] * 1)


def test_networks_read_pooled_feature_layer_activations_and_average_the_heads():
    nets = recipes.build_networks(recipes.TrainingConfig(ensemble_size=2, bagging_folds=1))
    pixels = np.random.default_rng(1).normal(size=(2, features.IMAGE_SIZE, features.IMAGE_SIZE, 3)) * 50
    activations = nets.trunk(pixels, training=False).numpy()
    assert activations.shape[1:] == (features.IMAGE_SIZE // 8, features.IMAGE_SIZE // 8, 512)  # block4_conv3
    pooled = nets.features(pixels, training=False).numpy()
    # Global average and max pooling (what the gate reads: the first global_width values), then per cell of the
    # 2 x 2 grid (rows first: top left, top right, bottom left, bottom right).
    cells = [activations[:, r:r + 14, c:c + 14] for r in (0, 14) for c in (0, 14)]
    expected_pooled = np.concatenate([activations.mean((1, 2)), activations.max((1, 2))]
                                     + [np.stack([cell.mean((1, 2)) for cell in cells], 1).reshape(2, -1)]
                                     + [np.stack([cell.max((1, 2)) for cell in cells], 1).reshape(2, -1)], 1)
    assert nets.global_width == 1024 and pooled.shape == (2, 1024 + 2 * 4 * 512)
    np.testing.assert_allclose(pooled, expected_pooled, rtol=1e-4, atol=1e-3)
    assert recipes.build_networks(recipes.TrainingConfig(ensemble_size=1, bagging_folds=1, grid_pooling=0)) \
        .features.output.shape[-1] == 1024
    first, second = (head(pooled, training=False).numpy() for head in nets.heads)
    assert not np.allclose(first, second)  # heads start from different initialisations
    expected = (first + second) / 2
    np.testing.assert_allclose(nets.classifier(pixels, training=False).numpy(), expected, rtol=1e-4, atol=1e-4)
    with tf.GradientTape() as tape:
        gradcam_activations, gradcam_pooled, logits = nets.gradcam_model(pixels, training=False)
        top_logit = tf.reduce_max(logits, axis=-1)
    np.testing.assert_allclose(gradcam_activations.numpy(), activations, rtol=1e-5)
    np.testing.assert_allclose(gradcam_pooled.numpy(), pooled, rtol=1e-5)
    assert np.abs(tape.gradient(top_logit, gradcam_activations).numpy()).sum() > 0
    np.testing.assert_allclose(logits.numpy(), expected, rtol=1e-4, atol=1e-4)


def test_training_config_validates_layers_views_and_ensembles():
    assert recipes.TrainingConfig.from_dict({"feature_layer": "block5_pool"}).feature_layer == "block5_pool"
    with pytest.raises(ValueError, match="feature_layer"):
        recipes.TrainingConfig.from_dict({"feature_layer": "block6_conv1"})
    with pytest.raises(ValueError, match="augmented_views"):
        recipes.TrainingConfig.from_dict({"augmented_views": 0})
    with pytest.raises(ValueError, match="ensemble_size"):
        recipes.TrainingConfig.from_dict({"ensemble_size": 0})
    with pytest.raises(ValueError, match="bagging_folds"):
        recipes.TrainingConfig.from_dict({"bagging_folds": 0})
    assert recipes.TrainingConfig.from_dict({"ensemble_size": 3, "bagging_folds": 4}).head_count == 12
    assert recipes.TrainingConfig.from_dict({"recipe": "full"}).head_count == 1
    with pytest.raises(ValueError, match="ensemble_size must be 1"):
        recipes.TrainingConfig.from_dict({"recipe": "full", "ensemble_size": 3})


def test_other_feature_layers_build_and_name_the_gradcam_layer():
    nets = recipes.build_networks(recipes.TrainingConfig(feature_layer="block5_conv3", ensemble_size=1,
                                                          bagging_folds=1))
    assert nets.global_width == 2 * 512 and nets.features.output.shape[-1] == 2 * 512 + 2 * 4 * 512
    gate = ood.fit_gate(np.random.default_rng(0).normal(size=(40, 8)), np.arange(40) % 4,
                        np.zeros((0, 8)), features.NUM_CLASSES)
    assert recipes.Classifier(nets, calibration.Calibrator(), gate, 0.6).gradcam_layer == "block5_conv3"


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_cpu_recipe_trains_every_head_on_frozen_features_and_exports_float32(precision):
    rng = np.random.default_rng(0)
    pixels = (rng.normal(size=(12, features.IMAGE_SIZE, features.IMAGE_SIZE, 3)) * 50).astype(np.float32)
    labels = np.arange(12) % features.NUM_CLASSES
    config = recipes.TrainingConfig(ensemble_size=2, bagging_folds=3, augmented_views=2, head_epochs=2, batch_size=4,
                                    precision=precision)
    steps, asked = [], []

    def shifted_views(view):
        asked.append(view)
        return pixels[::-1].copy()

    with pytest.raises(ValueError, match="shifted_views"):
        recipes.train(config, (pixels, labels), (pixels[:8], labels[:8]))
    classifier = recipes.train(config, (pixels, labels), (pixels[:8], labels[:8]), progress=steps.append,
                               shifted_views=shifted_views)
    assert asked == [1]
    assert steps == ["features view 1", "features view 2", "6 heads trained", "calibrated, gate fitted"]
    assert len(classifier.networks.heads) == 6
    assert classifier.calibrator.fitted_on == 12 + 8  # every training image out of fold, and the validation split
    assert classifier.temperature > 0.0 and 0.4 <= classifier.uncertain_below <= 0.95
    assert classifier.gate.threshold > 0 and classifier.gate.whitening.shape == (1024, 1024)
    pretrained = vgg16.build_conv_base("hed").get_layer("block4_conv3").get_weights()[0]
    np.testing.assert_array_equal(classifier.networks.trunk.get_layer("block4_conv3").get_weights()[0], pretrained)
    for head in classifier.networks.heads:
        assert head.get_layer("logits").compute_dtype == "float32"
        moving_mean = head.get_layer("norm").moving_mean.numpy()
        assert np.abs(moving_mean).max() > 0  # starts at 0: only training on the features moves it
    assert classifier.model.get_layer("block4_conv3").compute_dtype == "float32"
    assert classifier.gradcam_layer == "block4_conv3"
    logits = classifier.model(pixels[:2], training=False)
    assert logits.dtype == "float32" and np.isfinite(logits.numpy()).all()


def test_full_recipe_fine_tunes_every_trunk_layer():
    rng = np.random.default_rng(2)
    pixels = (rng.normal(size=(8, features.IMAGE_SIZE, features.IMAGE_SIZE, 3)) * 50).astype(np.float32)
    labels = np.arange(8) % features.NUM_CLASSES
    config = recipes.TrainingConfig.from_dict({"recipe": "full", "head_epochs": 1, "finetune_epochs": 1,
                                               "batch_size": 4, "augmented_views": 2})
    steps = []
    classifier = recipes.train(config, (pixels, labels), (pixels[:4], labels[:4]), progress=steps.append,
                               shifted_views=lambda view: pixels[::-1].copy())
    assert steps == ["head trained", "fine-tuned", "calibrated, gate fitted"]
    pretrained = vgg16.build_conv_base("hed")
    for name in ("block1_conv1", "block4_conv3"):
        assert not np.allclose(classifier.networks.trunk.get_layer(name).get_weights()[0],
                               pretrained.get_layer(name).get_weights()[0])


def test_uncertain_line_is_read_off_the_held_out_risk_coverage_curve():
    # 10 images: the 6 most confident are right, then a wrong one at 0.55, then mixed.
    confidence = np.array([0.99, 0.95, 0.9, 0.85, 0.8, 0.7, 0.55, 0.5, 0.45, 0.4])
    correct = np.array([1, 1, 1, 1, 1, 1, 0, 1, 0, 1], bool)
    probabilities = np.stack([confidence] + [(1 - confidence) / 3] * 3, 1)
    labels = np.where(correct, 0, 1)
    assert calibration.choose_uncertain_below(probabilities, labels, target=1.0) == pytest.approx(0.7)
    assert calibration.choose_uncertain_below(probabilities, labels, target=0.8) == pytest.approx(0.4)  # all: 0.8
    assert calibration.choose_uncertain_below(probabilities[:0], labels[:0], target=0.9) == 0.95  # no held-out data


def test_gate_threshold_holds_back_the_in_distribution_quantile_and_flags_far_points():
    rng = np.random.default_rng(0)
    labels = np.arange(400) % features.NUM_CLASSES
    centres = rng.normal(size=(features.NUM_CLASSES, 16)) * 3
    pooled = centres[labels] + rng.normal(size=(400, 16))
    valid = centres[np.arange(40) % 4] + rng.normal(size=(40, 16))
    gate = ood.fit_gate(pooled, labels, valid, features.NUM_CLASSES, quantile=0.95)
    fresh = centres[np.arange(400) % 4] + rng.normal(size=(400, 16))
    flagged = (gate.distances(fresh) > gate.threshold).mean()
    assert 0.0 < flagged < 0.12  # about 5 % of new in-distribution points, not 0 (fitted-set bias) nor many
    far = rng.normal(size=(50, 16)) * 3 + 20
    assert (gate.distances(far) > gate.threshold).all()
    # The TF gate inside the signatures agrees with numpy and reports a reason only when out of domain.
    stats = {"colour_fraction": tf.zeros([2]), "contrast": tf.fill([2], 50.0), "height": tf.fill([2], 512.0),
             "width": tf.fill([2], 512.0), "body_fraction": tf.fill([2], 0.4),
             "enclosed_dark_fraction": tf.fill([2], 0.3)}
    outputs = ood.gate_outputs(gate, tf.constant(np.stack([fresh[0], far[0]]), tf.float32), stats)
    np.testing.assert_allclose(outputs["ood_score"].numpy(),
                               gate.distances(np.stack([fresh[0], far[0]])) / gate.threshold, rtol=1e-4)
    assert outputs["in_domain"].numpy().tolist() == [True, False]
    assert [r.decode() for r in outputs["ood_reason"].numpy()] == ["", ood.REASON_FEATURE_DISTANCE]


def test_input_check_names_the_first_failing_rule():
    def reasons(**overrides):
        stats = {"colour_fraction": 0.0, "contrast": 50.0, "height": 512.0, "width": 512.0, "body_fraction": 0.4,
                 "enclosed_dark_fraction": 0.3}
        stats.update(overrides)
        return ood.input_reason({k: tf.constant([v]) for k, v in stats.items()}).numpy()[0].decode()

    assert reasons() == ""
    assert reasons(colour_fraction=0.3) == ood.REASON_NOT_GREYSCALE
    assert reasons(contrast=1.0, body_fraction=0.0) == ood.REASON_BLANK
    assert reasons(height=40.0) == ood.REASON_TOO_SMALL
    assert reasons(width=2000.0) == ood.REASON_ODD_SHAPE
    assert reasons(body_fraction=0.01) == ood.REASON_NO_BODY
    assert reasons(enclosed_dark_fraction=0.0) == ood.REASON_NO_LUNGS
