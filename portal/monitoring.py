"""The admin Monitoring page's data: the monitoring pipeline's published window reports (``MONITORING_DIR``,
components/monitoring/publish.py) and the doctors' agreement with the model over the same windows (sign-offs).

Charts are drawn here as inline SVG (no scripts, no CDN); every point links to that window's report page.
"""

import dataclasses
import datetime as dt
import html
import json
import logging
import os
import re

import sqlalchemy as sa

from portal.models import Report, ReportStatus, db
from radassist import contract

log = logging.getLogger(__name__)

SUMMARY_FILE, REPORT_FILE = contract.MONITORING_SUMMARY_FILE, contract.MONITORING_REPORT_FILE
EVALUATION_FILE = contract.MONITORING_EVALUATION_FILE
PAGES = {"report": REPORT_FILE, "evaluation": EVALUATION_FILE}  # a window's pages the portal serves
LABEL = re.compile(r"^\d{8}T\d{6}-\d{8}T\d{6}$")           # a window's folder: START-END, compact UTC
MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
GROUP_COLOURS = {"intensity": "#1f77b4", "geometry": "#2ca02c", "output": "#9467bd", "embedding": "#e8710a"}


def _folder(root: str, model: str, label: str | None = None) -> str | None:
    """``root/model[/label]`` when the names are a model's and a window's (nothing else is ever opened)."""
    if not root or not MODEL.match(model) or (label is not None and not LABEL.match(label)):
        return None
    return os.path.join(root, model, label) if label else os.path.join(root, model)


def window_summaries(root: str, model: str, limit: int = 90) -> list[dict]:
    """The newest ``limit`` published windows of ``model``, oldest first; an unreadable summary is skipped."""
    folder = _folder(root, model)
    if folder is None or not os.path.isdir(folder):
        return []
    found = []
    for label in sorted((name for name in os.listdir(folder) if LABEL.match(name)), reverse=True):
        if len(found) == limit:
            break
        try:
            with open(os.path.join(folder, label, SUMMARY_FILE), encoding="utf-8") as handle:
                found.append(json.load(handle))
        except FileNotFoundError:
            continue  # a window still being written
        except (OSError, ValueError) as error:
            log.warning("monitoring: skipping %s/%s: %s", model, label, error)
    return sorted(found, key=lambda summary: summary["window"]["end"])


def latest_alert(root: str, model: str) -> dict | None:
    """The newest window's summary when it raised the drift alert (the admin pages' banner), else None."""
    newest = window_summaries(root, model, limit=1)
    return newest[-1] if newest and newest[-1].get("alert") else None


def report_path(root: str, model: str, label: str, page: str = "report") -> str | None:
    """A window's published page (``PAGES``: the drift report or TFMA over its labelled calls), None if absent."""
    folder = _folder(root, model, label)
    path = folder and page in PAGES and os.path.join(folder, PAGES[page])
    return path if path and os.path.isfile(path) else None


def _moment(text: str) -> dt.datetime:
    """A summary's ISO time as the database's naive UTC."""
    return dt.datetime.fromisoformat(text).astimezone(dt.UTC).replace(tzinfo=None)


def agreement(summaries: list[dict], model: str) -> list[dict]:
    """Per window: the doctors' sign-offs in it (readings that agree or not with the model) and the share agreeing."""
    result = []
    for summary in summaries:
        start, end = _moment(summary["window"]["start"]), _moment(summary["window"]["end"])
        counts = dict(db.session.execute(
            sa.select(Report.doctor_agrees, sa.func.count()).where(
                Report.status == ReportStatus.FINAL.value, Report.model_name == model,
                Report.doctor_agrees.is_not(None), Report.signed_at >= start, Report.signed_at < end)
            .group_by(Report.doctor_agrees)).all())
        readings = counts.get(True, 0) + counts.get(False, 0)
        result.append({"readings": readings, "share": counts.get(True, 0) / readings if readings else None})
    return result


def labelled_accuracy(summary: dict) -> float | None:
    """TFMA's accuracy on the window's calls that doctors have read (None without any)."""
    return (summary.get("feedback") or {}).get("accuracy")


@dataclasses.dataclass
class Series:
    name: str
    values: list[float | None]
    colour: str


