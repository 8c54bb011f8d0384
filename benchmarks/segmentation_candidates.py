"""Whole-slice false lesions against found nodules (issue 13), in-process: the segmentation recipe trained on the
crops (or weights from an earlier run), then the operating points a lesion rule could choose on the 108 whole
slices. Exploration for the next recipe, not the served figures (those are ``benchmarks/segmentation.py``'s).

- ``test_patient_dice_mean`` at the threshold of best validation Dice, as the Trainer chooses it.
- ``max_probability_rule``: a lesion kept only if its highest pixel probability reaches a cut (sensitivity and false
  lesions per whole slice at each cut, and on the validation crops, where a rule would be chosen).
- ``candidate_score``: a logistic score over each lesion's log area, elongation, mean and max probability, mean
  intensity, the intensity of a 3 px ring around it, their difference and the share of the ring above half the
  threshold, fitted on the validation crops' lesions (overlapping the consensus or not), applied to the whole slices.
- ``missed_by_patient``: the whole-slice nodules no lesion overlaps, per patient.
- ``--whole-slice-folds K``: the experiment of training on whole slices too (recipe.WholeSlices: a share of each
  batch's windows from them). The slices' patients fall into K folds; each fold's model trains on the crops and on
  the other folds' whole slices and is measured on its own fold's, so every whole-slice figure is on patients its
  model never saw (the crops' test patients are none of them). ``runs`` holds each model's record; no candidate
  score (it would need a model per fold).

Usage: python -m benchmarks.segmentation_candidates --data ../shared/data/lung-seg [--training-json '{...}']
       [--weights model.h5 | --whole-slice-folds 2] -> benchmarks/results/segmentation_candidates.json
"""

import argparse
import json
import os
import time

import numpy as np
import tensorflow as tf
from scipy import ndimage
from sklearn.linear_model import LogisticRegression

from benchmarks import write_result
from benchmarks.segmentation import EIGHT_CONNECTED, RESULTS_DIR, full_slices, lesion_labels, png
from components.segmentation import intensity, recipe
from components.segmentation.data import load_crops
from components.segmentation.unet import build_unet
from components.trainer.recipes import keras_policy

PROBABILITY_CUTS = (0.0, 0.9, 0.99)
SCORE_CUTS = (0.0, 0.3, 0.5, 0.7, 0.8)
MAX_PROBABILITY = 2  # its place in a lesion's features


def canonical_slice(image: np.ndarray) -> np.ndarray:
    """A whole slice as the served model sees it: exported as an 8-bit PNG, decoded and scaled by the signature's
    own intensity functions."""
    return intensity.canonical(intensity.decode_grey(tf.constant(png(image)))).numpy()[..., 0]


def candidates(probability: np.ndarray, grey: np.ndarray, threshold: float) -> list[tuple[np.ndarray, list[float]]]:
    """Each lesion (as the served ones: ``lesion_labels`` at the threshold) as (its pixels, its features)."""
    labels = lesion_labels(probability >= threshold)
    found = []
    for label in np.unique(labels[labels > 0]):
        region = labels == label
        spread = np.sort(np.linalg.eigvalsh(np.cov(np.argwhere(region).T) + 1e-3 * np.eye(2)))
        ring = ndimage.binary_dilation(region, EIGHT_CONNECTED, iterations=3) & ~region
        inside = probability[region]
        found.append((region, [np.log(region.sum()), float(np.sqrt(spread[0] / spread[1])), float(inside.max()),
                               float(inside.mean()), float(grey[region].mean()), float(grey[ring].mean()),
                               float(grey[region].mean() - grey[ring].mean()),
                               float((probability[ring] >= threshold / 2).mean())]))
    return found


