"""The doctor's worklist: triage order, filters in the URL, server-side pages, live rows, reading through it from
the report pages, and nobody else's scans (on SQLite and PostgreSQL).

The rows are made by ``gen_scan`` (a real scan in the blob store, its report version(s) and job written as the
worker and sign-off write them), so the tests need no model server.
"""

import datetime as dt
import io
import json
import re
from urllib.parse import parse_qs, urlparse

import pytest
from conftest import csrf_token, user_id
from factories import CLASSES, gen_scan
from PIL import Image

from portal import worklist
from portal.models import AuditEvent, Batch, Job, Report, Scan, User, db


def names(page_html: str) -> list[str]:
    """The scan file names of the worklist rows, in order."""
    return re.findall(r'<tr class="wl-row[^"]*"[^>]*>.*?<small>([^<]+)</small>', page_html, re.S)


@pytest.fixture()
def doctor_worklist(app, auth):
    """Eight scans of Dr. One's patient covering every triage rank, and one of Dr. Two's."""
    gen_scan(app, "patient@example.org", "low.png", cancer=0.2)
    gen_scan(app, "patient@example.org", "high.png", cancer=0.9, lesion_mm=12.3)
    gen_scan(app, "patient@example.org", "ood.png", cancer=0.8, in_domain=False)
    gen_scan(app, "patient@example.org", "unsure.png", cancer=0.5, uncertain=True)
    gen_scan(app, "patient@example.org", "signed.png", cancer=0.95, signed=True)
    gen_scan(app, "patient@example.org", "amended.png", cancer=0.3, amended=True)
    gen_scan(app, "patient@example.org", "failed.png", job="failed")
    gen_scan(app, "patient@example.org", "queued.png", job="queued")
    gen_scan(app, "patient2@example.org", "not-mine.png", cancer=0.99)
    auth.login("doctor@example.org")
    return app


def test_the_worklist_puts_what_needs_a_human_first(doctor_worklist, client):
    page = client.get("/doctor/worklist").get_data(as_text=True)
    assert names(page) == ["ood.png", "unsure.png", "high.png", "low.png", "failed.png", "signed.png",
                           "amended.png", "queued.png"]
    assert "not-mine.png" not in page
    assert "Out of domain" in page and "Uncertain" in page and "Lesion 12.3 mm" in page
    assert "Dr. One" in page and "Amended" in page and "Being analysed" in page
    assert "1–8 of 8 scans" in page


@pytest.mark.parametrize(("query", "expected"), [
    ("state=unsigned", ["ood.png", "unsure.png", "high.png", "low.png"]),
    ("state=final", ["signed.png", "amended.png"]),
    ("state=amended", ["amended.png"]),
    ("state=failed", ["failed.png"]),
    ("state=pending", ["queued.png"]),
    ("flag=ood", ["ood.png"]),
    ("flag=uncertain", ["unsure.png"]),
    ("flag=lesion", ["high.png"]),
    ("class=normal", ["unsure.png", "low.png", "amended.png"]),
    ("sort=probability", ["signed.png", "high.png", "ood.png", "unsure.png", "amended.png", "low.png",
                          "failed.png", "queued.png"]),
    ("sort=probability&order=asc", ["low.png", "amended.png", "unsure.png", "ood.png", "high.png", "signed.png",
                                    "failed.png", "queued.png"]),
])
def test_filters_and_orders_live_in_the_url(doctor_worklist, client, query, expected):
    page = client.get(f"/doctor/worklist?{query}").get_data(as_text=True)
    sort = parse_qs(query).get("sort", ["priority"])[0]
    if sort == "probability":  # reports first by probability; the rest (no report) newest first among themselves
        assert names(page)[:6] == expected[:6] and sorted(names(page)[6:]) == sorted(expected[6:])
    else:
        assert names(page) == expected


