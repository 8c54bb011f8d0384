"""TFMA over a window's doctor-labelled calls: how right the served model was on the images that doctors have read.

A window's logged call is labelled when the portal's feedback export (components/feedback.py) holds a doctor's
reading of that very image (they join on the image's sha256) and the reading is one of the answering model
version's classes ("not assessable" labels nothing). TFMA then evaluates the logged probabilities against those
labels, model-agnostic (the predictions are already in the examples, no model is run), overall and sliced by
window, model version, source (doctor or patient upload), scan kind, scanner and the out-of-domain flag.
"""

import collections
import html
import os

import numpy as np

from components import evaluation
from components.monitoring import features

LABEL = "label"  # the confirmed class's index in the answering model version's class order
SLICES = ("window", features.MODEL_VERSION, "source", "scan_kind", "scanner", "out_of_domain")
EXAMPLES_FILE = "labelled.tfrecord.gz"
TFMA_SUBDIR = "tfma"
MIN_LABELLED = 1  # TFMA runs from one labelled call on; the page says how few there are


def labelled_rows(window: dict[str, np.ndarray], readings: dict[str, dict], class_names: dict[int, tuple[str, ...]],
                  window_label: str) -> tuple[dict[str, np.ndarray], dict]:
    """The window's calls that a doctor labelled, as TFMA examples' columns, and counts of the readings left out.

    ``class_names`` maps each model version in the window to its classes (its ModelInfo)."""
    rows: dict[str, list] = collections.defaultdict(list)
    counts = {"readings": len(readings), "labelled": 0, "not_a_class": 0}
    for i, digest in enumerate(window.get(features.SHA256, [])):
        reading = readings.get(digest)
        if reading is None:
            continue
        version = int(window[features.MODEL_VERSION][i])
        names = class_names.get(version, ())
        if reading["confirmed_class"] not in names:
            counts["not_a_class"] += 1
            continue
        counts["labelled"] += 1
        rows[features.SHA256].append(digest)
        rows[LABEL].append(names.index(reading["confirmed_class"]))
        rows[features.PROBABILITIES].append(np.asarray(window[features.PROBABILITIES][i], np.float32))
        rows[features.PREDICTED_CLASS].append(str(window[features.PREDICTED_CLASS][i]))
        rows[features.MODEL_VERSION].append(version)
        rows["window"].append(window_label)
        rows["source"].append(reading.get("source") or "unknown")
        rows["scan_kind"].append(reading.get("scan_kind") or "unknown")
        rows["scanner"].append(reading.get("scanner") or "unknown")
        rows["out_of_domain"].append("yes" if float(window["out_of_domain"][i]) > 0.5 else "no")
    return {name: np.asarray(values) for name, values in rows.items()}, counts


def eval_config():
    """Model-agnostic TFMA: the logged probabilities against the doctors' labels, sliced as SLICES."""
    from tensorflow_model_analysis.proto import config_pb2

    return config_pb2.EvalConfig(
        model_specs=[config_pb2.ModelSpec(label_key=LABEL, prediction_key=features.PROBABILITIES)],
        slicing_specs=[config_pb2.SlicingSpec(), *(config_pb2.SlicingSpec(feature_keys=[name]) for name in SLICES)],
        metrics_specs=[config_pb2.MetricsSpec(metrics=[
            config_pb2.MetricConfig(class_name="ExampleCount"),
            config_pb2.MetricConfig(class_name="SparseCategoricalAccuracy"),
            config_pb2.MetricConfig(class_name="MultiClassConfusionMatrixPlot"),
        ])],
    )


