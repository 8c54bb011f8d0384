"""What a patient reads: an explanation of what a report is and is not, released reports only with their PDF, and
never a class for a scan the model flagged out of domain or uncertain (list and report page alike)."""

import re

from factories import gen_scan

from portal.models import Report, Scan, db


def test_the_patient_page_explains_reports_and_hides_withheld_classes(app, auth, client):
    gen_scan(app, "patient@example.org", "clear.png", cancer=0.9, signed=True)
    gen_scan(app, "patient@example.org", "withheld.png", cancer=0.8, in_domain=False, signed=True)
    gen_scan(app, "patient@example.org", "unsure.png", cancer=0.7, uncertain=True, signed=True)
    gen_scan(app, "patient@example.org", "draft.png", cancer=0.95)
    auth.login("patient@example.org")
    page = client.get("/me/").get_data(as_text=True)
    assert "What a report is" in page and "What it is not" in page
    rows = {name: row for row in re.findall(r"<tr>.*?</tr>", page, re.S)
            for name in ("clear.png", "withheld.png", "unsure.png", "draft.png") if name in row}
    assert "Result: Adenocarcinoma" in rows["clear.png"]
    for name in ("withheld.png", "unsure.png"):
        assert "Report ready" in rows[name] and "Result:" not in rows[name] and "carcinoma" not in rows[name]
        assert "pdf-link" in rows[name]
    assert "Awaiting review by your doctor" in rows["draft.png"] and "report-link" not in rows["draft.png"]
    with app.app_context():
        withheld = db.session.scalar(db.select(Report.id).join(Scan).where(Scan.name == "withheld.png"))
        draft = db.session.scalar(db.select(Report.id).join(Scan).where(Scan.name == "draft.png"))
    report_page = client.get(f"/reports/{withheld}").get_data(as_text=True)
    assert "Read by your doctor" in report_page and "carcinoma" not in report_page.lower()
    assert 'class="probabilities"' not in report_page and 'id="gradcam-image"' not in report_page
    assert "&#34;gradcam&#34;" not in report_page  # no Grad-CAM layer in the viewer either
    assert client.get(f"/reports/{withheld}/report.pdf").status_code == 200
    assert client.get(f"/reports/{draft}").status_code == 404  # a doctor's unreleased draft
