"""Reports end to end: uploads queue jobs, a real worker calls a real model server, doctors sign off.

The model server is a real process serving the tiny contract model (tests/contract_model.py: every signature and
output of the real one, behaviour simple to assert on); the worker runs in the test process against it. Queues are
the database (embedded default) and the real Redis at 127.0.0.1:6379.
"""

import base64
import datetime as dt
import glob
import io
import json
import os
import pathlib
import re
import shutil
import time
import uuid
import zlib

import numpy as np
import pytest
from conftest import SAMPLE_DIR, csrf_token, upload_files, user_id
from contract_model import CLASS_NAMES, DISPLAY_NAMES
from PIL import Image

from portal import fhir
from portal.jobs import DatabaseQueue, RedisQueue, enqueue_scans
from portal.models import AuditEvent, Batch, ImmutableReport, Job, Report, Scan, ServiceStatus, User, db
from portal.worker import Worker
from serving.client import ServingClient


@pytest.fixture()
def reporting_app(app, model_server):
    app.config.update(MODEL_SERVER=model_server.address, JOB_RETRY_SECONDS=0.05, JOB_MAX_ATTEMPTS=2)
    return app


def slices(count: int) -> list[tuple[str, bytes]]:
    paths = sorted(glob.glob(os.path.join(SAMPLE_DIR, "test", "*", "*.png")))[:count]
    return [(os.path.basename(p), pathlib.Path(p).read_bytes()) for p in paths]


def model_info(model_server) -> dict:
    """The served model's info file (what it was trained with: its review line, its gate)."""
    (path,) = glob.glob(os.path.join(model_server.base, "radassist", "*", "assets.extra", "radassist_model.json"))
    with open(path) as handle:
        return json.load(handle)


def in_domain_slice(model_server) -> tuple[str, bytes]:
    """A real sample slice the served model analyses (inside its domain), for tests about released drafts."""
    candidates = slices(40)
    with ServingClient(model_server.address, "radassist", timeout=60) as model:
        predictions = model.predict([data for _, data in candidates])
    return next(item for item, prediction in zip(candidates, predictions, strict=True) if prediction.in_domain)