def evaluate(rows: dict[str, np.ndarray], output_dir: str) -> dict:
    """Runs TFMA over the labelled rows (written under ``output_dir``); returns {"labelled", "accuracy", "slices":
    {slice: {"example_count", "accuracy", "macro_f1"}}, "confusion_matrix"} (no TFMA run without a labelled call)."""
    import tensorflow as tf
    import tensorflow_model_analysis as tfma

    count = len(rows.get(LABEL, []))
    if count < MIN_LABELLED:
        return {"labelled": count, "accuracy": None, "slices": {}, "confusion_matrix": None}
    data = os.path.join(output_dir, EXAMPLES_FILE)
    tf.io.gfile.makedirs(output_dir)
    with tf.io.TFRecordWriter(data, tf.io.TFRecordOptions(compression_type="GZIP")) as writer:
        for example in features.to_examples(rows):
            writer.write(example)
    tfma_dir = os.path.join(output_dir, TFMA_SUBDIR)
    tfma.run_model_analysis(eval_config=eval_config(), data_location=data, output_path=tfma_dir)
    results = evaluation.load_results(tfma_dir)
    slices = {name: {"example_count": int(values.get("example_count", 0)),
                     "accuracy": round(values["sparse_categorical_accuracy"], 4),
                     "macro_f1": round(values["macro_f1"], 4) if "macro_f1" in values else None}
              for name, values in sorted(results["metrics"].items()) if "sparse_categorical_accuracy" in values}
    return {"labelled": count, "accuracy": slices["overall"]["accuracy"], "slices": slices,
            "confusion_matrix": results["confusion_matrices"].get("overall")}


def render_html(result: dict, counts: dict, model: str, window_label: str, class_names: tuple[str, ...]) -> str:
    """A self-contained page (no scripts, no external assets) of TFMA's slicing metrics and confusion matrix."""
    escape = html.escape
    head = (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Doctor-labelled calls "
            f"{escape(model)} {escape(window_label)}</title><style>body{{font:14px system-ui,sans-serif;margin:1.5rem;"
            f"color:#222}}table{{border-collapse:collapse}}td,th{{border-bottom:1px solid #ddd;padding:.3rem .6rem;"
            f"text-align:left}}td.n{{text-align:right}}.bar{{display:inline-block;height:.7rem;background:#1f77b4}}"
            f"</style></head><body><h1>{escape(model)}: doctor-labelled calls, window {escape(window_label)}</h1>")
    intro = (f"<p>{result['labelled']} of the window's images carry a doctor's reading of one of the model's classes "
             f"({counts.get('readings', 0)} readings in the export, {counts.get('not_a_class', 0)} of them not a "
             f"class: not assessable). TFMA compares the probabilities the model logged with those readings.</p>")
    if not result["slices"]:
        return head + intro + "<p id=\"no-labels\">No labelled call in this window: nothing to score.</p></body></html>"
    rows = "".join(
        f"<tr><td>{escape(name)}</td><td class=\"n\">{values['example_count']}</td>"
        f"<td class=\"n\">{values['accuracy']:.3f}</td><td><span class=\"bar\" style=\"width:"
        f"{100 * values['accuracy']:.0f}px\"></span></td><td class=\"n\">"
        f"{'' if values['macro_f1'] is None else format(values['macro_f1'], '.3f')}</td></tr>"
        for name, values in result["slices"].items())
    matrix = ""
    if result.get("confusion_matrix"):
        header = "".join(f"<th>{escape(name)}</th>" for name in class_names)
        body = "".join(f"<tr><th>{escape(name)}</th>" + "".join(f"<td class=\"n\">{value}</td>" for value in line)
                       + "</tr>" for name, line in zip(class_names, result["confusion_matrix"], strict=False))
        matrix = (f"<h2>Confusion matrix (rows: the doctors' class, columns: the model's)</h2>"
                  f"<table id=\"confusion\"><tr><th></th>{header}</tr>{body}</table>")
    return (head + intro + "<h2>Accuracy by slice (TFMA)</h2><table id=\"slices\"><tr><th>slice</th><th>calls</th>"
            f"<th>accuracy</th><th></th><th>macro F1</th></tr>{rows}</table>{matrix}"
            f"<p>TFMA output: <code>{escape(TFMA_SUBDIR)}/</code> in the pipeline's artifact "
            f"(<code>tfma.load_eval_result</code>).</p></body></html>")


def summary(result: dict, counts: dict) -> dict:
    """What the window's summary keeps (the dashboards plot ``accuracy``)."""
    return {**counts, "accuracy": result["accuracy"], "slices": result["slices"],
            "confusion_matrix": result.get("confusion_matrix")}
