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


def test_networks_share_weights_between_views():
    nets = recipes.build_networks(recipes.TrainingConfig(ensemble_size=1))
    pixels = np.random.default_rng(0).normal(size=(2, features.IMAGE_SIZE, features.IMAGE_SIZE, 3)) * 50
    full = nets.classifier(pixels, training=False).numpy()
    split = nets.top(nets.stem(pixels, training=False), training=False).numpy()
    np.testing.assert_allclose(full, split, rtol=1e-4, atol=1e-4)
    (activations,), logits = nets.gradcam_model(pixels, training=False)
    assert activations.shape[1:3] == (features.IMAGE_SIZE // 16, features.IMAGE_SIZE // 16)


def test_ensemble_members_have_their_own_block5_and_the_classifier_averages_their_logits():
    nets = recipes.build_networks(recipes.TrainingConfig(ensemble_size=2))
    first, second = nets.members
    np.testing.assert_array_equal(first.top.get_layer("block5_conv1").get_weights()[0],
                                  second.top.get_layer("member1_block5_conv1").get_weights()[0])
    second.top.get_layer("member1_block5_conv1").set_weights(
        [w * 0.5 for w in second.top.get_layer("member1_block5_conv1").get_weights()])
    assert not np.array_equal(nets.base.get_layer("block5_conv1").get_weights()[0],
                              second.top.get_layer("member1_block5_conv1").get_weights()[0])
    pixels = np.random.default_rng(1).normal(size=(2, features.IMAGE_SIZE, features.IMAGE_SIZE, 3)) * 50
    block4 = nets.stem(pixels, training=False)
    expected = (first.top(block4, training=False) + second.top(block4, training=False)).numpy() / 2
    np.testing.assert_allclose(nets.classifier(pixels, training=False).numpy(), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(nets.top(block4, training=False).numpy(), expected, rtol=1e-4, atol=1e-4)
    with tf.GradientTape() as tape:
        activations, logits = nets.gradcam_model(pixels, training=False)
        top_logit = tf.reduce_max(logits, axis=-1)
    assert [a.shape[1:] for a in activations] == [(features.IMAGE_SIZE // 16, features.IMAGE_SIZE // 16, 512)] * 2
    assert all(g is not None for g in tape.gradient(top_logit, activations))  # Grad-CAM reaches every member
    np.testing.assert_allclose(logits.numpy(), expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="ensemble_size"):
        recipes.TrainingConfig.from_dict({"ensemble_size": 0})
    assert recipes.TrainingConfig.from_dict({"recipe": "full"}).ensemble_size == 1
    with pytest.raises(ValueError, match="ensemble_size must be 1"):
        recipes.TrainingConfig.from_dict({"recipe": "full", "ensemble_size": 3})


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_cpu_recipe_trains_every_member_and_exports_float32(precision):
    rng = np.random.default_rng(0)
    pixels = (rng.normal(size=(12, features.IMAGE_SIZE, features.IMAGE_SIZE, 3)) * 50).astype(np.float32)
    labels = np.arange(12) % features.NUM_CLASSES
    config = recipes.TrainingConfig(ensemble_size=2, augmented_views=1, head_epochs=1, finetune_epochs=1,
                                    batch_size=4, precision=precision)
    steps = []
    classifier = recipes.train(config, (pixels, labels), (pixels[:8], labels[:8]), progress=steps.append)
    assert steps[-1] == "member 2/2: fine-tune epoch 1/1"
    pretrained = vgg16.build_conv_base("hed").get_layer("block5_conv1").get_weights()[0]
    for name in ("block5_conv1", "member1_block5_conv1"):
        layer = classifier.model.get_layer("member" if name == "block5_conv1" else "member_1").get_layer(name)
        assert layer.compute_dtype == "float32"
        assert not np.allclose(layer.get_weights()[0], pretrained)  # the fine-tuned weights reached the export
    probabilities = classifier.model(pixels[:2], training=False)
    assert probabilities.dtype == "float32" and np.isfinite(probabilities.numpy()).all()


def test_weight_average_is_the_mean_of_the_snapshots():
    import numpy as np

    from components.trainer.recipes import WeightAverage

    snapshots = [[np.full((2, 2), v, dtype=np.float32), np.array([v, -v], dtype=np.float32)] for v in (1.0, 2.0, 6.0)]
    average = WeightAverage()
    for weights in snapshots:
        average.add(weights)
    assert average.count == 3
    np.testing.assert_allclose(average.weights[0], np.full((2, 2), 3.0))
    np.testing.assert_allclose(average.weights[1], [3.0, -3.0])