def operating_points(scored: list[tuple[list[float], list[bool]]], nodules: list[list[float]], slices: int,
                     cuts: tuple[float, ...]) -> list[dict]:
    """Sensitivity (nodules with a kept lesion on them) and false lesions per slice at each cut of a lesion score.
    ``scored``: per slice, (scores, overlaps a nodule); ``nodules``: per nodule, the scores of the lesions on it."""
    points = []
    for cut in cuts:
        false = sum(1 for scores, hits in scored for score, hit in zip(scores, hits, strict=True)
                    if score >= cut and not hit)
        found = sum(1 for on_nodule in nodules if any(score >= cut for score in on_nodule))
        points.append({"cut": cut, "sensitivity": found / max(len(nodules), 1),
                       "false_per_image": false / max(slices, 1)})
    return points


def evaluate(found_per_image: list[list[tuple[np.ndarray, list[float]]]], masks: list[np.ndarray],
             score=None) -> tuple[list[dict], list[np.ndarray]]:
    """Operating points over images, given each image's ``candidates`` (lesion score = max probability, or
    ``score(features)``), and the nodules no lesion overlaps, as a bool per nodule, per image."""
    scored, nodules, missed = [], [], []
    for found, mask in zip(found_per_image, masks, strict=True):
        values = [score(features) if score else features[MAX_PROBABILITY] for _, features in found]
        scored.append((values, [bool(mask[region].any()) for region, _ in found]))
        parts, count = ndimage.label(mask, structure=EIGHT_CONNECTED)
        on = [[value for (region, _), value in zip(found, values, strict=True) if region[parts == part].any()]
              for part in range(1, count + 1)]
        nodules.extend(on)
        missed.append(np.array([not hits for hits in on], bool))
    cuts = SCORE_CUTS if score else PROBABILITY_CUTS
    return operating_points(scored, nodules, len(found_per_image), cuts), missed


def patient_folds(patient_of: list[str], count: int) -> list[set[str]]:
    """``count`` sets of patients with about as many whole slices each (largest patients first, each to the fold
    with fewest slices so far)."""
    if count < 2:
        raise ValueError(f"--whole-slice-folds needs at least 2 folds, not {count}")
    slices = {patient: patient_of.count(patient) for patient in set(patient_of)}
    if count > len(slices):
        raise ValueError(f"{count} folds of {len(slices)} patients")
    folds: list[set[str]] = [set() for _ in range(count)]
    for patient in sorted(slices, key=lambda patient: (-slices[patient], patient)):
        min(folds, key=lambda fold: sum(slices[p] for p in fold)).add(patient)
    return folds


def fit(config: recipe.SegmentationConfig, images: np.ndarray, targets: np.ndarray,
        whole_slices: recipe.WholeSlices | None, weights: str | None) -> tuple:
    """(model, its training record): trained here, or ``weights`` of an earlier run of the same config."""
    if weights:
        with keras_policy(recipe.dtype_policy(config)):
            model = build_unet(config.unet)
        model.load_weights(weights)
        return model, {"weights": weights}
    trained = recipe.train(config, images, targets, whole_slices=whole_slices,
                           progress=lambda epoch, epochs, loss: print(f"epoch {epoch}/{epochs} loss {loss:.3f}",
                                                                      flush=True))
    return trained.model, {"train_seconds": round(trained.train_seconds, 1), "train_steps": trained.steps,
                           "planned_train_steps": trained.planned_steps}


