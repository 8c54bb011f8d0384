"""The segmentation recipe's parts: windows, measures, the network's shapes, and a short real training run that
learns to outline synthetic nodules."""

import numpy as np
import pytest

from components.segmentation import recipe
from components.segmentation.data import NoduleSlices, consensus
from components.segmentation.unet import UNetConfig, build_unet


def synthetic_slices(count: int, size: int = 64, seed: int = 0, centred: bool = False) -> NoduleSlices:
    """Noisy grey crops, each with one bright disc that 2-4 of four 'readers' outlined (one reader a pixel wider);
    ``centred``: every disc at the crop's centre, as in the LIDC crops."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size]
    images, masks = [], []
    for _ in range(count):
        cy, cx, radius = rng.uniform(16, size - 16, 2).tolist() + [rng.uniform(3, 9)]
        if centred:
            cy = cx = size / 2
        disc = (y - cy) ** 2 + (x - cx) ** 2 <= radius ** 2
        image = rng.normal(40, 12, (size, size)) + 140 * disc
        images.append(np.clip(image, 0, 255).astype(np.uint8))
        readers = [disc, disc, (y - cy) ** 2 + (x - cx) ** 2 <= (radius + 1) ** 2, np.zeros_like(disc)]
        masks.append(np.stack(readers))
    rows = np.arange(count)
    patients = np.array([f"P{i // 3}" for i in rows])
    return NoduleSlices(images=np.stack(images), masks=np.stack(masks), split=np.array(["train"] * count),
                        patient_id=patients, nodule=patients, pair_id=np.array([f"S{i}" for i in rows]),
                        is_center_slice=np.ones(count, bool))


def test_consensus_is_two_of_four_readers():
    masks = np.zeros((1, 4, 2, 3), bool)
    masks[0, 0, 0, :] = masks[0, 1, 0, :2] = masks[0, 2, 1, 0] = True
    assert consensus(masks)[0].tolist() == [[True, True, False], [False, False, False]]


def test_windows_hold_the_nodule_or_nothing():
    slices = synthetic_slices(40)
    rng = np.random.default_rng(1)
    inputs, targets = recipe.sample_windows(slices.images / 255.0, slices.consensus, rng, window=32,
                                            negative_fraction=0.5)
    assert inputs.shape == targets.shape == (40, 32, 32, 1) and inputs.dtype == np.float32
    assert inputs.min() >= 0.0 and inputs.max() <= 1.0
    holding = targets.reshape(40, -1).any(axis=1)
    assert 8 <= holding.sum() <= 32  # about half are negatives; the positives hold their nodule
    assert np.allclose(inputs[~holding].mean(), 40 / 255, atol=0.05)  # negatives are background only
    with pytest.raises(ValueError, match="multiple of 8"):
        recipe.SegmentationConfig(window=60)


def test_negative_windows_hold_no_nodule_even_when_every_crop_is_centred_on_one():
    # A 48 px window of a 64 px crop always covers the centre: a negative is built from nodule-free quarters.
    slices = synthetic_slices(16, centred=True)
    inputs, targets = recipe.sample_windows(slices.images / 255.0, slices.consensus, np.random.default_rng(2),
                                            window=48, negative_fraction=1.0)
    assert inputs.shape == (16, 48, 48, 1) and not targets.any()
    assert inputs.max() < 140 / 255  # no disc pixel (180) in any of them, only noise about 40
    inputs, targets = recipe.sample_windows(slices.images / 255.0, slices.consensus, np.random.default_rng(2),
                                            window=48, negative_fraction=0.0)
    assert targets.reshape(16, -1).any(axis=1).all()


def test_dice_iou_and_the_patient_mean():
    target = np.zeros((3, 4, 4), bool)
    target[:2, :2, :2] = True
    predicted = target.copy()
    predicted[1, :2, :] = True  # 4 of 8 predicted pixels right: Dice 2*4/(8+4)
    np.testing.assert_allclose(recipe.dice(predicted, target), [1.0, 2 / 3, 1.0])
    np.testing.assert_allclose(recipe.iou(predicted, target), [1.0, 0.5, 1.0])
    assert recipe.patient_mean(np.array([1.0, 0.0, 0.5]), np.array(["a", "a", "b"])) == pytest.approx(0.5)


def test_the_network_is_fully_convolutional_at_the_input_size():
    model = build_unet(UNetConfig(weights="none"))
    for height, width in ((64, 64), (96, 136)):
        assert model(np.zeros((1, height, width, 1), np.float32)).shape == (1, height, width, 1)
    frozen = {layer.name for layer in model.get_layer("encoder").layers if not layer.trainable and layer.weights}
    assert frozen == {"block1_conv1", "block1_conv2", "block2_conv1", "block2_conv2"}


@pytest.mark.slow  # trains the U-Net for a minute
def test_a_short_training_run_learns_to_outline_nodules():
    train, held_out = synthetic_slices(96, seed=0), synthetic_slices(24, seed=1)
    config = recipe.SegmentationConfig(epochs=6, window=48, batch_size=8, precision="float32")
    seen = []
    trained = recipe.train(config, train.images / 255.0, train.consensus,
                           progress=lambda epoch, epochs, loss: seen.append((epoch, loss)))
    assert [epoch for epoch, _ in seen] == list(range(1, 7)) and seen[-1][1] < seen[0][1]
    probability = recipe.probabilities(trained.model, held_out.images / 255.0)
    assert probability.shape == held_out.images.shape
    threshold = recipe.choose_threshold(probability, held_out.consensus, held_out.patient_id)
    assert recipe.patient_mean(recipe.dice(probability >= threshold, held_out.consensus),
                               held_out.patient_id) >= 0.7


def test_a_time_budget_shortens_the_run_and_its_rate_schedule():
    import tensorflow as tf

    slices = synthetic_slices(24)
    config = recipe.SegmentationConfig(epochs=50, window=32, batch_size=4, precision="float32", time_budget_s=1.0,
                                       unet=UNetConfig(weights="none"))
    epochs_said = []
    trained = recipe.train(config, slices.images / 255.0, slices.consensus,
                           progress=lambda epoch, epochs, loss: epochs_said.append(epochs))
    # The speed is timed over the first 25 steps; a budget already spent stops the run right there.
    assert trained.planned_steps == 300 and trained.steps == 25
    assert len(trained.losses) == 5 and epochs_said == [50] * 4 + [5]  # the plan, until the speed is known
    assert recipe.affordable_steps(100.0, 10.0, 0.5, done=25) == 25 + 162  # 90 % of the 90 s left
    schedule = recipe._CosineDecay(1e-3, tf.Variable(100.0), alpha=0.02)
    assert [round(float(schedule(step)), 7) for step in (0, 50, 100, 150)] == [1e-3, 5.1e-4, 2e-5, 2e-5]


def test_the_benchmarks_shift_moves_content_and_readers_are_scored_against_the_others():
    from benchmarks import segmentation as bench

    image = np.zeros((1, 8, 8), np.uint8)
    image[0, 3, 4] = 9
    moved = bench.shifted(image, (2, -3))
    assert moved.shape == image.shape and moved[0, 5, 1] == 9 and moved.sum() == 9
    masks = np.zeros((2, 4, 4, 4), bool)
    masks[0, :3, 1:3, 1:3] = True            # three readers agree exactly: each scores 1 against the other two
    masks[1, :2, 0, 0] = True                # two readers only: not scored
    agreement, patients = bench.reader_agreement(masks, np.array(["A", "B"]))
    assert agreement == 1.0 and patients == 1
    masks[0, 2, 0, 0] = True                 # one reader outlines a pixel more: 2 * 4 / (5 + 4) for that reader
    agreement, _ = bench.reader_agreement(masks, np.array(["A", "B"]))
    assert agreement == pytest.approx((1 + 1 + 8 / 9) / 3)


def test_the_benchmark_maps_the_grad_cam_peak_to_input_pixels_and_counts_detections():
    from types import SimpleNamespace

    from benchmarks import segmentation as bench

    heat = np.zeros((4, 4))
    heat[0, 3] = 1.0  # the top-right cell of a 40-pixel square whose top-left is at (10, 20)
    upright = SimpleNamespace(heatmap=heat, crop_box=(10.0, 20.0, 50.0, 60.0), crop_angle=0.0)
    assert bench.gradcam_peak(upright) == pytest.approx((15.0, 55.0))
    turned = SimpleNamespace(heatmap=heat, crop_box=(10.0, 20.0, 50.0, 60.0), crop_angle=90.0)
    assert bench.gradcam_peak(turned) == pytest.approx((45.0, 55.0))  # turned clockwise: top-right -> bottom-right
    mask = np.zeros((20, 20), bool)
    mask[2:5, 2:5] = mask[12:15, 12:15] = True
    found = np.zeros((20, 20), int)
    found[3, 3] = found[3, 4] = 1  # overlaps the first nodule
    found[17, 2] = 2               # overlaps none
    assert bench.detection(found, mask) == (1, 2, 1)


def test_the_candidate_benchmark_counts_found_nodules_and_false_lesions_at_each_cut():
    from benchmarks import segmentation_candidates as bench

    probability = np.zeros((32, 32), np.float32)
    probability[4:8, 4:8] = 0.95     # on the nodule
    probability[20:23, 20:30] = 0.6  # a vessel: elongated, less sure
    mask = np.zeros((32, 32), bool)
    mask[5:9, 5:9] = True
    found = bench.candidates(probability, probability, threshold=0.5)
    assert [int(region.sum()) for region, _ in found] == [16, 30]
    assert found[0][1][1] == pytest.approx(1.0, abs=0.01) and found[1][1][1] < 0.5  # elongation: 1 round, < 1 long
    points, missed = bench.evaluate([found], [mask])
    assert [(p["cut"], p["sensitivity"], p["false_per_image"]) for p in points] == \
        [(0.0, 1.0, 1.0), (0.9, 1.0, 0.0), (0.99, 0.0, 0.0)]
    assert [m.tolist() for m in missed] == [[False]]


def test_whole_slice_windows_lie_on_the_nodule_or_on_tissue_never_on_the_flat_background():
    rng = np.random.default_rng(0)
    images = np.full((2, 128, 128), 0.2, np.float32)  # a lung mask's flat background
    images[:, 30:100, 20:110] = rng.random((2, 70, 90))  # tissue
    targets = np.zeros((2, 128, 128), bool)
    targets[0, 60:66, 70:76] = True  # slice 0's nodule; slice 1 has none
    slices = recipe.WholeSlices(images, targets)
    inputs, outputs = recipe.context_windows(slices, rng, window=32, count=40)
    assert inputs.shape == outputs.shape == (40, 32, 32) and inputs.dtype == np.float32
    assert all(not np.all(window == np.float32(0.2)) for window in inputs)  # centred on tissue
    with_nodule = [index for index in range(0, 40, 2) if outputs[index].any()]
    assert len(with_nodule) >= 5 and all(outputs[index].sum() == 36 for index in with_nodule)  # whole, 8 px inside
    with pytest.raises(ValueError, match="must match"):
        recipe.WholeSlices(images, targets[:, :64])


def test_whole_slice_folds_split_patients_not_slices_and_balance_the_slices():
    from benchmarks import segmentation_candidates as bench

    patient_of = ["0002"] * 28 + ["0003"] * 24 + ["0007"] * 24 + ["0001"] * 8 + ["0004"] * 4
    folds = bench.patient_folds(patient_of, 2)
    assert sorted(p for fold in folds for p in fold) == ["0001", "0002", "0003", "0004", "0007"]
    counts = sorted(sum(patient_of.count(p) for p in fold) for fold in folds)
    assert counts == [40, 48]  # the most even split there is
    with pytest.raises(ValueError):
        bench.patient_folds(patient_of, 6)
