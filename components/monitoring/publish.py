"""Where a window's drift verdict goes: its summary JSON and HTML view, the published folder the portal's Monitoring
page reads, MLflow, a Prometheus Pushgateway and an optional webhook.

The published folder holds ``<model>/<window label>/summary.json``, ``report.html`` (drift) and ``evaluation.html``
(TFMA over the doctor-labelled calls) per monitored window; the
portal lists it (portal/monitoring.py). Every remote call has a timeout; a failed delivery is logged and
recorded in the summary's ``delivery`` and never loses the report (it stays in the pipeline's artifact).
"""

import datetime as dt
import html
import json
import logging
import os
import urllib.request

import numpy as np

from components.monitoring import features, logs
from radassist import contract

log = logging.getLogger(__name__)

SUMMARY_FILE, REPORT_FILE = contract.MONITORING_SUMMARY_FILE, contract.MONITORING_REPORT_FILE
EVALUATION_FILE = contract.MONITORING_EVALUATION_FILE
MLFLOW_EXPERIMENT = "radassist-monitoring"
TIMEOUT_SECONDS = 10.0
CONFIDENCE_BINS = np.linspace(0.0, 1.0, 11)
PUSHGATEWAY_JOB = "radassist-monitor"


def empty_columns() -> dict[str, np.ndarray]:
    """The columns of a window without traffic."""
    return {name: np.asarray([], object if name in (features.SHA256, features.PREDICTED_CLASS) else np.float32)
            for name in (features.SHA256, features.PREDICTED_CLASS, "confidence", "out_of_domain", "needs_review")}


def window_label(start: str, end: str) -> str:
    """The window's folder name (logs.Window.label, sortable by time) from its ISO start and end."""
    return logs.Window(dt.datetime.fromisoformat(start), dt.datetime.fromisoformat(end)).label


def summary(result: dict, *, model_name: str, window: dict, counts: dict, baseline: dict,
            window_columns: dict, baseline_columns: dict) -> dict:
    """The JSON summary of one window: the drift report plus what the dashboards plot."""
    def histogram(columns):
        values = np.asarray(columns.get("confidence", []), np.float64)
        return np.histogram(values, CONFIDENCE_BINS)[0].tolist() if len(values) else [0] * (len(CONFIDENCE_BINS) - 1)

    versions = {}
    for version in np.asarray(window_columns.get(features.MODEL_VERSION, []), np.int64).tolist():
        versions[str(version)] = versions.get(str(version), 0) + 1
    return {
        "model": model_name,
        "window": {**window, "label": window_label(window["start"], window["end"])},
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **counts,
        "model_versions": versions,
        "baseline": baseline,
        **result,
        "confidence_histogram": {"bins": CONFIDENCE_BINS.round(2).tolist(), "window": histogram(window_columns),
                                 "baseline": histogram(baseline_columns)},
    }


def _svg_histograms(reference: np.ndarray, window: np.ndarray, bins: int = 20) -> str:
    """Two overlaid density histograms (baseline grey, window orange) as an inline SVG."""
    finite = np.concatenate([reference[np.isfinite(reference)], window[np.isfinite(window)]])
    if not len(finite):
        return ""
    low, high = float(finite.min()), float(finite.max())
    edges = np.linspace(low, high if high > low else low + 1.0, bins + 1)
    width, height = 240, 60
    shapes = []
    for values, colour in ((reference, "#8a8f98"), (window, "#e8710a")):
        values = values[np.isfinite(values)]
        if not len(values):
            continue
        density = np.histogram(values, edges)[0] / len(values)
        top = max(density.max(), 1e-9)
        points = [f"{i * width / bins:.1f},{height - d / top * (height - 4):.1f}" for i, d in enumerate(density)]
        points += [f"{width:.1f},{height - density[-1] / top * (height - 4):.1f}"]
        shapes.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{" ".join(points)}"/>')
    return (f'<svg width="{width}" height="{height}" role="img" aria-label="baseline and window histograms">'
            f'{"".join(shapes)}</svg><div class="axis">{low:.3g} &ndash; {high:.3g}</div>')


