"""The portal in a real browser: Debian's Chromium driven by Playwright, against the whole stack running as it
does in production (model server process, gunicorn, a report worker process); the model is the tiny contract model.

Screenshots of every page land in test-artifacts/browser/.
"""

import functools
import glob
import hashlib
import http.server
import os
import re
import shutil
import threading
import time

import pytest
from conftest import FULL_DATA_CANDIDATES, REPO_ROOT, SAMPLE_DIR

from radassist.stack import PASSWORD, Stack

pytestmark = pytest.mark.slow
CHROMIUM = os.environ.get("RADASSIST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = os.path.join(REPO_ROOT, "test-artifacts", "browser")


def _ten_real_slices() -> list[str]:
    """Ten different test-split slices (the Kaggle set repeats some files; the portal refuses a repeat for the same
    patient), from ../shared/data when present (else the bundled sample), across all classes."""
    root = next((c for c in FULL_DATA_CANDIDATES if c and os.path.isdir(os.path.join(c, "test"))), SAMPLE_DIR)
    by_class = [sorted(glob.glob(os.path.join(folder, "*.png")))
                for folder in sorted(glob.glob(os.path.join(root, "test", "*")))]
    picked, seen = [], set()
    while len(picked) < 10 and any(by_class):
        for paths in by_class:
            if paths and len(picked) < 10:
                path = paths.pop(0)
                with open(path, "rb") as handle:
                    digest = hashlib.sha256(handle.read()).hexdigest()
                if digest not in seen:
                    seen.add(digest)
                    picked.append(path)
    return picked


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        if os.environ.get("RADASSIST_REQUIRE_BROWSER"):
            pytest.fail(f"{CHROMIUM} is missing (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def stack(contract_model_base, tmp_path_factory):
    """Model server (the tiny contract model) + `radassist portal` (gunicorn and one report worker) on fresh ports
    and a fresh database (radassist/stack.py)."""
    root = tmp_path_factory.mktemp("browser-stack")
    shutil.copytree(contract_model_base, root / "models")
    users = (("admin", "admin@example.org", "Ada Browser", None), ("doctor", "doctor@example.org", "Dr. Browser", None),
             ("patient", "patient@example.org", "Pat Browser", "doctor@example.org"),
             ("patient", "patient2@example.org", "Pam Other", "doctor@example.org"))
    running = Stack(str(root / "models"), str(root), report_workers=1, users=users,
                    env={"RADASSIST_MONITORING_DIR": str(root / "monitoring")}).start()
    os.makedirs(ARTIFACTS, exist_ok=True)
    yield {"url": running.url, "root": root}
    running.stop()


def _login(page, url: str, email: str) -> None:
    page.goto(f"{url}/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def _wait_until_loaded(image, timeout: float = 30) -> None:
    """Waits for an <img> to be decoded (polling from outside: the portal's CSP forbids string evaluation, which
    wait_for_function uses)."""
    deadline = time.time() + timeout
    while not image.evaluate("img => img.complete && img.naturalWidth > 0"):
        assert time.time() < deadline, "the image did not load"
        time.sleep(0.1)


def _shot(page, name: str) -> None:
    page.screenshot(path=os.path.join(ARTIFACTS, f"{name}.png"), full_page=True)


def _upload_and_wait(page, patient_name: str, files: list[str], shot: str | None) -> None:
    page.click("text=Patients")
    page.click(f"text={patient_name}")
    page.set_input_files("input[name=scans]", files)
    page.click("form.card button[type=submit]:has-text('Upload')")
    page.wait_for_selector("#batch-progress")
    if shot:
        _shot(page, f"{shot}-progress-started")
    # the class is set by the page's own polling script once the API says every job finished
    page.wait_for_selector("#batch-progress.complete", timeout=300_000)
    bar = page.locator("#batch-bar")
    assert bar.get_attribute("value") == bar.get_attribute("max") == str(len(files))


def test_doctor_bulk_uploads_watches_progress_opens_report_and_downloads_pdf(browser, stack):
    page = browser.new_page()
    _login(page, stack["url"], "doctor@example.org")
    slices = _ten_real_slices()
    _upload_and_wait(page, "Pat Browser", slices, shot="doctor-bulk")
    assert "10 of 10 finished (10 reports, 0 failed" in page.inner_text("#batch-summary")
    _shot(page, "doctor-bulk-progress-finished")

    page.click("#batch-jobs a >> nth=0")
    page.wait_for_selector("#predicted-class")
    text = page.inner_text("main")
    assert "Draft" in text and "Decision support, not a diagnosis" in text and "radassist version" in text
    if page.locator("#raw-output").count():  # the demo model withheld this slice: its output is one click away
        page.click("#raw-output summary")
    _wait_until_loaded(page.locator("img[alt='Grad-CAM overlay']"))
    _shot(page, "doctor-report-draft")
    with page.expect_download() as download:
        page.click("#download-pdf")
    path = download.value.path()
    with open(path, "rb") as handle:
        assert handle.read(5) == b"%PDF-"
    shutil.copy(path, os.path.join(ARTIFACTS, "report.pdf"))

    page.fill("textarea[name=findings]", "Mass in the left lower lobe; correlate clinically.")
    page.click("#sign-off")  # no reading recorded yet: the browser asks for it and nothing is sent
    assert page.locator("text=signed off by Dr. Browser").count() == 0
    page.check("#assessment-not-assessable")
    page.click("#sign-off")
    page.wait_for_selector("text=signed off by Dr. Browser")
    _shot(page, "doctor-report-final")
    page.close()


def test_patient_sees_only_their_released_reports(browser, stack):
    doctor = browser.new_page()
    _login(doctor, stack["url"], "doctor@example.org")
    _upload_and_wait(doctor, "Pam Other", _ten_real_slices()[:1], shot=None)
    doctor.click("#batch-jobs a >> nth=0")
    doctor.check("#assessment-not-assessable")
    doctor.click("#sign-off")
    doctor.wait_for_selector("text=signed off by Dr. Browser")
    others_report = doctor.url
    doctor.close()

    page = browser.new_page()
    _login(page, stack["url"], "patient@example.org")
    assert page.url.endswith("/me/")
    rows = page.locator("table.scans tbody tr")
    assert rows.count() == 10
    assert page.locator("table.scans a.report-link").count() == 1  # the one signed-off report; nine await the doctor
    assert page.locator("table.scans a.pdf-link").count() == 1 and page.locator("#about-reports").count() == 1
    assert page.locator("text=Awaiting review by your doctor").count() == 9
    _shot(page, "patient-home")
    page.click("table.scans a.report-link")
    text = page.inner_text("main")
    assert "Final" in text and "Mass in the left lower lobe" in text and "Pat Browser" in text
    assert page.locator("#sign-off").count() == 0
    _shot(page, "patient-report")
    response = page.goto(others_report)  # another patient's report: does not exist for this patient
    assert response.status == 404
    _shot(page, "patient-other-report-404")
    page.close()


def test_a_scan_outside_the_models_domain_is_reported_as_not_analysed(browser, stack, tmp_path):
    """A picture that is no CT slice: the report's headline says it was not analysed and why; the raw model
    output is there only on request, clearly marked."""
    from PIL import Image

    grey = tmp_path / "grey.png"
    Image.new("L", (320, 320), 128).save(grey)
    page = browser.new_page()
    _login(page, stack["url"], "doctor@example.org")
    _upload_and_wait(page, "Pam Other", [str(grey)], shot=None)
    page.click("#batch-jobs a >> nth=0")
    headline = page.inner_text("#predicted-class")
    assert headline == "Not analysed: outside the images this model was validated on"
    assert "blank or almost uniform" in page.inner_text("#ood-reason")
    assert not page.locator("#raw-output table.probabilities").is_visible()
    _shot(page, "doctor-report-not-analysed")
    page.click("#raw-output summary")
    assert page.locator("#raw-output table.probabilities").is_visible()
    assert "Raw model output, outside the validated domain" in page.inner_text("#raw-output")
    _shot(page, "doctor-report-not-analysed-raw-output")
    page.goto(f"{stack['url']}/doctor/patients")
    page.click("text=Pam Other")
    assert page.locator("text=Not analysed (outside the model's domain)").count() == 1
    page.close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_another_site_cannot_frame_the_portal(browser, stack, tmp_path):
    """Clickjacking: a page of another origin puts the portal in an iframe; the browser refuses to show it."""
    (tmp_path / "evil.html").write_text(f'<h1>Win a prize</h1><iframe id="victim" src="{stack["url"]}/login" '
                                        'width="800" height="600"></iframe>')
    evil = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler,
                                                                                directory=str(tmp_path)))
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{evil.server_address[1]}/evil.html")  # another port: another origin
        page.wait_for_timeout(2000)
        assert page.frame_locator("#victim").locator("input[name=password]").count() == 0
        _shot(page, "clickjacking-refused")
        direct = browser.new_page()
        direct.goto(f"{stack['url']}/login")
        assert direct.locator("input[name=password]").count() == 1  # the page itself is fine
        page.close()
        direct.close()
    finally:
        evil.shutdown()


def test_a_report_outlines_the_nodule_and_toggles_to_grad_cam(browser, stack, tmp_path):
    """The segmenter's lesion, outlined on the slice with its size in the lesion table; one click shows Grad-CAM
    in its place, another the outlines again."""
    from contract_model import disc_png

    nodule = tmp_path / "nodule.png"
    nodule.write_bytes(disc_png(12, centre=(70.0, 90.0), size=(160, 192)))
    page = browser.new_page()
    _login(page, stack["url"], "doctor@example.org")
    _upload_and_wait(page, "Pam Other", [str(nodule)], shot=None)
    page.click("#batch-jobs a >> nth=0")
    page.wait_for_selector("#segmentation")
    assert "1 lesion; largest 25.0 x 25.0 px" in page.inner_text("#segmentation-summary")
    assert "pixels" in page.inner_text("#size-units")
    cells = page.locator("#lesion-table tbody tr").first.locator("td").all_inner_texts()
    assert cells[:3] == ["1", "25.0", "25.0"]
    outline, gradcam = page.locator("#outline-image"), page.locator("#gradcam-image")
    _wait_until_loaded(outline)
    assert outline.is_visible() and not gradcam.is_visible()
    _shot(page, "doctor-report-lesion-outlines")
    page.click("label[for=show-gradcam]")
    assert gradcam.is_visible() and not outline.is_visible()
    _wait_until_loaded(gradcam)
    _shot(page, "doctor-report-gradcam")
    page.click("label[for=show-outlines]")
    assert outline.is_visible()
    page.close()


def _worklist_rows(page) -> list[dict]:
    return page.eval_on_selector_all(
        "#worklist tbody tr.wl-row",
        "rows => rows.map(r => ({scan: r.dataset.scan, rank: Number(r.dataset.rank), settled: r.dataset.settled,"
        " cancer: r.dataset.cancer === '' ? null : Number(r.dataset.cancer),"
        " selected: r.classList.contains('selected'), text: r.innerText}))")


def test_the_worklist_triages_filters_pages_and_reads_from_the_keyboard(browser, stack, tmp_path):
    """A doctor uploads 30 slices (real ones, blank pictures, discs the contract segmenter outlines) and reads them
    from the upload's worklist: most urgent first, filters and pages in the URL, j/k/Enter, then n/p and s in the
    report."""
    from contract_model import disc_png
    from PIL import Image

    files = _ten_real_slices()[1:]  # the first went to this patient in an earlier test (repeats are refused)
    for index in range(17):
        path = tmp_path / f"disc-{index:02d}.png"
        path.write_bytes(disc_png(6 + index % 8, centre=(50.0 + index, 60.0 + 2 * index), size=(160, 192),
                                  background=60 + index))
        files.append(str(path))
    for index in range(4):
        path = tmp_path / f"blank-{index}.png"
        Image.new("L", (300 + index, 300), 100 + index).save(path)
        files.append(str(path))
    page = browser.new_page()
    _login(page, stack["url"], "doctor@example.org")
    assert "/doctor/worklist" in page.url
    _upload_and_wait(page, "Pam Other", files, shot=None)
    page.click("#batch-worklist")
    page.wait_for_selector("#worklist")
    rows = _worklist_rows(page)
    assert len(rows) == 25 and "1–25 of 30 scans" in page.inner_text("#worklist-count")
    assert all(row["settled"] == "1" for row in rows)
    order = [(row["rank"], -(row["cancer"] if row["cancer"] is not None else -1)) for row in rows]
    assert order == sorted(order)  # out of domain, uncertain, then by cancer probability
    assert rows[0]["rank"] == 0 and "Out of domain" in rows[0]["text"]  # the blank pictures lead
    _shot(page, "worklist-batch")

    page.click("#page-next")
    page.wait_for_selector("#page-prev")
    assert "26–30 of 30" in page.inner_text("#worklist-count") and "page=2" in page.url and "batch=" in page.url
    assert len(_worklist_rows(page)) == 5

    page.select_option("select[name=flag]", "lesion")
    page.click("#apply-filters")
    page.wait_for_selector("#worklist")
    assert "flag=lesion" in page.url and "batch=" in page.url
    lesions = _worklist_rows(page)
    assert lesions and all("Lesion " in row["text"] for row in lesions)
    _shot(page, "worklist-lesions")
    page.reload()  # bookmarkable: the same URL gives the same list
    assert [row["scan"] for row in _worklist_rows(page)] == [row["scan"] for row in lesions]

    page.select_option("select[name=flag]", "")
    page.select_option("select[name=state]", "unsigned")
    page.click("#apply-filters")
    page.wait_for_selector("#worklist")
    listed = _worklist_rows(page)
    page.keyboard.press("j")
    page.keyboard.press("j")
    page.keyboard.press("k")
    page.keyboard.press("j")
    assert [row["selected"] for row in _worklist_rows(page)][:3] == [False, True, False]
    page.keyboard.press("Enter")
    page.wait_for_selector("#worklist-nav")
    second_report = page.url
    page.keyboard.press("n")
    page.wait_for_selector("#previous-report")
    third_report = page.url
    assert third_report != second_report
    page.keyboard.press("p")
    page.wait_for_selector("#worklist-nav")
    assert page.url == second_report
    _shot(page, "worklist-report-navigation")
    page.check("#assessment-not-assessable")
    page.locator("h1").click()  # the keys act outside form fields
    page.once("dialog", lambda dialog: dialog.accept())
    page.keyboard.press("s")
    page.wait_for_selector("text=signed off. It can no longer be changed")
    assert page.url == third_report  # signed, and on to what came next
    page.click("#back-to-worklist")
    page.wait_for_selector("#worklist")
    assert len(_worklist_rows(page)) == min(25, len(listed)) and listed[1]["scan"] not in \
        [row["scan"] for row in _worklist_rows(page)]
    page.set_viewport_size({"width": 820, "height": 1180})  # a tablet held upright
    _shot(page, "worklist-tablet")
    page.close()


_CANVAS_SUM = ("c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let s = 0;"
               " for (let i = 0; i < d.length; i += 4) s += d[i] + 2 * d[i + 1] + 3 * d[i + 2]; return s; }")


def _wait_ready(page, selector: str, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while page.locator(f"{selector}[data-ready='1']").count() == 0:
        assert time.time() < deadline, f"{selector} did not load"
        time.sleep(0.1)


def test_the_viewer_windows_zooms_overlays_measures_and_compares(browser, stack, tmp_path):
    """A DICOM CT slice in the report's viewer: presets and the window change the rendered pixels, so do zoom and
    the Grad-CAM overlay; the ruler measures in mm from the DICOM pixel spacing; another scan of the patient opens
    beside it."""
    from contract_model import disc_png
    from pydicom.data import get_testdata_file

    ct = tmp_path / "ct.dcm"
    shutil.copy(get_testdata_file("CT_small.dcm", download=False), ct)
    earlier = tmp_path / "earlier.png"
    earlier.write_bytes(disc_png(9, centre=(80.0, 70.0), size=(200, 200), background=70))
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    _login(page, stack["url"], "doctor@example.org")
    _upload_and_wait(page, "Pam Other", [str(ct), str(earlier)], shot=None)
    page.click("#batch-jobs a >> nth=0")
    _wait_ready(page, "#scan-viewer")
    canvas = page.locator("#scan-viewer canvas")
    status = page.locator("#scan-viewer .viewer-status")
    assert "W/L 1500/-600 HU" in status.inner_text()  # the lung window first
    lung = canvas.evaluate(_CANVAS_SUM)
    _shot(page, "viewer-lung-window")

    page.select_option("#scan-viewer select[name=preset]", "bone")
    assert "W/L 1800/400 HU" in status.inner_text()
    bone = canvas.evaluate(_CANVAS_SUM)
    assert bone != lung
    page.click("#scan-viewer button[data-tool=window]")  # drag right: a wider window
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + 100, box["y"] + 100)
    page.mouse.down()
    page.mouse.move(box["x"] + 180, box["y"] + 100, steps=5)
    page.mouse.up()
    assert canvas.evaluate(_CANVAS_SUM) != bone and "W/L 1800/400" not in status.inner_text()

    assert page.locator("#scan-viewer select[name=preset]").input_value() == "custom"
    page.keyboard.press("1")  # back to the first preset
    assert canvas.evaluate(_CANVAS_SUM) == lung
    assert page.locator("#scan-viewer select[name=preset]").input_value() == "lung"
    page.keyboard.press("+")
    page.keyboard.press("+")
    zoomed = canvas.evaluate(_CANVAS_SUM)
    assert zoomed != lung and "zoom" in status.inner_text()
    page.keyboard.press("g")  # the Grad-CAM overlay on
    assert page.locator("#scan-viewer input[name=overlay-gradcam]").is_checked()
    assert canvas.evaluate(_CANVAS_SUM) != zoomed
    _shot(page, "viewer-zoomed-gradcam")
    page.keyboard.press("g")
    page.keyboard.press("0")
    assert canvas.evaluate(_CANVAS_SUM) == lung

    page.keyboard.press("m")
    page.mouse.move(box["x"] + 60, box["y"] + 200)
    page.mouse.down()
    page.mouse.move(box["x"] + 300, box["y"] + 200, steps=8)
    page.mouse.up()
    assert re.search(r"ruler \d+\.\d mm", status.inner_text()), status.inner_text()
    _shot(page, "viewer-ruler-mm")

    compare = page.locator("#previous-scans button[data-compare-scan]")
    assert compare.count() >= 1  # Pam Other's other uploads
    compare.first.click()
    _wait_ready(page, "#compare-viewer .viewer")
    assert page.locator("#compare-viewer canvas").evaluate(_CANVAS_SUM) > 0
    _shot(page, "viewer-compare-side-by-side")
    page.set_viewport_size({"width": 820, "height": 1180})  # a tablet held upright: the viewports stack
    _shot(page, "viewer-tablet")
    page.close()


def _publish_monitored_windows(model_dir: str, folder: str) -> list[dict]:
    """Two windows scored by the monitoring code against the contract model's training images and published as
    `radassist monitor` publishes them: the training slices again (quiet), then a darker, padded export (alert)
    whose first ten calls doctors have read (TFMA's page over them, as the monitor's FeedbackEvaluator writes it)."""
    from test_monitoring import darker_and_padded, sample_images

    from components.monitoring import baseline, drift, labelled, publish
    from radassist.contract import ModelInfo

    predictor = baseline.Predictor(os.path.join(model_dir, "1"))
    reference = drift.distinct(predictor.columns(sample_images("train"), 1))
    published = []
    for day, images in ((1, sample_images("train")), (2, [darker_and_padded(i) for i in sample_images("train")])):
        window = drift.distinct(predictor.columns(images, 1))
        result = drift.window_report(reference, window, drift.Thresholds(permutations=200))
        result.pop("_anomalies"), result.pop("_schema")
        summary = publish.summary(result, model_name="radassist",
                                  window={"start": f"2026-11-0{day}T00:00:00+00:00",
                                          "end": f"2026-11-0{day + 1}T00:00:00+00:00"},
                                  counts={}, baseline={"model_version": 1, "images": len(reference["sha256"])},
                                  window_columns=window, baseline_columns=reference)
        readings = {digest: {"confirmed_class": name, "source": "doctor_upload"} for digest, name in
                    list(zip(window["sha256"], window["predicted_class"], strict=True))[:10]} if day == 2 else {}
        classes = ModelInfo.from_saved_model(os.path.join(model_dir, "1")).class_names
        rows, counts = labelled.labelled_rows(window, readings, {1: classes}, summary["window"]["label"])
        scored = labelled.evaluate(rows, os.path.join(folder, "tfma", str(day)))
        summary["feedback"] = labelled.summary(scored, counts)
        publish.publish_files(summary, publish.render_html(summary, reference, window),
                              labelled.render_html(scored, counts, "radassist", summary["window"]["label"], classes),
                              folder)
        published.append(summary)
    return published


def test_admin_sees_the_drift_alert_and_opens_the_windows_report(browser, stack):
    windows = _publish_monitored_windows(str(stack["root"] / "models" / "radassist"), str(stack["root"] / "monitoring"))
    assert [w["alert"] for w in windows] == [False, True], [w["verdict"] for w in windows]
    page = browser.new_page()
    _login(page, stack["url"], "admin@example.org")
    banner = page.locator("#drift-banner")
    assert banner.is_visible() and "Drift alert" in banner.inner_text()
    banner.locator("a").click()
    page.wait_for_selector("#chart-drift svg")
    assert page.locator("#windows tbody tr").count() == 2
    assert page.locator("#windows tr.alert").count() == 1
    assert page.locator("#chart-drift circle").count() >= 2 * 3  # each group's score in each window
    _shot(page, "monitoring")
    # The alerting window's point on the drift chart opens its report.
    page.locator(f"#chart-drift a[href$='{windows[1]['window']['label']}']").first.click()
    page.wait_for_load_state()
    assert "drift: " in page.locator(".verdict").inner_text()
    assert page.locator("svg[aria-label='baseline and window histograms']").count() >= 5
    _shot(page, "monitoring-window-report")
    # The table links the window's TFMA page over the calls doctors have read (all ten agree here).
    page.go_back()
    page.locator("#windows a", has_text="100% of 10").click()
    page.wait_for_selector("#slices")
    assert "model_version=1" in page.locator("#slices").inner_text()
    _shot(page, "monitoring-labelled-calls")
    page.close()
