"""What the segmenter costs on this machine (issue 13): training step time of recipe variants, and the ``segment``
signature's time for a whole 512 x 512 slice, whole and cropped to its content. Its figures explain the
``train_seconds`` and ``segment_ms_p50`` of ``benchmarks/segmentation.py`` across CPUs, and pick the variants worth
a full run on a machine; in-process, no model server.

- ``training``: per variant (SegmentationConfig overrides), seconds per optimiser step (a batch of windows, after
  warm-up; the data does not change the cost) and the steps the CPU recipe's time budget affords at that speed.
- Per variant, the network alone on a whole 512 x 512 slice and on the median content box of the first whole slices
  of ../lidc-idri-nodule-slices (``export.content_box``: the lungs and a margin), and that box's share of the slice.
- With ``--weights`` (the first variant's), the ``segment`` signature's median time on those slices (a) as they are
  and (b) with one corner pixel changed, so that the whole slice is segmented, and its lesion step alone
  (``lesions.measure`` on the map). Only on a trained model: the lesion step's cost depends on the map, and an
  untrained decoder's map is speckle.

Usage: python -m benchmarks.segmentation_speed --data ../shared/data/lung-seg [--variants '[{}, {...}]']
       [--weights model.h5] -> benchmarks/results/segmentation_speed.json
"""

import argparse
import itertools
import json
import os
import platform
import statistics
import time

import numpy as np
import tensorflow as tf
import tf_keras

from benchmarks import write_result
from benchmarks.segmentation import RESULTS_DIR, full_slices, png
from components.segmentation import export, intensity, lesions, recipe
from components.segmentation.unet import ENCODER_STRIDE, build_unet
from components.trainer.recipes import keras_policy
from radassist.contract import Output

DEFAULT_VARIANTS = [{}, {"unet": {"decoder_widths": [128, 64, 32, 16]}},
                    {"unet": {"decoder_widths": [128, 64, 32, 16], "train_from_block": 4}},
                    {"window": 64, "unet": {"decoder_widths": [128, 64, 32, 16]}}]


def step_seconds(model: tf_keras.Model, config: recipe.SegmentationConfig, steps: int, seed: int = 0) -> float:
    """Median seconds of one optimiser step of ``config``'s loss on a batch of random windows."""
    rng = np.random.default_rng(seed)
    step = recipe.training_step(model, tf_keras.optimizers.Adam(config.learning_rate))
    shape = (config.batch_size, config.window, config.window, 1)
    inputs = tf.constant(rng.random(shape, np.float32))
    targets = tf.constant((rng.random(shape) > 0.9).astype(np.float32))

    step(inputs, targets).numpy()  # tracing; milliseconds() warms once more (first-touch allocations)
    return milliseconds(lambda: step(inputs, targets).numpy(), steps) / 1000


def milliseconds(call, repeats: int) -> float:
    call()  # warm
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def segment_timings(model: tf_keras.Model, slices: list[np.ndarray], repeats: int) -> dict:
    """The ``segment`` signature's median ms per slice, as it is (cropped to its content) and segmented whole."""
    segment = tf.function(export.build_segment(model, threshold=0.5),
                          input_signature=[tf.TensorSpec([None], tf.string)])
    measure = tf.function(lambda chart: lesions.measure(chart, 0.5)["count"])
    cropped, whole, lesion_step, counts = [], [], [], []
    for pixels in slices:
        changed = np.array(pixels, copy=True)
        changed[0, 0] = changed.max()  # the corners no longer agree: no flat border to skip
        encoded, encoded_whole = tf.constant([png(pixels)]), tf.constant([png(changed)])
        cropped.append(milliseconds(lambda encoded=encoded: segment(encoded), repeats))
        whole.append(milliseconds(lambda encoded=encoded_whole: segment(encoded), repeats))
        chart = segment(encoded)[Output.PROBABILITY_MAP][0]
        lesion_step.append(milliseconds(lambda chart=chart: measure(chart).numpy(), repeats))
        counts.append(int(measure(chart)))
    return {"segment_ms_p50_content_box": statistics.median(cropped), "segment_ms_p50_whole": statistics.median(whole),
            "lesions_ms_p50": statistics.median(lesion_step), "lesions_per_slice_median": float(np.median(counts))}