def line_chart(series: list[Series], links: list[str], ticks: list[str], *, threshold: float | None = None,
               maximum: float | None = None, title: str = "", percent: bool = False) -> str:
    """An SVG line chart, one point per window (each a link to ``links[i]``), with an optional threshold line."""
    width, height, left, bottom, top = 720, 180, 44, 24, 10
    values = [v for s in series for v in s.values if v is not None]
    high = maximum if maximum is not None else max(values + [threshold or 0.0, 1e-9]) * 1.15
    count = max(len(links), 1)

    def x(index: int) -> float:
        return left + (index + 0.5) * (width - left - 8) / count

    def y(value: float) -> float:
        return top + (1 - min(value, high) / high) * (height - top - bottom)

    def label(value: float) -> str:
        return f"{value:.0%}" if percent else f"{value:.2g}"

    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(title)}">',
             f'<line x1="{left}" y1="{y(0)}" x2="{width - 8}" y2="{y(0)}" stroke="#999"/>',
             f'<text x="{left - 4}" y="{y(high) + 4}" text-anchor="end" font-size="10">{label(high)}</text>',
             f'<text x="{left - 4}" y="{y(0) + 4}" text-anchor="end" font-size="10">{label(0)}</text>']
    if threshold is not None:
        parts.append(f'<line class="threshold" x1="{left}" y1="{y(threshold)}" x2="{width - 8}" y2="{y(threshold)}" '
                     f'stroke="#b3261e" stroke-dasharray="4 3"/><text x="{width - 10}" y="{y(threshold) - 3}" '
                     f'text-anchor="end" font-size="10" fill="#b3261e">alert above {label(threshold)}</text>')
    step = max(1, count // 8)
    for index, tick in enumerate(ticks):
        if index % step == 0:
            parts.append(f'<text x="{x(index)}" y="{height - 6}" text-anchor="middle" font-size="10">'
                         f'{html.escape(tick)}</text>')
    for line in series:
        points = [(x(i), y(v)) for i, v in enumerate(line.values) if v is not None]
        if len(points) > 1:
            parts.append(f'<polyline fill="none" stroke="{line.colour}" stroke-width="2" points="'
                         + " ".join(f"{px:.1f},{py:.1f}" for px, py in points) + '"/>')
        for index, value in enumerate(line.values):
            if value is None:
                continue
            parts.append(f'<a href="{html.escape(links[index])}"><circle cx="{x(index):.1f}" cy="{y(value):.1f}" '
                         f'r="4" fill="{line.colour}"><title>{html.escape(line.name)} {html.escape(ticks[index])}: '
                         f'{label(value)}</title></circle></a>')
    parts.append("</svg>")
    return "".join(parts)


def charts(summaries: list[dict], agreements: list[dict], links: list[str]) -> tuple[dict[str, str], dict]:
    """The page's charts (drift score per feature group, OOD and review shares, confidence, class mix, agreement)
    and their legends' colours."""
    ticks = [dt.datetime.fromisoformat(s["window"]["end"]).strftime("%m-%d %H:%M") for s in summaries]
    groups = sorted({group for s in summaries for group in s.get("groups", {})})
    drift = [Series(group, [s["groups"][group]["score"] if group in s.get("groups", {}) else None for s in summaries],
                    GROUP_COLOURS.get(group, "#555")) for group in groups]
    drift.append(Series("embedding", [s["embedding"]["score"] if s.get("embedding") else None for s in summaries],
                        GROUP_COLOURS["embedding"]))
    classes = sorted({name for s in summaries for name in s.get("class_mix", {})})
    palette = ["#1f77b4", "#d62728", "#9467bd", "#2ca02c", "#8c564b", "#e377c2"]
    return {
        "drift": line_chart(drift, links, ticks, threshold=1.0, title="drift score per feature group"),
        "shares": line_chart([Series("out of domain", [s.get("ood_share") for s in summaries], "#d62728"),
                              Series("needs review", [s.get("review_share") for s in summaries], "#ff7f0e")],
                             links, ticks, maximum=1.0, percent=True, title="out-of-domain and review shares"),
        "confidence": line_chart([Series("mean confidence", [s.get("confidence_mean") for s in summaries],
                                         "#1f77b4")], links, ticks, maximum=1.0, percent=True,
                                 title="mean confidence"),
        "class_mix": line_chart([Series(name, [s.get("class_mix", {}).get(name, 0.0) if s["images"] else None
                                               for s in summaries], palette[i % len(palette)])
                                 for i, name in enumerate(classes)], links, ticks, maximum=1.0, percent=True,
                                title="predicted class mix"),
        "agreement": line_chart([Series("doctors agree (sign-offs in the window)", [a["share"] for a in agreements],
                                        "#2ca02c"),
                                 Series("accuracy on the window's labelled calls (TFMA)",
                                        [labelled_accuracy(s) for s in summaries], "#1f77b4")],
                                links, ticks, maximum=1.0, percent=True, title="doctors' agreement with the model"),
    }, {"classes": {name: palette[i % len(palette)] for i, name in enumerate(classes)},
        "groups": {series.name: series.colour for series in drift}}