def grey_png(side: int = 256) -> bytes:
    """A uniform grey picture: decodable, accepted at intake, and nothing like a CT slice."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((side, side), 128, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def pdf_text(pdf: bytes) -> str:
    """The text drawing operators of a PDF, its compressed content streams inflated."""
    streams = re.findall(rb"stream\r?\n(.*?)\r?\nendstream", pdf, re.S)
    inflated = []
    for stream in streams:
        try:
            inflated.append(zlib.decompress(stream))
        except zlib.error:
            inflated.append(stream)
    return b"\n".join(inflated).decode("latin-1")


def make_worker(app, address: str, queue=None, name: str = "test-worker", retries: int = 1) -> Worker:
    client = ServingClient(address, app.config["MODEL_NAME"], timeout=60, retries=retries, backoff=0.05)
    return Worker(app, client, queue=queue or DatabaseQueue(poll_seconds=0.01), name=name, sweep_seconds=0)


def drain(app, worker: Worker, timeout: float = 180) -> None:
    """Steps ``worker`` until no job is queued or running."""
    deadline = time.time() + timeout
    with app.app_context():
        while time.time() < deadline:
            worker.step(timeout=0.05)
            db.session.rollback()
            if not db.session.scalar(db.select(Job.id).where(Job.status.in_(["queued", "running"])).limit(1)):
                return
        raise TimeoutError("jobs still pending")


def doctor_uploads(app, auth, client, count: int) -> tuple[int, int]:
    """Doctor uploads ``count`` real slices for their patient; returns (patient id, batch id)."""
    patient_id = user_id(app, "patient@example.org")
    auth.login("doctor@example.org")
    page = f"/doctor/patients/{patient_id}"
    response = upload_files(client, page, f"{page}/scans", slices(count) + [("notes.txt", b"not a scan")])
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert f"{count} accepted, 1 rejected" in body and 'id="batch-progress"' in body
    with app.app_context():
        return patient_id, db.session.scalar(db.select(Batch.id).order_by(Batch.id.desc()))


def test_bulk_upload_becomes_draft_reports_with_overlay_and_pdf(reporting_app, auth, client, model_server):
    app = reporting_app
    patient_id, batch_id = doctor_uploads(app, auth, client, 3)
    before = client.get(f"/api/batches/{batch_id}").get_json()
    assert (before["total"], before["finished"], before["complete"]) == (3, 0, False)

    drain(app, make_worker(app, model_server.address))

    progress = client.get(f"/api/batches/{batch_id}").get_json()
    assert (progress["finished"], progress["counts"]["done"], progress["complete"]) == (3, 3, True)
    assert all(job["report_url"] for job in progress["jobs"])
    with app.app_context():
        for report in db.session.scalars(db.select(Report)):
            scan = report.scan
            assert report.predicted_class in CLASS_NAMES and report.version == 1
            assert sum(report.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
            assert report.model_name == "radassist" and report.model_version >= 1
            # The model's own review line (chosen on validation data when it was trained) flags "uncertain".
            assert report.uncertain == (report.confidence < model_info(model_server)["uncertain_below"])
            assert report.in_domain is not None and report.ood_score is not None
            store = app.config["SCAN_STORE"]
            overlay = Image.open(os.path.join(store, report.overlay_sha256[:2], report.overlay_sha256))
            assert overlay.size == (scan.width, scan.height) and overlay.mode == "RGB"
        report_id = report.id
        model_version, predicted = report.model_version, report.predicted_class

    page = client.get(f"/reports/{report_id}").get_data(as_text=True)
    for text in ("Draft", DISPLAY_NAMES[CLASS_NAMES.index(predicted)],
                 f"radassist version {model_version}", "Decision support, not a diagnosis", "Pat One",
                 "Adenocarcinoma", "Squamous cell carcinoma", "Large cell carcinoma", "Normal"):
        assert text in page
    assert client.get(f"/reports/{report_id}/overlay.jpg").data.startswith(b"\xff\xd8\xff")
    pdf = client.get(f"/reports/{report_id}/report.pdf")
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf" and pdf.data.startswith(b"%PDF")
    patient_page = client.get(f"/doctor/patients/{patient_id}").get_data(as_text=True)
    assert patient_page.count("v1 draft") == 3


def test_the_worklist_fills_in_as_the_worker_reports(reporting_app, auth, client, model_server):
    """Uploaded scans are in the batch's worklist at once (being analysed); the worker's reports carry the cancer
    probability the model's negative classes give and the segmenter's lesion count, and the rows settle."""
    app = reporting_app
    _, batch_id = doctor_uploads(app, auth, client, 3)
    page = client.get(f"/doctor/worklist?batch={batch_id}").get_data(as_text=True)
    assert page.count('data-settled="0"') == 3 and "Being analysed" in page
    drain(app, make_worker(app, model_server.address))
    with app.app_context():
        reports = db.session.scalars(db.select(Report)).all()
        scan_ids = [report.scan_id for report in reports]
        for report in reports:
            assert report.cancer_probability == pytest.approx(1 - report.probabilities["normal"], abs=1e-5)
            assert report.lesion_count is not None and report.lesion_count >= 0
    query = "&".join(f"scan={scan_id}" for scan_id in scan_ids)
    rows = client.get(f"/doctor/worklist/rows?{query}").get_json()["rows"]
    assert len(rows) == 3 and all(row["settled"] for row in rows)
    page = client.get(f"/doctor/worklist?batch={batch_id}").get_data(as_text=True)
    assert page.count('data-settled="1"') == 3 and "cancer " in page


def _sign(client, report_id: int, findings: str, assessment: str = "not_assessable", confirmed_class: str = ""):
    token = csrf_token(client, f"/reports/{report_id}")
    return client.post(f"/reports/{report_id}/sign", data={"csrf_token": token, "findings": findings,
                                                            "assessment": assessment,
                                                            "confirmed_class": confirmed_class})


def test_sign_off_makes_a_report_immutable_and_amendments_are_new_versions(reporting_app, auth, client,
                                                                           model_server):
    app = reporting_app
    doctor_uploads(app, auth, client, 1)
    drain(app, make_worker(app, model_server.address))
    with app.app_context():
        report_id = db.session.scalar(db.select(Report.id))

    token = csrf_token(client, f"/reports/{report_id}")
    client.post(f"/reports/{report_id}/findings", data={"csrf_token": token, "findings": "Spiculated mass."})
    assert _sign(client, report_id, "Spiculated mass, right upper lobe.").status_code == 302
    page = client.get(f"/reports/{report_id}").get_data(as_text=True)
    assert "Final" in page and "signed off by Dr. One" in page and 'id="sign-off"' not in page

    # a final report cannot be edited, through the pages or through the model
    token = csrf_token(client, f"/reports/{report_id}")
    edit = client.post(f"/reports/{report_id}/findings", data={"csrf_token": token, "findings": "changed"})
    assert edit.status_code == 409 and "This report is final. Amend it" in edit.get_data(as_text=True)
    with app.app_context():
        report = db.session.get(Report, report_id)
        assert report.findings == "Spiculated mass, right upper lobe." and report.status == "final"
        report.findings = "tampered"
        with pytest.raises(ImmutableReport):
            db.session.commit()
        db.session.rollback()
        with pytest.raises(ImmutableReport):
            db.session.delete(db.session.get(Report, report_id))
            db.session.commit()
        db.session.rollback()

    token = csrf_token(client, f"/reports/{report_id}")
    amended = client.post(f"/reports/{report_id}/amend", data={"csrf_token": token, "reason": "lobe corrected"})
    amendment_id = int(amended.headers["Location"].rsplit("/", 1)[1])
    assert _sign(client, amendment_id, "Spiculated mass, right lower lobe.").status_code == 302
    with app.app_context():
        original, amendment = db.session.get(Report, report_id), db.session.get(Report, amendment_id)
        assert (amendment.version, amendment.supersedes_id, amendment.status) == (2, report_id, "final")
        assert original.findings == "Spiculated mass, right upper lobe." and original.status == "final"
        assert fhir.report_status(original) == "final" and fhir.report_status(amendment) == "amended"
    assert "a newer version exists (v2)" in client.get(f"/reports/{report_id}").get_data(as_text=True)
    token = csrf_token(client, f"/reports/{report_id}")
    again = client.post(f"/reports/{report_id}/amend", data={"csrf_token": token, "reason": "twice"})
    assert again.status_code == 409  # only the newest version is amended
    with app.app_context():
        actions = [e.action for e in db.session.scalars(db.select(AuditEvent))]
        for action in ("report_edited", "report_signed", "report_amended", "report_viewed"):
            assert action in actions


def test_fhir_export_is_a_valid_r4_diagnostic_report(reporting_app, auth, client, model_server):
    from fhir.resources.R4B.diagnosticreport import DiagnosticReport

    app = reporting_app
    patient_id, _ = doctor_uploads(app, auth, client, 1)
    drain(app, make_worker(app, model_server.address))
    with app.app_context():
        report_id = db.session.scalar(db.select(Report.id))
    draft = client.get(f"/api/reports/{report_id}/fhir")
    assert draft.status_code == 200 and draft.mimetype == "application/fhir+json"
    assert draft.get_json()["status"] == "preliminary" and "performer" not in draft.get_json()
    _sign(client, report_id, "No mass.")
    document = client.get(f"/api/reports/{report_id}/fhir").get_json()

    parsed = DiagnosticReport.model_validate(document)  # the R4(B) schema: types, cardinalities, enums
    assert parsed.status == "final"
    assert document["subject"]["reference"] == f"Patient/{patient_id}"
    assert document["performer"][0]["reference"] == f"Practitioner/{user_id(app, 'doctor@example.org')}"
    contained = {resource["id"]: resource for resource in document["contained"]}
    for reference in document["result"]:  # every result points at a contained Observation, by its model
        observation = contained[reference["reference"].lstrip("#")]
        lesion = reference["reference"].startswith("#lesion")
        assert observation["resourceType"] == "Observation"
        assert observation["device"]["reference"] == ("#segmenter" if lesion else "#model")
    values = [contained[r["reference"][1:]]["valueQuantity"]["value"] for r in document["result"]
              if r["reference"].startswith("#probability-")]
    assert len(values) == len(CLASS_NAMES) and sum(values) == pytest.approx(1.0, abs=1e-4)
    others = {r["reference"] for r in document["result"]} - {f"#probability-{i}" for i in range(4)}
    assert {"#ood-score"} == {name for name in others if not name.startswith("#lesion")}
    assert contained["segmenter"]["deviceName"][0]["name"] == "radassist-seg"
    assert contained["model"]["version"][0]["value"].isdigit()
    assert document["conclusionCode"][0]["coding"][0]["code"] in CLASS_NAMES
    assert "not a diagnosis" in document["conclusion"] and "No mass." in document["conclusion"]
    assert base64.b64decode(document["presentedForm"][0]["data"]).startswith(b"%PDF")


def test_other_users_get_404_on_every_report_url_and_patients_see_only_released_reports(
        reporting_app, auth, client, model_server):
    app = reporting_app
    _, batch_id = doctor_uploads(app, auth, client, 1)
    drain(app, make_worker(app, model_server.address))
    with app.app_context():
        report_id, scan_id = db.session.execute(db.select(Report.id, Report.scan_id)).one()
    urls = [f"/reports/{report_id}", f"/reports/{report_id}/overlay.jpg", f"/reports/{report_id}/report.pdf",
            f"/api/reports/{report_id}/fhir", f"/batches/{batch_id}", f"/api/batches/{batch_id}",
            f"/reports/{report_id}/lesion-mask.png", f"/reports/{report_id}/outline.png",
            *(f"/scans/{scan_id}/{name}" for name in ("viewer.json", "pixels.bin", "rendered.png", "thumbnail.png"))]
    auth.logout()
    for outsider in ("other@example.org", "patient2@example.org", "admin@example.org"):
        auth.login(outsider)
        for url in urls:
            assert client.get(url).status_code == 404, (outsider, url)
        for action in ("sign", "findings", "amend"):
            token = csrf_token(client, "/password")
            assert client.post(f"/reports/{report_id}/{action}", data={"csrf_token": token}).status_code in (403, 404)
        token = csrf_token(client, "/password")
        assert client.post(f"/scans/{scan_id}/analyse", data={"csrf_token": token}).status_code in (403, 404)
        auth.logout()
    auth.login("patient@example.org")  # the patient: a draft is not released to them
    assert client.get(f"/reports/{report_id}").status_code == 404
    assert "Awaiting review by your doctor" in client.get("/me/").get_data(as_text=True)
    auth.logout()
    auth.login("doctor@example.org")
    _sign(client, report_id, "Reviewed.")
    auth.logout()
    auth.login("patient@example.org")
    page = client.get(f"/reports/{report_id}")
    assert page.status_code == 200 and "Reviewed." in page.get_data(as_text=True)
    assert 'id="sign-off"' not in page.get_data(as_text=True)
    token = csrf_token(client, f"/reports/{report_id}")
    assert client.post(f"/reports/{report_id}/amend", data={"csrf_token": token, "reason": "x"}).status_code == 403


def test_patient_self_submission_gets_a_draft_marked_not_reviewed(reporting_app, auth, client, model_server):
    app = reporting_app
    app.config["REPORT_UNCERTAIN_BELOW"] = 0.0  # a configured line overrides the model's: nothing is uncertain
    auth.login("patient@example.org")
    assert upload_files(client, "/me/", "/me/scans", [in_domain_slice(model_server)]).status_code == 200
    drain(app, make_worker(app, model_server.address))
    with app.app_context():
        report_id = db.session.scalar(db.select(Report.id))
    page = client.get(f"/reports/{report_id}").get_data(as_text=True)
    assert "Submitted by the patient, not yet reviewed by a doctor" in page and "Draft" in page
    assert "not yet reviewed" in client.get("/me/").get_data(as_text=True)


def test_out_of_domain_scan_is_not_analysed_everywhere_the_report_goes(reporting_app, auth, client, model_server):
    """A scan the model's gate flags gets a "Not analysed" report: headline with the reason, raw output only on
    request, the flag in the PDF, the FHIR export and the admin page; the patient only reads that it awaits review."""
    from fhir.resources.R4B.diagnosticreport import DiagnosticReport

    from portal.reports import NOT_ANALYSED

    app = reporting_app
    patient_id = user_id(app, "patient@example.org")
    auth.login("doctor@example.org")
    page = f"/doctor/patients/{patient_id}"
    assert upload_files(client, page, f"{page}/scans", [("grey.png", grey_png())]).status_code == 200
    drain(app, make_worker(app, model_server.address))
    with app.app_context():
        report = db.session.scalar(db.select(Report))
        report_id = report.id
        assert report.in_domain is False and report.ood_reason == "blank" and report.out_of_domain
    view = client.get(f"/reports/{report_id}").get_data(as_text=True)
    headline = re.search(r'<h2 id="predicted-class">(.*?)</h2>', view, re.S).group(1)
    assert headline == NOT_ANALYSED
    assert "the image is blank or almost uniform" in view and 'id="raw-output"' in view
    assert "Not analysed (outside the model" in client.get(page).get_data(as_text=True)
    pdf = client.get(f"/reports/{report_id}/report.pdf").data
    assert NOT_ANALYSED.upper() in pdf_text(pdf) and "Predicted class" not in pdf_text(pdf)
    document = client.get(f"/api/reports/{report_id}/fhir").get_json()
    DiagnosticReport.model_validate(document)
    assert document["conclusionCode"][0]["coding"][0]["code"] == "out-of-domain"
    assert document["conclusion"].startswith(NOT_ANALYSED)
    contained = {resource["id"]: resource for resource in document["contained"]}
    assert contained["probability-0"]["interpretation"][0]["coding"][0]["code"] == "IND"
    assert contained["ood-score"]["interpretation"][0]["coding"][0]["code"] == "H"
    auth.logout()
    auth.login("patient@example.org")  # a self-submitted scan the model withholds: awaiting the doctor
    assert upload_files(client, "/me/", "/me/scans", [("mine.png", grey_png(300))]).status_code == 200
    drain(app, make_worker(app, model_server.address))
    with app.app_context():
        own = db.session.scalar(db.select(Report).where(Report.id != report_id))
        assert own.scan.self_submitted and own.out_of_domain
        own_id = own.id
    assert client.get(f"/reports/{own_id}").status_code == 404
    assert "Awaiting review by your doctor" in client.get("/me/").get_data(as_text=True)
    auth.logout()
    auth.login("admin@example.org")
    admin = client.get("/admin/models").get_data(as_text=True)
    assert re.search(r'<td class="flag-ood">2 \(100\.0%\)</td>', admin)
    assert "reports out of domain</th><td>2" in admin


def test_a_model_server_outage_delays_reports_and_never_fails_them(reporting_app, auth, client, model_server):
    app = reporting_app
    app.config["MODEL_OUTAGE_MAX_WAIT"] = 0.2
    _, batch_id = doctor_uploads(app, auth, client, 2)
    dead = make_worker(app, "127.0.0.1:1", retries=0)  # nothing listens on port 1
    with app.app_context():
        deadline = time.time() + 4  # many outage rounds: far more than JOB_MAX_ATTEMPTS retries would allow
        while time.time() < deadline:
            dead.step(timeout=0.05)
            db.session.rollback()
        dead.flush()  # the batch still at the (dead) model when the loop ended comes back too
    progress = client.get(f"/api/batches/{batch_id}").get_json()
    assert not progress["complete"] and progress["counts"]["queued"] == 2
    for job in progress["jobs"]:
        assert job["attempts"] == 0 and job["error"].startswith("waiting for the model server")
    assert "waiting for the model server" in client.get(f"/batches/{batch_id}").get_data(as_text=True)

    # the server is back: the same jobs finish without anyone asking again
    drain(app, make_worker(app, model_server.address))
    progress = client.get(f"/api/batches/{batch_id}").get_json()
    assert progress["complete"] and progress["counts"]["done"] == 2
    assert all(job["attempts"] == 1 for job in progress["jobs"])


def test_a_report_that_cannot_be_written_is_retried_and_the_worker_lives(reporting_app, auth, client,
                                                                         model_server, tmp_path):
    app = reporting_app
    app.config["JOB_MAX_ATTEMPTS"] = 3
    patient_id, batch_id = doctor_uploads(app, auth, client, 1)
    # A blob store that can read the scan but write nothing new: every other folder name is taken by a file.
    broken_root = tmp_path / "broken-store"
    shutil.copytree(app.config["SCAN_STORE"], broken_root)
    for prefix in range(256):
        folder = broken_root / f"{prefix:02x}"
        if not folder.exists():
            folder.write_bytes(b"")
    worker = make_worker(app, model_server.address)
    healthy_store, worker.store = worker.store, type(worker.store)(str(broken_root))
    with app.app_context():
        deadline = time.time() + 120
        while time.time() < deadline:
            worker.step(timeout=0.05)
            db.session.rollback()
            job = db.session.scalar(db.select(Job).where(Job.batch_id == batch_id))
            if job.attempts >= 1 and job.status == "queued":
                break
        assert job.status == "queued" and job.last_error.startswith("writing the report")
        assert db.session.scalar(db.select(db.func.count()).select_from(Report)) == 0
    worker.store = healthy_store  # the store is back: the same worker writes the report on the retry
    drain(app, worker)
    progress = client.get(f"/api/batches/{batch_id}").get_json()
    assert progress["counts"]["done"] == 1 and progress["jobs"][0]["attempts"] == 2
    assert "v1 draft" in client.get(f"/doctor/patients/{patient_id}").get_data(as_text=True)


def test_a_failed_analysis_can_be_asked_for_again(reporting_app, auth, client, model_server):
    app = reporting_app
    _, batch_id = doctor_uploads(app, auth, client, 1)
    with app.app_context():
        job = db.session.scalar(db.select(Job).where(Job.batch_id == batch_id))
        job.status, job.last_error, scan_id = "failed", "the model rejected this image: test", job.scan_id
        db.session.commit()
    patient_page = f"/doctor/patients/{user_id(app, 'patient@example.org')}"
    assert "Analyse again" in client.get(patient_page).get_data(as_text=True)
    again = client.post(f"/scans/{scan_id}/analyse", data={"csrf_token": csrf_token(client, patient_page)})
    assert again.status_code == 302 and "/batches/" in again.headers["Location"]
    drain(app, make_worker(app, model_server.address))
    with app.app_context():
        assert db.session.scalar(db.select(Report.scan_id)) == scan_id


def _two_scans(app) -> tuple[list, User, User]:
    """Two stored scans of the doctor's patient (call inside an app context)."""
    from portal.intake import AcceptedScan, intake_stream
    from portal.storage import store_from_uri
    from portal.uploads import _save

    doctor = db.session.scalar(db.select(User).where(User.email == "doctor@example.org"))
    patient = db.session.scalar(db.select(User).where(User.email == "patient@example.org"))
    accepted = [item for item in intake_stream(slices(2)) if isinstance(item, AcceptedScan)]
    store = store_from_uri(app.config["SCAN_STORE"])
    scans = [_save(store, item, patient, doctor, False) for item in accepted]
    db.session.commit()
    return scans, doctor, patient