def render_html(summary_: dict, baseline_columns: dict, window_columns: dict) -> str:
    """A self-contained page (no scripts, no external assets) of one window: the verdict, each group's score
    against its threshold, every feature's distribution against the baseline's, the class mix and TFDV's
    measurements."""
    escape = html.escape
    rows = []
    for group, result in summary_["groups"].items():
        for name in features.GROUPS[group]:
            measured = result["features"].get(name, {})
            chart = ""
            if name in features.NUMERIC and name in window_columns and name in baseline_columns:
                chart = _svg_histograms(np.asarray(baseline_columns[name], np.float64),
                                        np.asarray(window_columns[name], np.float64))
            value = f"{measured['value']:.3f} / {measured['threshold']:.2f}" if measured else "&ndash;"
            rows.append(f"<tr><td>{escape(group)}</td><td>{escape(name)}</td><td>{value}</td><td>{chart}</td></tr>")
    groups = "".join(
        f"<tr class=\"{'drift' if result['drifted'] else ''}\"><td>{escape(group)}</td><td>{result['score']:.2f}</td>"
        f"<td>{result.get('p_value', '&ndash;')}</td><td>{'drift' if result['drifted'] else 'ok'}</td></tr>"
        for group, result in summary_["groups"].items())
    embedding = summary_.get("embedding")
    if embedding:
        groups += (f"<tr class=\"{'drift' if embedding['drifted'] else ''}\"><td>embedding (MMD&sup2; "
                   f"{embedding['mmd2']:.4f})</td><td>{embedding['score']:.2f}</td><td>{embedding['p_value']}</td>"
                   f"<td>{'drift' if embedding['drifted'] else 'ok'}</td></tr>")
    mix = "".join(f"<li>{escape(name)}: {share:.0%}</li>" for name, share in summary_["class_mix"].items())
    window = summary_["window"]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Drift {escape(summary_['model'])} {escape(window['label'])}</title>