def main() -> None:
    parser = argparse.ArgumentParser(description="whole-slice lesion rules of the segmentation recipe (issue 13)")
    parser.add_argument("--data", default="../shared/data/lung-seg")
    parser.add_argument("--training-json", default='{"negative_fraction": 0.3, "time_budget_s": null}')
    parser.add_argument("--weights", help="weights of an earlier run of the same --training-json (skips training)")
    parser.add_argument("--whole-slice-folds", type=int, default=0,
                        help="K >= 2: train K models, each also on windows of the whole slices of the patients "
                             "outside its fold, and measure each on its fold's whole slices")
    parser.add_argument("--output", default=os.path.join(RESULTS_DIR, "segmentation_candidates.json"))
    args = parser.parse_args()
    if args.weights and args.whole_slice_folds:
        parser.error("--whole-slice-folds trains a model per fold: it takes no --weights")
    started = time.time()
    config = recipe.SegmentationConfig.from_dict(json.loads(args.training_json))
    crops = load_crops(os.path.join(args.data, "lidc-idri-nodule-crops128"))
    train, valid, test = (crops.of_split(name) for name in ("train", "val", "test"))
    names, greys, masks = [], [], []
    for name, image, mask in full_slices(args.data):
        names.append(name)
        greys.append(canonical_slice(image))
        masks.append(mask)
    patient_of = [name[:4] for name in names]
    folds = patient_folds(patient_of, args.whole_slice_folds) if args.whole_slice_folds else [set(patient_of)]
    runs, slice_found, valid_found = [], [None] * len(names), []
    for held_out in folds:
        trained_on = [index for index, patient in enumerate(patient_of) if patient not in held_out]
        whole_slices = (recipe.WholeSlices(np.stack([greys[i] for i in trained_on]),
                                           np.stack([masks[i] for i in trained_on])) if trained_on else None)
        model, run = fit(config, train.images / 255.0, train.consensus, whole_slices, args.weights)
        valid_map = recipe.probabilities(model, valid.images / 255.0)
        threshold = recipe.choose_threshold(valid_map, valid.consensus, valid.patient_id)
        test_map = recipe.probabilities(model, test.images / 255.0)
        for index, patient in enumerate(patient_of):
            if patient in held_out:
                slice_found[index] = candidates(recipe.probabilities(model, greys[index][None], batch_size=1)[0],
                                                greys[index], threshold)
        if not args.whole_slice_folds:
            valid_found = [candidates(probability, grey, threshold)
                           for probability, grey in zip(valid_map, valid.images / 255.0, strict=True)]
        runs.append({**run, "whole_slices_held_out": sorted(f"LIDC-IDRI-{p}" for p in held_out),
                     "whole_slices_trained_on": len(trained_on), "lesion_threshold": threshold,
                     "test_patient_dice_mean": recipe.patient_mean(recipe.dice(test_map >= threshold, test.consensus),
                                                                   test.patient_id)})
        print(f"threshold {threshold}, test Dice {runs[-1]['test_patient_dice_mean']:.3f}", flush=True)
    by_probability, missed = evaluate(slice_found, masks)
    result = {"training": config.to_dict(), "weights": args.weights, "runs": runs,
              "test_patient_dice_mean": float(np.mean([run["test_patient_dice_mean"] for run in runs])),
              "max_probability_rule": {"whole_slices": by_probability}}
    by_score = []
    if valid_found:  # one model: its lesions on the validation crops, and a score fitted on them
        result["max_probability_rule"]["validation_crops"], _ = evaluate(valid_found, list(valid.consensus))
        features = [values for found in valid_found for _, values in found]
        labels = [bool(mask[region].any()) for found, mask in zip(valid_found, valid.consensus, strict=True)
                  for region, _ in found]
        model_score = LogisticRegression(max_iter=2000).fit(np.array(features), np.array(labels))
        by_score, _ = evaluate(slice_found, masks,
                               score=lambda values: float(model_score.predict_proba([values])[0, 1]))
        result["candidate_score"] = {"fitted_on": f"{len(labels)} lesions of the validation crops ({sum(labels)} on "
                                                  "the consensus)", "whole_slices": by_score}
    result["missed_by_patient"] = {f"LIDC-IDRI-{patient}": {
        "nodules": int(sum(len(m) for p, m in zip(patient_of, missed, strict=True) if p == patient)),
        "missed": int(sum(m.sum() for p, m in zip(patient_of, missed, strict=True) if p == patient))}
        for patient in sorted(set(patient_of))}
    result["wall_seconds"] = round(time.time() - started, 1)
    for title, points in (("max probability", by_probability), ("candidate score", by_score)):
        for point in points:
            print(f"{title:<16} >= {point['cut']:<5} sensitivity {point['sensitivity']:.3f}  "
                  f"false lesions per slice {point['false_per_image']:.2f}")
    print(result["missed_by_patient"])
    write_result(result, args.output)


if __name__ == "__main__":
    main()