def test_queued_jobs_survive_a_restart_and_a_dead_workers_job_is_taken_over(reporting_app, model_server):
    """Embedded default (database queue): jobs written before a 'restart' are done by a new app and worker;
    a job claimed by a worker that died is given to another once its lease runs out."""
    from portal import create_app

    app = reporting_app
    with app.app_context():
        scans, doctor, patient = _two_scans(app)
        batch = enqueue_scans(scans, doctor, patient, DatabaseQueue())
        batch_id = batch.id
        from portal.jobs import JobSettings, claim

        stuck = claim([batch.jobs[0].id], "worker-that-dies", JobSettings(lease_seconds=0.2))
        assert stuck and stuck[0].status == "running"
        db.session.remove()
    time.sleep(0.3)
    restarted = create_app(dict(app.config), environment="testing")  # a fresh process's view of the same data
    drain(restarted, make_worker(restarted, model_server.address, name="after-restart"))
    with restarted.app_context():
        jobs = db.session.scalars(db.select(Job).where(Job.batch_id == batch_id).order_by(Job.id)).all()
        assert [job.status for job in jobs] == ["done", "done"]
        assert jobs[0].attempts == 2 and {job.worker for job in jobs} == {"after-restart"}
        assert db.session.scalar(db.select(db.func.count()).select_from(Report)) == 2


