"""The admin Monitoring page: the monitoring pipeline's published windows as charts and a table, each linking to its
report; the doctors' agreement over each window from the sign-offs; a banner on every admin page while the newest
window is in alert; only admins see any of it, and only window folders are ever opened."""

import datetime as dt
import json
import os

import pytest
from factories import gen_scan

from portal.models import Report, db


def _window(root, start: dt.datetime, *, alert: bool, images: int = 120, labelled: int = 0) -> str:
    """A window summary as components/monitoring/publish.py writes it (its fields, not its statistics)."""
    end = start + dt.timedelta(days=1)
    label = f"{start:%Y%m%dT%H%M%S}-{end:%Y%m%dT%H%M%S}"
    folder = root / "radassist" / label
    folder.mkdir(parents=True)
    groups = {"intensity": {"score": 3.2 if alert else 0.4, "drifted": alert, "p_value": 0.002 if alert else 0.6,
                            "features": {}},
              "geometry": {"score": 0.3, "drifted": False, "p_value": 0.5, "features": {}}}
    summary = {"model": "radassist", "window": {"start": start.isoformat(), "end": end.isoformat(), "label": label},
               "images": images, "model_versions": {"3": images}, "ood_share": 0.2 if alert else 0.01,
               "review_share": 0.1, "confidence_mean": 0.81, "class_mix": {"normal": 0.6, "adenocarcinoma": 0.4},
               "groups": groups, "embedding": {"mmd2": 0.001, "p_value": 0.4, "score": 0.0, "drifted": False},
               "alert": alert, "verdict": "drift: intensity" if alert else "no drift",
               "feedback": {"labelled": labelled, "accuracy": 0.8 if labelled else None, "slices": {}}}
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "evaluation.html").write_text(f"<!doctype html><h1>labelled calls {label}</h1>")
    (folder / "report.html").write_text(f"<!doctype html><h1>window {label}</h1><p>{summary['verdict']}</p>")
    return label


@pytest.fixture()
def published(app, tmp_path):
    root = tmp_path / "monitoring"
    first = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    labels = [_window(root, first + dt.timedelta(days=i), alert=i == 4, labelled=5 * (i == 3)) for i in range(5)]
    (root / "radassist" / "not-a-window").mkdir()
    (root / "radassist" / "20261201T000000-20261202T000000").mkdir()  # a window being written: no summary yet
    app.config["MONITORING_DIR"] = str(root)
    return labels


def _signed(app, name: str, agrees: bool, signed_at: dt.datetime) -> None:
    scan_id = gen_scan(app, "patient@example.org", name, cancer=0.9)
    with app.app_context():
        report = db.session.scalar(db.select(Report).where(Report.scan_id == scan_id))
        report.status, report.doctor_agrees = "final", agrees
        report.confirmed_class = report.predicted_class if agrees else "normal"
        report.signed_at = signed_at.replace(tzinfo=None)
        db.session.commit()


def test_the_monitoring_page_plots_each_window_and_links_its_report(app, published, auth, client):
    day = dt.datetime(2026, 11, 2, 9, tzinfo=dt.UTC)  # in the second window
    _signed(app, "a.png", True, day)
    _signed(app, "bb.png", True, day)
    _signed(app, "ccc.png", False, day)
    auth.login("admin@example.org")
    page = client.get("/admin/monitoring").get_data(as_text=True)
    for chart in ("drift", "shares", "confidence", "class-mix", "agreement"):
        assert f'id="chart-{chart}"' in page
    links = [f"/admin/monitoring/radassist/{label}" for label in published]
    for link in links:
        assert page.count(f'href="{link}"') >= 4  # a point on each chart's lines, and the table's link
    assert "alert above 1" in page and page.count("<tr class=\"alert\">") == 1
    assert "67% of 3" in page  # two of the three sign-offs in the second window agree
    # The fourth window's calls that doctors read: TFMA's accuracy on the chart, and its page linked.
    assert page.count(f'href="{links[3]}/evaluation"') == 1 and "80% of 5" in page
    assert "labelled calls (TFMA) 11-05 00:00: 80%" in page  # its point on the agreement chart
    evaluation = client.get(f"{links[3]}/evaluation")
    assert evaluation.status_code == 200 and "labelled calls" in evaluation.get_data(as_text=True)
    assert evaluation.headers["Content-Security-Policy"].endswith("; sandbox")
    report = client.get(links[-1])
    assert report.status_code == 200 and "drift: intensity" in report.get_data(as_text=True)
    assert report.headers["Content-Security-Policy"].endswith("; sandbox")
    # The newest window is in alert: a banner on every admin page.
    banner = client.get("/admin/doctors").get_data(as_text=True)
    assert 'id="drift-banner"' in banner and "drift: intensity" in banner


def test_only_window_folders_are_opened_and_only_by_admins(app, published, auth, client):
    auth.login("admin@example.org")
    for bad in ("../../etc/passwd", "not-a-window", "20261201T000000-20261202T000000", "..%2f..%2fsecret",
                f"{published[0]}/summary.json", f"{published[0]}/..", f"{published[0]}/report.html"):
        assert client.get(f"/admin/monitoring/radassist/{bad}").status_code == 404
    assert client.get("/admin/monitoring/other-model/" + published[0]).status_code == 404
    assert client.get("/admin/monitoring?model=../x").status_code == 404
    auth.logout()
    auth.login("doctor@example.org")
    assert client.get("/admin/monitoring").status_code == 403
    assert client.get(f"/admin/monitoring/radassist/{published[0]}").status_code == 403
    assert 'id="drift-banner"' not in client.get("/doctor/patients").get_data(as_text=True)


def test_without_a_monitoring_folder_the_page_says_how_to_set_one(app, auth, client, tmp_path):
    auth.login("admin@example.org")
    assert 'id="monitoring-unconfigured"' in client.get("/admin/monitoring").get_data(as_text=True)
    (tmp_path / "monitoring").mkdir()
    app.config["MONITORING_DIR"] = str(tmp_path / "monitoring")
    assert 'id="monitoring-empty"' in client.get("/admin/monitoring").get_data(as_text=True)
    assert os.listdir(tmp_path / "monitoring") == []  # the page only reads
