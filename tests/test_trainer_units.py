import h5py
import numpy as np
import pytest
import tensorflow as tf

from components import features
from components.trainer import recipes, vgg16


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
    assert recipes.fit_temperature(true_logits * 3.0, labels) == pytest.approx(3.0, rel=0.1)


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
    nets = recipes.build_networks(recipes.TrainingConfig(ensemble_size=2))
    pixels = np.random.default_rng(1).normal(size=(2, features.IMAGE_SIZE, features.IMAGE_SIZE, 3)) * 50
    activations = nets.trunk(pixels, training=False).numpy()
    assert activations.shape[1:] == (features.IMAGE_SIZE // 8, features.IMAGE_SIZE // 8, 512)  # block4_conv3
    pooled = nets.features(pixels, training=False).numpy()
    np.testing.assert_allclose(pooled, np.concatenate([activations.mean((1, 2)), activations.max((1, 2))], 1),
                               rtol=1e-4, atol=1e-3)
    first, second = (head(pooled, training=False).numpy() for head in nets.heads)
    assert not np.allclose(first, second)  # heads start from different initialisations
    expected = (first + second) / 2
    np.testing.assert_allclose(nets.classifier(pixels, training=False).numpy(), expected, rtol=1e-4, atol=1e-4)
    with tf.GradientTape() as tape:
        gradcam_activations, logits = nets.gradcam_model(pixels, training=False)
        top_logit = tf.reduce_max(logits, axis=-1)
    np.testing.assert_allclose(gradcam_activations.numpy(), activations, rtol=1e-5)
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
    assert recipes.TrainingConfig.from_dict({"recipe": "full"}).ensemble_size == 1
    with pytest.raises(ValueError, match="ensemble_size must be 1"):
        recipes.TrainingConfig.from_dict({"recipe": "full", "ensemble_size": 3})


def test_other_feature_layers_build_and_name_the_gradcam_layer():
    nets = recipes.build_networks(recipes.TrainingConfig(feature_layer="block5_conv3", ensemble_size=1))
    assert nets.features.output.shape[-1] == 2 * 512
    assert recipes.Classifier(nets, 1.0).gradcam_layer == "block5_conv3"


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_cpu_recipe_trains_every_head_on_frozen_features_and_exports_float32(precision):
    rng = np.random.default_rng(0)
    pixels = (rng.normal(size=(12, features.IMAGE_SIZE, features.IMAGE_SIZE, 3)) * 50).astype(np.float32)
    labels = np.arange(12) % features.NUM_CLASSES
    config = recipes.TrainingConfig(ensemble_size=2, augmented_views=2, head_epochs=2, batch_size=4,
                                    precision=precision)
    steps = []
    classifier = recipes.train(config, (pixels, labels), (pixels[:8], labels[:8]), progress=steps.append)
    assert steps == ["features view 1/2", "features view 2/2", "head 1/2 trained", "head 2/2 trained"]
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
                                               "batch_size": 4})
    steps = []
    classifier = recipes.train(config, (pixels, labels), (pixels[:4], labels[:4]), progress=steps.append)
    assert steps == ["head trained", "fine-tuned"]
    pretrained = vgg16.build_conv_base("hed")
    for name in ("block1_conv1", "block4_conv3"):
        assert not np.allclose(classifier.networks.trunk.get_layer(name).get_weights()[0],
                               pretrained.get_layer(name).get_weights()[0])