def test_date_range_and_patient_filters(app, auth, client):
    gen_scan(app, "patient@example.org", "october.png", cancer=0.4, uploaded=dt.datetime(2026, 10, 5))
    gen_scan(app, "patient@example.org", "november.png", cancer=0.4, uploaded=dt.datetime(2026, 11, 5, 23, 59))
    auth.login("doctor@example.org")
    page = client.get("/doctor/worklist?from=2026-11-01&to=2026-11-05").get_data(as_text=True)
    assert names(page) == ["november.png"]
    patient = user_id(app, "patient@example.org")
    assert names(client.get(f"/doctor/worklist?patient={patient}").get_data(as_text=True)) == ["november.png",
                                                                                               "october.png"]
    other_patient = user_id(app, "patient2@example.org")
    assert client.get(f"/doctor/worklist?patient={other_patient}").status_code == 404


def test_bad_filters_say_so_and_show_the_whole_list(doctor_worklist, client):
    for query in ("state=bogus", "page=0", "per_page=7", "from=yesterday", "from=2026-12-01&to=2026-11-01"):
        response = client.get(f"/doctor/worklist?{query}", follow_redirects=True)
        assert response.status_code == 200
        assert "Worklist filter not understood" in response.get_data(as_text=True), query


def test_pages_are_cut_in_the_database_and_keep_the_filters(app, auth, client):
    for index in range(30):
        gen_scan(app, "patient@example.org", f"scan-{index:02d}.png", cancer=index / 30)
    auth.login("doctor@example.org")
    first = client.get("/doctor/worklist?state=unsigned").get_data(as_text=True)
    assert names(first) == [f"scan-{index:02d}.png" for index in range(29, 4, -1)]
    assert "1–25 of 30 scans" in first
    next_link = re.search(r'href="\?([^"]+)" rel="next"', first).group(1).replace("&amp;", "&")
    assert parse_qs(next_link) == {"state": ["unsigned"], "page": ["2"]}
    second = client.get(f"/doctor/worklist?{next_link}").get_data(as_text=True)
    assert names(second) == [f"scan-{index:02d}.png" for index in range(4, -1, -1)] and "26–30 of 30" in second
    assert names(client.get("/doctor/worklist?per_page=50").get_data(as_text=True))[0] == "scan-29.png"


def test_a_batch_worklist_holds_that_upload_only(app, auth, client):
    with app.app_context():
        patient = db.session.scalar(db.select(User).where(User.email == "patient@example.org"))
        batch = Batch(created_by_id=patient.doctor_id, patient_id=patient.id)
        db.session.add(batch)
        db.session.commit()
        batch_id = batch.id
    gen_scan(app, "patient@example.org", "in-batch.png", cancer=0.6, batch=batch_id)
    gen_scan(app, "patient@example.org", "elsewhere.png", cancer=0.7)
    auth.login("doctor@example.org")
    assert names(client.get(f"/doctor/worklist?batch={batch_id}").get_data(as_text=True)) == ["in-batch.png"]
    auth.logout()
    auth.login("other@example.org")
    assert client.get(f"/doctor/worklist?batch={batch_id}").status_code == 404


def test_live_rows_update_once_the_report_exists_and_never_leak(doctor_worklist, client):
    app = doctor_worklist
    with app.app_context():
        queued = db.session.scalar(db.select(Scan.id).where(Scan.name == "queued.png"))
        foreign = db.session.scalar(db.select(Scan.id).where(Scan.name == "not-mine.png"))
    answer = client.get(f"/doctor/worklist/rows?scan={queued}&scan={foreign}").get_json()
    assert [row["scan"] for row in answer["rows"]] == [queued] and answer["rows"][0]["settled"] is False
    with app.app_context():  # the worker finishes it
        job = db.session.scalar(db.select(Job).where(Job.scan_id == queued))
        job.status = "done"
        db.session.add(Report(scan_id=queued, version=1, predicted_class="adenocarcinoma",
                              probabilities_json=json.dumps(dict.fromkeys(CLASSES, 0.25)), uncertain=False,
                              in_domain=True, overlay_sha256="0" * 64, model_name="radassist", model_version=1,
                              cancer_probability=0.75, lesion_count=0))
        db.session.commit()
    (row,) = client.get(f"/doctor/worklist/rows?scan={queued}&worklist=state%3Dunsigned").get_json()["rows"]
    assert row["settled"] is True and "Adenocarcinoma 25%" in row["html"] and "wl=state%3Dunsigned" in row["html"]