def network_timings(model: tf_keras.Model, slices: list[np.ndarray], repeats: int) -> dict:
    """The network alone on a whole slice and on the median content box (padded to the encoder's stride), and the
    share of the slice that box is."""
    network = tf.function(lambda batch: model(batch, training=False), reduce_retracing=True)
    boxes = []
    for pixels in slices:
        box, _ = export.content_box(intensity.canonical(intensity.decode_grey(tf.constant(png(pixels)))))
        y0, x0, y1, x1 = box.numpy()
        boxes.append(tuple(-(-side // ENCODER_STRIDE) * ENCODER_STRIDE for side in (y1 - y0, x1 - x0)))
    height, width = (int(np.median([box[axis] for box in boxes])) // ENCODER_STRIDE * ENCODER_STRIDE
                     for axis in (0, 1))
    whole, cropped = tf.zeros((1, *slices[0].shape, 1)), tf.zeros((1, height, width, 1))
    return {"network_ms_p50_whole": milliseconds(lambda: network(whole).numpy(), repeats),
            "network_ms_p50_content_box": milliseconds(lambda: network(cropped).numpy(), repeats),
            "content_box_area_share_median": float(np.median([h * w / slices[0].size for h, w in boxes]))}


def main() -> None:
    parser = argparse.ArgumentParser(description="training and segment costs of the segmenter on this machine")
    parser.add_argument("--data", default="../shared/data/lung-seg")
    parser.add_argument("--variants", default=json.dumps(DEFAULT_VARIANTS),
                        help="JSON list of SegmentationConfig overrides; {} is the CPU recipe")
    parser.add_argument("--weights", help="weights of the first variant (a trained model's maps for the lesions)")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default=os.path.join(RESULTS_DIR, "segmentation_speed.json"))
    args = parser.parse_args()
    started = time.time()
    slices = [image for _, image, _ in itertools.islice(full_slices(args.data), args.slices)]
    rows = []
    for index, overrides in enumerate(json.loads(args.variants)):
        config = recipe.SegmentationConfig.from_dict(overrides)
        with keras_policy(recipe.dtype_policy(config)):
            model = build_unet(config.unet)
        if index == 0 and args.weights:
            model.load_weights(args.weights)
        seconds = step_seconds(model, config, args.steps)
        budget = config.time_budget_s
        row = {"variant": overrides, "dtype_policy": recipe.dtype_policy(config), "step_seconds": round(seconds, 3),
               "epochs": config.epochs,
               "budget_steps": (recipe.affordable_steps(budget, 0.0, seconds, 0) if budget else None),
               **network_timings(model, slices, args.repeats)}
        if index == 0 and args.weights:  # the lesion step's cost depends on the map: time it on a trained one only
            row.update(segment_timings(model, slices, args.repeats))
        rows.append(row)
        line = (f"{json.dumps(overrides):<75} step {row['step_seconds']:.2f} s ({row['budget_steps']} in the budget)"
                f"  network {row['network_ms_p50_whole']:.0f} ms whole, {row['network_ms_p50_content_box']:.0f} ms "
                "content box")
        if "segment_ms_p50_whole" in row:
            line += (f"; segment {row['segment_ms_p50_content_box']:.0f} ms, whole {row['segment_ms_p50_whole']:.0f}, "
                     f"lesions {row['lesions_ms_p50']:.0f}")
        print(line, flush=True)
    write_result({"variants": rows, "weights": args.weights,
                  "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                              "processor": platform.processor()},
                  "wall_seconds": round(time.time() - started, 1)}, args.output)


if __name__ == "__main__":
    main()
