"""Doctor feedback as labels: a sign-off records the doctor's reading (agree, the class they confirm, or not
assessable) with the report version; it is audited and exported without names (CSV by admin page and CLI)."""

import csv
import hashlib
import io
import os

import pytest
from conftest import csrf_token
from factories import gen_scan

from portal.models import AuditEvent, Report, Scan, db


def _report_id(app, name: str) -> int:
    with app.app_context():
        return db.session.scalar(db.select(Report.id).join(Scan).where(Scan.name == name))


def _sign(client, report_id: int, findings: str | None = "Read.", **form):
    token = csrf_token(client, f"/reports/{report_id}")
    written = {} if findings is None else {"findings": findings}
    return client.post(f"/reports/{report_id}/sign", data={"csrf_token": token, **written, **form})


@pytest.fixture()
def drafts(app, auth):
    gen_scan(app, "patient@example.org", "agree.png", cancer=0.9)
    gen_scan(app, "patient@example.org", "disagree.png", cancer=0.9)
    gen_scan(app, "patient@example.org", "ood.png", cancer=0.9, in_domain=False)
    gen_scan(app, "patient@example.org", "blurred.png", cancer=0.2)
    auth.login("doctor@example.org")
    return app


def test_a_sign_off_needs_the_doctors_reading_and_keeps_it(drafts, client):
    app = drafts
    agree, disagree, ood, blurred = (_report_id(app, n) for n in ("agree.png", "disagree.png", "ood.png",
                                                                    "blurred.png"))
    page = client.get(f"/reports/{agree}").get_data(as_text=True)
    assert 'id="assessment-agree"' in page and "I agree: Adenocarcinoma" in page
    refused = _sign(client, agree)
    assert refused.status_code == 409 and "Say whether you agree" in refused.get_data(as_text=True)
    assert _sign(client, disagree, assessment="disagree", confirmed_class="adenocarcinoma").status_code == 409
    assert _sign(client, ood, assessment="agree").status_code == 409  # the model gave no class to agree with
    assert 'id="assessment-agree"' not in client.get(f"/reports/{ood}").get_data(as_text=True)

    assert _sign(client, agree, assessment="agree").status_code == 302
    assert _sign(client, disagree, assessment="disagree", confirmed_class="squamous.cell.carcinoma").status_code == 302
    assert _sign(client, ood, assessment="disagree", confirmed_class="normal").status_code == 302
    # Without a findings field (the worklist's sign-and-next sends none): the PDF is rendered in the same flush.
    assert _sign(client, blurred, findings=None, assessment="not_assessable").status_code == 302
    with app.app_context():
        labels = {report.scan.name: (report.doctor_agrees, report.confirmed_class, report.status)
                  for report in db.session.scalars(db.select(Report))}
        assert labels == {"agree.png": (True, "adenocarcinoma", "final"),
                          "disagree.png": (False, "squamous.cell.carcinoma", "final"),
                          "ood.png": (None, "normal", "final"), "blurred.png": (None, "not_assessable", "final")}
        details = db.session.scalars(db.select(AuditEvent.detail).where(AuditEvent.action == "report_signed")).all()
        assert any("confirmed squamous.cell.carcinoma, agrees False" in d for d in details)
    shown = client.get(f"/reports/{disagree}").get_data(as_text=True)
    assert "Signing doctor's reading: Squamous cell carcinoma (the model said Adenocarcinoma)" in shown


def test_readings_export_without_names_for_admins_and_the_cli(drafts, client, auth, tmp_path):
    app = drafts
    assert _sign(client, _report_id(app, "agree.png"), assessment="agree").status_code == 302
    assert _sign(client, _report_id(app, "blurred.png"), assessment="not_assessable").status_code == 302
    assert client.get("/admin/feedback.csv").status_code in (302, 403)  # doctors: not theirs to export
    auth.logout()
    auth.login("admin@example.org")
    response = client.get("/admin/feedback.csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    records = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [(r["predicted_class"], r["confirmed_class"], r["doctor_agrees"]) for r in records] == [
        ("adenocarcinoma", "adenocarcinoma", "true"), ("normal", "not_assessable", "")]
    text = response.get_data(as_text=True)
    assert "Pat One" not in text and "patient@example.org" not in text and "Dr. One" not in text
    result = app.test_cli_runner().invoke(args=["feedback", "export"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith("report_id,report_version,scan_id")
    assert len(result.stdout.splitlines()) == 3
    # With the images, for `radassist retrain`: each one the bytes the model saw, under its sha256.
    folder = tmp_path / "images"
    result = app.test_cli_runner().invoke(args=["feedback", "export", "--out", str(tmp_path / "labels.csv"),
                                                "--images", str(folder)])
    assert result.exit_code == 0, result.output
    exported = list(csv.DictReader(io.StringIO((tmp_path / "labels.csv").read_text())))
    assert sorted(os.listdir(folder)) == sorted({r["image_sha256"] for r in exported})
    for name in os.listdir(folder):
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == name
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).where(AuditEvent.action == "feedback_exported")) == 3