def test_reading_through_the_worklist_from_report_pages_and_signing_moves_on(doctor_worklist, client):
    app = doctor_worklist
    page = client.get("/doctor/worklist?state=unsigned").get_data(as_text=True)
    first_url = re.search(r'class="wl-open" href="([^"]+)"', page).group(1).replace("&amp;", "&")
    assert parse_qs(urlparse(first_url).query) == {"wl": ["state=unsigned"]}
    report_page = client.get(first_url).get_data(as_text=True)
    assert "First in the worklist" in report_page and 'id="next-report"' in report_page
    next_url = re.search(r'href="([^"]+)" id="next-report"', report_page).group(1).replace("&amp;", "&")
    with app.app_context():
        ids = {name: db.session.scalar(db.select(Report.id).join(Scan).where(Scan.name == name))
               for name in ("ood.png", "unsure.png", "high.png", "low.png")}
    assert urlparse(next_url).path == f"/reports/{ids['unsure.png']}"
    second = client.get(next_url).get_data(as_text=True)
    assert f'/reports/{ids["ood.png"]}?wl=' in re.search(r'href="([^"]+)" id="previous-report"', second).group(1)
    token = csrf_token(client, next_url)
    response = client.post(f"/reports/{ids['unsure.png']}/sign",
                           data={"csrf_token": token, "findings": "Read.", "wl": "state=unsigned",
                                 "assessment": "agree"})
    assert response.status_code == 302
    assert urlparse(response.headers["Location"]).path == f"/reports/{ids['high.png']}"  # what came next
    with app.app_context():
        assert db.session.get(Report, ids["unsure.png"]).status == "final"
    remaining = client.get("/doctor/worklist?state=unsigned").get_data(as_text=True)
    assert names(remaining) == ["ood.png", "high.png", "low.png"]


def test_other_doctors_and_patients_cannot_use_the_worklist(doctor_worklist, client, auth):
    app = doctor_worklist
    with app.app_context():
        mine = db.session.scalar(db.select(Scan.id).where(Scan.name == "high.png"))
    assert client.get(f"/scans/{mine}/thumbnail.png").status_code == 200
    auth.logout()
    auth.login("other@example.org")
    assert names(client.get("/doctor/worklist").get_data(as_text=True)) == ["not-mine.png"]
    assert client.get(f"/doctor/worklist/rows?scan={mine}").get_json() == {"rows": []}
    assert client.get(f"/scans/{mine}/thumbnail.png").status_code == 404
    auth.logout()
    auth.login("patient@example.org")
    assert client.get("/doctor/worklist").status_code in (302, 403)
    assert client.get(f"/doctor/worklist/rows?scan={mine}").status_code in (302, 403)


def test_thumbnails_are_small_never_cached_and_the_list_is_audited(doctor_worklist, client):
    app = doctor_worklist
    with app.app_context():
        scan_id = db.session.scalar(db.select(Scan.id).where(Scan.name == "high.png"))
    response = client.get(f"/scans/{scan_id}/thumbnail.png")
    assert Image.open(io.BytesIO(response.data)).size == (worklist_thumbnail_side(),) * 2
    assert response.headers["Cache-Control"] == "no-store"
    client.get("/doctor/worklist?flag=lesion")
    with app.app_context():
        event = db.session.scalars(db.select(AuditEvent).where(AuditEvent.action == "worklist_viewed")).all()[-1]
        assert event.detail == "flag=lesion: 1 of 1"


def worklist_thumbnail_side() -> int:
    from portal.scans import THUMBNAIL_SIDE

    return THUMBNAIL_SIDE


def test_filters_round_trip_through_the_query_string():
    filters = worklist.Filters.from_args({"state": "final", "class": "normal", "flag": "lesion", "from": "2026-01-02",
                                          "to": "2026-02-03", "patient": "4", "batch": "9", "sort": "date",
                                          "order": "asc", "page": "3", "per_page": "50"})
    assert worklist.Filters.from_args(filters.to_args()) == filters
    assert worklist.Filters().query_string() == ""
    with pytest.raises(worklist.FilterError):
        worklist.Filters.from_args({"patient": "-1"})