<style>body{{font:14px system-ui,sans-serif;margin:1.5rem;color:#222}}table{{border-collapse:collapse}}
td,th{{border-bottom:1px solid #ddd;padding:.3rem .6rem;text-align:left;vertical-align:top}}
tr.drift{{background:#fde8e4}}
.verdict{{font-size:1.2rem;font-weight:600}}.alert{{color:#b3261e}}.axis{{font-size:11px;color:#666}}
.key span{{display:inline-block;width:1rem;height:.3rem;margin:0 .3rem .15rem .8rem}}</style></head><body>
<h1>{escape(summary_['model'])}: {escape(_minute(window['start']))} &ndash; {escape(_minute(window['end']))} UTC</h1>
<p class="verdict {'alert' if summary_['alert'] else ''}">{escape(summary_['verdict'])}</p>
<p>{summary_['images']} distinct images (baseline: version {summary_['baseline']['model_version']},
{summary_['baseline']['images']} reference images); out of domain {_share(summary_['ood_share'])}, needs review
{_share(summary_['review_share'])}.</p>
<p id="labelled">{_labelled(summary_.get('feedback'))}</p>
<h2>Feature groups</h2><p>A group drifts when its score (largest TFDV distance / threshold) is over 1 and its
permutation test's p-value is under {summary_['thresholds']['alpha']}.</p>
<table><tr><th>group</th><th>score</th><th>p-value</th><th></th></tr>{groups}</table>
<h2>Predicted classes</h2><ul>{mix}</ul>
<h2>Features</h2><p class="key">baseline<span style="background:#8a8f98"></span> window<span
style="background:#e8710a"></span></p>
<table><tr><th>group</th><th>feature</th><th>distance / threshold</th><th>distribution</th></tr>{''.join(rows)}</table>
</body></html>"""


def _labelled(feedback: dict | None) -> str:
    if not feedback or not feedback.get("labelled"):
        return "No call in this window carries a doctor's reading yet."
    return (f"Doctors read {feedback['labelled']} of the window's images: the model agreed with "
            f"{feedback['accuracy']:.1%} of them (TFMA, by slice: {html.escape(EVALUATION_FILE)}).")


def _minute(moment: str) -> str:
    return dt.datetime.fromisoformat(moment).astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M")


def _share(value) -> str:
    return "&ndash;" if value is None else f"{value:.1%}"


def _post_json(url: str, payload: dict, timeout: float) -> None:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - the operator's own URL
        response.read()


def push_metrics(summary_: dict, gateway: str, timeout: float = TIMEOUT_SECONDS) -> None:
    """The window's verdict as Prometheus gauges on a Pushgateway (infra/monitoring's alert rules read them)."""
    from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

    registry = CollectorRegistry()
    model = summary_["model"]
    Gauge("radassist_drift_alert", "1 when the last monitored window drifted", ["model"],
          registry=registry).labels(model).set(int(summary_["alert"]))
    score = Gauge("radassist_drift_score", "drift score per feature group (alert above 1)", ["model", "group"],
                  registry=registry)
    for group, result in summary_["groups"].items():
        score.labels(model, group).set(result["score"])
    if summary_.get("embedding"):
        score.labels(model, "embedding").set(summary_["embedding"]["score"])
    Gauge("radassist_monitored_images", "distinct images in the last monitored window", ["model"],
          registry=registry).labels(model).set(summary_["images"])
    if summary_.get("ood_share") is not None:
        Gauge("radassist_window_ood_share", "share of the window's images out of domain", ["model"],
              registry=registry).labels(model).set(summary_["ood_share"])
    labelled = summary_.get("feedback") or {}
    if labelled.get("accuracy") is not None:
        Gauge("radassist_labelled_accuracy", "accuracy on the window's doctor-labelled calls (TFMA)", ["model"],
              registry=registry).labels(model).set(labelled["accuracy"])
    Gauge("radassist_monitoring_last_run_timestamp_seconds", "when the monitor last finished", ["model"],
          registry=registry).labels(model).set_to_current_time()
    push_to_gateway(gateway, job=PUSHGATEWAY_JOB, registry=registry, grouping_key={"model": model},
                    timeout=timeout)


def log_mlflow(summary_: dict, report_dir: str, tracking_uri: str, experiment: str) -> None:
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=f"{summary_['model']} {summary_['window']['label']}"):
        mlflow.set_tags({"model": summary_["model"], "window_start": summary_["window"]["start"],
                         "window_end": summary_["window"]["end"], "verdict": summary_["verdict"],
                         "baseline_version": str(summary_["baseline"]["model_version"])})
        metrics = {"alert": float(summary_["alert"]), "images": float(summary_["images"])}
        metrics.update({f"{group}_score": result["score"] for group, result in summary_["groups"].items()})
        if summary_.get("embedding"):
            metrics["embedding_mmd2"] = summary_["embedding"]["mmd2"]
        for name in ("ood_share", "review_share", "confidence_mean"):
            if summary_.get(name) is not None:
                metrics[name] = summary_[name]
        labelled = summary_.get("feedback") or {}
        metrics["labelled_calls"] = float(labelled.get("labelled", 0))
        if labelled.get("accuracy") is not None:
            metrics["labelled_accuracy"] = labelled["accuracy"]
        mlflow.log_metrics(metrics)
        mlflow.log_artifacts(report_dir)


def publish_files(summary_: dict, html_text: str, evaluation_html: str, publish_dir: str) -> str:
    """Writes the window's summary and views under ``<publish_dir>/<model>/<label>/``; returns that folder."""
    folder = os.path.join(publish_dir, summary_["model"], summary_["window"]["label"])
    os.makedirs(folder, exist_ok=True)
    # The summary last: the portal lists a window by its summary, so its pages are there once it is.
    for name, text in ((REPORT_FILE, html_text), (EVALUATION_FILE, evaluation_html),
                       (SUMMARY_FILE, json.dumps(summary_, indent=2))):
        temporary = os.path.join(folder, f".{name}.partial")
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, os.path.join(folder, name))  # the portal never reads half a summary
    return folder


def send(summary_: dict, html_text: str, evaluation_html: str, *, publish_dir: str = "", mlflow_tracking_uri: str = "",
         mlflow_experiment: str = MLFLOW_EXPERIMENT, webhook_url: str = "", pushgateway_url: str = "",
         report_dir: str = "") -> dict:
    """Delivers the report to each configured place; returns {place: "ok" | error text} (also in the summary)."""
    delivery = {}
    steps = [("mlflow", mlflow_tracking_uri and report_dir,
              lambda: log_mlflow(summary_, report_dir, mlflow_tracking_uri, mlflow_experiment)),
             ("pushgateway", pushgateway_url, lambda: push_metrics(summary_, pushgateway_url)),
             ("webhook", webhook_url and summary_["alert"],
              lambda: _post_json(webhook_url, {"text": f"RadAssist drift alert: {summary_['model']} "
                                               f"{summary_['window']['label']}: {summary_['verdict']}",
                                               "summary": summary_}, TIMEOUT_SECONDS))]
    for place, wanted, deliver in steps:
        if not wanted:
            continue
        try:
            deliver()
            delivery[place] = "ok"
        except Exception as error:  # noqa: BLE001 - any failed delivery is reported, the report is kept
            log.warning("monitoring: delivering to %s failed: %s", place, error)
            delivery[place] = f"failed: {error}"
    summary_["delivery"] = delivery
    if publish_dir:
        publish_files(summary_, html_text, evaluation_html, publish_dir)
    return delivery