@pytest.fixture()
def redis_queue():
    redis = pytest.importorskip("redis")
    queue = RedisQueue("redis://127.0.0.1:6379/0", name=f"radassist-test:{uuid.uuid4().hex}")
    try:
        queue.redis.ping()
    except redis.ConnectionError as error:
        pytest.skip(f"Redis not reachable at 127.0.0.1:6379: {error}")
    yield queue
    keys = list(queue.redis.scan_iter(queue.ready.rsplit(":", 1)[0] + ":*"))
    if keys:
        queue.redis.delete(*keys)


def test_redis_queue_survives_a_worker_crash_and_a_redis_restart(reporting_app, model_server, redis_queue):
    app = reporting_app
    with app.app_context():
        scans, doctor, patient = _two_scans(app)
        batch_id = enqueue_scans(scans, doctor, patient, redis_queue).id
        assert redis_queue.redis.llen(redis_queue.ready) == 2
        # a worker takes both messages and dies before claiming them in the database
        taken = redis_queue.take("crashing-worker", limit=8, timeout=1)
        assert len(taken) == 2 and redis_queue.redis.llen(redis_queue.ready) == 0
    # the same worker restarted gives its held messages back and does the work
    restarted = make_worker(app, model_server.address, queue=redis_queue, name="crashing-worker")
    drain(app, restarted)
    with app.app_context():
        statuses = db.session.scalars(db.select(Job.status).where(Job.batch_id == batch_id)).all()
        assert statuses == ["done", "done"]

        # Redis loses everything (it keeps nothing on disk): the database still knows what is queued
        scans, doctor, patient = _two_scans(app)
        batch_id = enqueue_scans(scans, doctor, patient, redis_queue).id
    for key in redis_queue.redis.scan_iter(redis_queue.ready.rsplit(":", 1)[0] + ":*"):
        redis_queue.redis.delete(key)
    worker = make_worker(app, model_server.address, queue=redis_queue, name="other-worker")
    worker.settings = type(worker.settings)(**{**worker.settings.__dict__, "redispatch_seconds": 0})
    drain(app, worker)
    with app.app_context():
        statuses = db.session.scalars(db.select(Job.status).where(Job.batch_id == batch_id)).all()
        assert statuses == ["done", "done"]


def test_report_overlay_lines_up_with_the_padded_square_the_model_saw():
    from portal.reports import overlay_image

    wide = np.zeros((100, 200), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(wide).save(buffer, format="PNG")
    heat = np.zeros((14, 14), dtype=np.float32)
    heat[:, 10:] = 1.0  # hot on the right of the square -> the right of the (centred) wide image
    overlay = np.asarray(Image.open(io.BytesIO(overlay_image(buffer.getvalue(), heat))))
    assert overlay.shape == (100, 200, 3)
    assert overlay[:, 180:, 0].mean() > 50 and overlay[:, :100].mean() < 3  # red on the right; JPEG: near 0
    # A model that cropped to the body says where: the map lies on that square (here rows 20-80, columns 50-110).
    hot_left = np.zeros((28, 28), dtype=np.float32)
    hot_left[:, :14] = 1.0
    boxed = np.asarray(Image.open(io.BytesIO(overlay_image(buffer.getvalue(), hot_left, (20.0, 50.0, 80.0, 110.0)))))
    assert boxed[25:75, 55:78, 0].mean() > 50  # the left half of the box
    assert boxed[:, 115:].mean() < 3 and boxed[:, :45].mean() < 3 and boxed[:15].mean() < 3  # nothing outside it
    # A deskewed square (turned 90 degrees clockwise on screen): its left half lies on the top half of the box.
    turned = np.asarray(Image.open(io.BytesIO(overlay_image(buffer.getvalue(), hot_left, (20.0, 50.0, 80.0, 110.0),
                                                            90.0))))
    assert turned[25:47, 55:105, 0].mean() > 50 and turned[55:75, 55:105].mean() < 3


def test_admin_models_page_lists_served_versions_and_usage(reporting_app, auth, client, model_server):
    app = reporting_app
    doctor_uploads(app, auth, client, 1)
    worker = make_worker(app, model_server.address)
    drain(app, worker)
    auth.logout()
    auth.login("admin@example.org")
    assert "No report worker has reported" in client.get("/admin/models").get_data(as_text=True)
    with app.app_context():
        worker.report_model_status()  # what every worker's status thread does every MODEL_STATUS_SECONDS
    page = client.get("/admin/models").get_data(as_text=True)
    assert "AVAILABLE" in page and "jobs done</th><td>1" in page and "As reported by test-worker" in page
    assert re.search(r"<td>radassist</td><td>\d+</td><td>AVAILABLE</td>", page)
    assert re.search(r"<td>radassist-seg</td><td>\d+</td><td>AVAILABLE</td>", page)  # the segmenter beside it
    with app.app_context():
        lone = ServingClient(model_server.address, timeout=30, retries=0, segmentation_model_name="not-deployed")
        Worker(app, lone, queue=DatabaseQueue(poll_seconds=0.01), name="test-worker").report_model_status()
    assert "The segmentation model not-deployed did not answer" in client.get("/admin/models").get_data(as_text=True)
    with app.app_context():
        make_worker(app, "127.0.0.1:1", retries=0).report_model_status()
    down = client.get("/admin/models")
    assert down.status_code == 200 and "The model server did not answer" in down.get_data(as_text=True)
    with app.app_context():
        row = db.session.get(ServiceStatus, "model_server")
        row.updated_at -= dt.timedelta(minutes=10)
        db.session.commit()
    assert "No report worker has reported since" in client.get("/admin/models").get_data(as_text=True)
    auth.logout()
    auth.login("doctor@example.org")
    assert client.get("/admin/models").status_code == 403


def test_a_large_scans_overlay_is_drawn_at_picture_size_and_still_lines_up():
    from portal.reports import OVERLAY_SIDE, overlay_image

    buffer = io.BytesIO()
    Image.fromarray(np.full((1000, 2000), 60, np.uint8)).save(buffer, format="PNG")
    hot_left = np.zeros((28, 28), dtype=np.float32)
    hot_left[:, :14] = 1.0
    overlay = np.asarray(Image.open(io.BytesIO(overlay_image(buffer.getvalue(), hot_left,
                                                             (100.0, 400.0, 900.0, 1200.0)))))
    assert overlay.shape[:2] == (OVERLAY_SIDE // 2, OVERLAY_SIDE)
    scale = OVERLAY_SIDE / 2000  # the box, scaled with the picture: x 400-800 is the hot half
    assert overlay[int(200 * scale):int(800 * scale), int(450 * scale):int(750 * scale), 0].mean() > 50
    assert overlay[:, int(1250 * scale):].mean() < 70 and overlay[:, :int(350 * scale)].mean() < 70


def test_workers_log_what_only_the_portal_knows_without_identifiers(reporting_app, auth, client, model_server,
                                                                   tmp_path):
    """Beside the model server's request log: per analysed scan its image's sha256 (what the server logged), the
    source, upload time and DICOM acquisition, and the answer; never a name or a DICOM identifier."""
    from pydicom.data import get_testdata_file

    from portal import prediction_context

    app = reporting_app
    app.config["PREDICTION_CONTEXT_LOG"] = str(tmp_path / "context")
    with open(get_testdata_file("CT_small.dcm", download=False), "rb") as handle:
        dicom = handle.read()
    patient_id = user_id(app, "patient@example.org")
    auth.login("doctor@example.org")
    page = f"/doctor/patients/{patient_id}"
    assert upload_files(client, page, f"{page}/scans", [("ct.dcm", dicom)] + slices(1)).status_code == 200
    drain(app, make_worker(app, model_server.address))
    entries = prediction_context.read(str(tmp_path / "context"))
    with app.app_context():
        scans = {scan.image_sha256: scan for scan in db.session.scalars(db.select(Scan))}
        assert {entry["image_sha256"] for entry in entries} == set(scans)
        ct = next(entry for entry in entries if entry["scan_kind"] == "dicom")
        assert ct["acquisition"] == json.loads(scans[ct["image_sha256"]].acquisition_json)
    assert ct["acquisition"]["Manufacturer"] == "GE MEDICAL SYSTEMS" and ct["acquisition"]["ConvolutionKernel"]
    assert ct["source"] == "doctor_upload" and ct["model_name"] == "radassist" and ct["predicted_class"]
    assert ct["segmentation_model"].startswith("radassist-seg/")
    written = "".join(pathlib.Path(path).read_text() for path in glob.glob(str(tmp_path / "context" / "*.jsonl")))
    for identifier in ("CompressedSamples", "1CT1", "Pat One", "patient@example.org"):
        assert identifier not in written
