"""The portal findings of the security review (issue 11), each kept fixed: real app, SQLite and PostgreSQL."""

import datetime as dt
import json
import re
import statistics
import threading
import time

import pytest
import sqlalchemy as sa
from conftest import PASSWORD, csrf_token, user_id

from portal.models import AuditEvent, Batch, Job, Report, Scan, User, UserSession, db, utcnow


def _cookie(client) -> str:
    return client.get_cookie("session").value


def test_logout_ends_the_session_for_good_even_for_a_copied_cookie(app, auth, client):
    auth.login("doctor@example.org")
    stolen = _cookie(client)
    assert client.get("/doctor/patients").status_code == 200
    auth.logout()
    replay = app.test_client()
    replay.set_cookie("session", stolen)
    response = replay.get("/doctor/patients")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_a_password_change_logs_out_every_other_session(app, auth, client):
    auth.login("doctor@example.org")
    other_device = app.test_client()
    token = csrf_token(other_device, "/login")
    other_device.post("/login", data={"email": "doctor@example.org", "password": PASSWORD, "csrf_token": token})
    assert other_device.get("/doctor/patients").status_code == 200
    token = csrf_token(client, "/password")
    changed = client.post("/password", data={"current": PASSWORD, "new": "a new long passphrase",
                                             "confirm": "a new long passphrase", "csrf_token": token})
    assert changed.status_code == 302
    assert client.get("/doctor/patients").status_code == 200  # this session stays
    assert other_device.get("/doctor/patients").status_code == 302  # the other one is over


def test_sessions_end_after_idle_time_and_when_the_account_is_disabled(app, auth, client):
    auth.login("doctor@example.org")
    with app.app_context():
        row = db.session.scalar(sa.select(UserSession))
        row.last_seen = utcnow() - dt.timedelta(seconds=app.config["SESSION_IDLE_SECONDS"] + 5)
        db.session.commit()
    assert client.get("/doctor/patients").status_code == 302
    auth.login("doctor@example.org")
    admin = app.test_client()
    token = csrf_token(admin, "/login")
    admin.post("/login", data={"email": "admin@example.org", "password": PASSWORD, "csrf_token": token})
    doctor_id = user_id(app, "doctor@example.org")
    disabled = admin.post(f"/admin/users/{doctor_id}/disable", data={"csrf_token": csrf_token(admin, "/admin/doctors")})
    assert disabled.status_code == 302
    assert client.get("/doctor/patients").status_code == 302


@pytest.mark.parametrize("target", ["/%09/evil.example/", "//evil.example/", "/\\evil.example", "https://evil.example/",
                                    "/\t/evil.example", "javascript:alert(1)", "/%0d%0a/evil.example"])
def test_login_never_redirects_to_another_site(auth, target):
    location = auth.login("doctor@example.org", next_url=f"?next={target}").headers["Location"]
    assert location == "/doctor/worklist", location


def test_login_redirects_to_a_local_page(auth):
    assert auth.login("doctor@example.org", next_url="?next=/password").headers["Location"] == "/password"


def test_parallel_wrong_passwords_all_count_and_lock_the_account(app):
    threshold = app.config["LOGIN_FAILURES_BEFORE_LOCK"]
    app.config["LOGIN_RATE_LIMIT"] = "1000 per minute"
    clients = [app.test_client() for _ in range(threshold + 3)]
    tokens = [csrf_token(c, "/login") for c in clients]
    barrier = threading.Barrier(len(clients))

    def guess(index):
        barrier.wait()
        clients[index].post("/login", data={"email": "doctor@example.org", "password": f"wrong guess {index}",
                                            "csrf_token": tokens[index]})

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with app.app_context():
        user = db.session.scalar(sa.select(User).where(User.email == "doctor@example.org"))
        assert user.failed_logins == len(clients) and user.locked_until is not None
        lock = user.locked_until - utcnow()
        assert lock <= dt.timedelta(seconds=app.config["LOGIN_LOCK_MAX_SECONDS"])


def test_an_admin_unlocks_a_locked_account(app, auth, client):
    for _ in range(app.config["LOGIN_FAILURES_BEFORE_LOCK"]):
        auth.login("doctor@example.org", "wrong password!")
    auth.login("admin@example.org")
    page = client.get("/admin/doctors").get_data(as_text=True)
    assert 'id="locked"' in page and "doctor@example.org" in page
    unlocked = client.post(f"/admin/users/{user_id(app, 'doctor@example.org')}/unlock",
                           data={"csrf_token": csrf_token(client, "/admin/doctors")})
    assert unlocked.status_code == 302
    auth.logout()
    assert auth.login("doctor@example.org").status_code == 302


def test_unknown_and_known_emails_answer_alike_in_words_and_time(app, auth):
    app.config["LOGIN_RATE_LIMIT"] = "1000 per minute"
    timings = {"unknown": [], "known": []}
    for _ in range(4):
        for kind, email in (("unknown", "nobody@example.org"), ("known", "other@example.org")):
            started = time.perf_counter()
            response = auth.login(email, "wrong password!")
            timings[kind].append(time.perf_counter() - started)
            assert response.status_code == 401
            texts = response.get_data(as_text=True)
            assert "Wrong email or password" in texts
    ratio = statistics.median(timings["unknown"]) / statistics.median(timings["known"])
    assert 0.5 < ratio < 2.0, timings  # both pay one Argon2 verification (5 ms vs 173 ms before)
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent).where(
            AuditEvent.action == "login_failed", AuditEvent.object_id.is_(None))) == 4  # unknown emails too


def test_guesses_of_the_current_password_are_limited(app, auth, client):
    auth.login("doctor@example.org")
    statuses = []
    for _ in range(7):
        token = csrf_token(client, "/password")
        statuses.append(client.post("/password", data={"current": "a wrong guess!", "new": "x" * 14,
                                                       "confirm": "x" * 14, "csrf_token": token}).status_code)
    assert statuses[:5] == [400] * 5 and statuses[-1] == 429


def test_behind_a_trusted_proxy_the_client_address_is_the_forwarded_one(app, auth):
    from werkzeug.middleware.proxy_fix import ProxyFix

    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1)  # what TRUSTED_PROXIES=1 sets up
    client = app.test_client()
    token = csrf_token(client, "/login")
    client.post("/login", data={"email": "doctor@example.org", "password": PASSWORD, "csrf_token": token},
                headers={"X-Forwarded-For": "203.0.113.7"})
    with app.app_context():
        event = db.session.scalar(sa.select(AuditEvent).where(AuditEvent.action == "login"))
        assert event.remote_addr == "203.0.113.7"


def test_pages_carry_security_headers_and_are_not_cached(auth, client):
    login_page = client.get("/login")
    headers = login_page.headers
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"] and headers["X-Frame-Options"] == "DENY"
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["Referrer-Policy"] == "same-origin"
    assert "script-src 'self' 'nonce-" in headers["Content-Security-Policy"]
    auth.login("doctor@example.org")
    assert client.get("/doctor/patients").headers["Cache-Control"] == "no-store"


def test_an_expired_form_keeps_what_the_doctor_wrote(auth, client):
    auth.login("doctor@example.org")
    response = client.post("/reports/1/findings", data={"findings": "Spiculated nodule, right upper lobe.",
                                                         "csrf_token": "expired-or-forged"})
    body = response.get_data(as_text=True)
    assert response.status_code == 400 and "Spiculated nodule, right upper lobe." in body and "kept-text" in body


def test_probing_for_other_peoples_objects_is_audited(app, auth, client):
    auth.login("patient@example.org")
    assert client.get("/reports/999").status_code == 404
    with app.app_context():
        event = db.session.scalar(sa.select(AuditEvent).where(AuditEvent.action == "not_found"))
        assert event.detail == "GET /reports/999" and event.actor_id == user_id(app, "patient@example.org")


def _report(app, *, self_submitted: bool, uploader: str, findings: str = "", author: str | None = None,
            batch_by: str | None = None) -> tuple[int, int]:
    """A scan of patient@example.org with a model draft (and a batch with its job): (report id, batch id)."""
    with app.app_context():
        patient = db.session.scalar(sa.select(User).where(User.email == "patient@example.org"))
        by = db.session.scalar(sa.select(User).where(User.email == uploader))
        scan = Scan(patient_id=patient.id, uploaded_by_id=by.id, name="s.png", kind="png", original_sha256="0" * 64,
                    image_sha256="0" * 64, width=512, height=512, self_submitted=self_submitted)
        db.session.add(scan)
        db.session.flush()
        creator = db.session.scalar(sa.select(User).where(User.email == (batch_by or uploader)))
        batch = Batch(created_by_id=creator.id, patient_id=patient.id)
        db.session.add(batch)
        db.session.flush()
        db.session.add(Job(batch_id=batch.id, scan_id=scan.id, status="done", attempts=1))
        writer = db.session.scalar(sa.select(User).where(User.email == author)) if author else None
        report = Report(scan_id=scan.id, version=1, predicted_class="normal", uncertain=False, in_domain=True,
                        probabilities_json=json.dumps({"adenocarcinoma": 0.01, "large.cell.carcinoma": 0.01,
                                                       "squamous.cell.carcinoma": 0.01, "normal": 0.97}),
                        overlay_sha256="0" * 64, model_name="radassist", model_version=1, findings=findings,
                        author_id=writer.id if writer else None)
        db.session.add(report)
        db.session.commit()
        return report.id, batch.id


def test_patients_never_see_a_doctors_unsigned_words(app, auth, client):
    model_only, _ = _report(app, self_submitted=True, uploader="patient@example.org")
    edited, _ = _report(app, self_submitted=True, uploader="patient@example.org",
                        findings="Draft: suspicious, discuss at MDT before telling the patient.",
                        author="doctor@example.org")
    auth.login("patient@example.org")
    assert client.get(f"/reports/{model_only}").status_code == 200  # the model's own draft of their upload
    assert client.get(f"/reports/{edited}").status_code == 404
    assert client.get(f"/api/reports/{edited}/fhir").status_code == 404
    assert "discuss at MDT" not in client.get("/me/").get_data(as_text=True)


def test_patients_do_not_see_their_doctors_batches(app, auth, client):
    _, doctors_batch = _report(app, self_submitted=False, uploader="doctor@example.org")
    _, own_batch = _report(app, self_submitted=True, uploader="patient@example.org")
    auth.login("patient@example.org")
    assert client.get(f"/api/batches/{doctors_batch}").status_code == 404
    assert client.get(f"/batches/{doctors_batch}").status_code == 404
    own = client.get(f"/api/batches/{own_batch}").get_json()
    assert own["jobs"][0]["report_url"]  # their own, certain, in-domain model draft
    auth.logout()
    auth.login("doctor@example.org")
    assert client.get(f"/api/batches/{doctors_batch}").get_json()["jobs"][0]["report_url"]


@pytest.mark.parametrize("app", ["postgresql"], indirect=True)  # the triggers are PostgreSQL's; SQLite has the ORM
def test_on_postgresql_the_audit_log_and_final_reports_refuse_any_sql_change(app):
    report_id, _ = _report(app, self_submitted=False, uploader="doctor@example.org")
    with app.app_context():
        db.session.add(AuditEvent(action="test_event"))
        db.session.execute(sa.update(Report).where(Report.id == report_id).values(findings="changed while draft"))
        db.session.execute(sa.update(Report).where(Report.id == report_id).values(status="final"))
        db.session.commit()
        for statement in ("UPDATE audit_events SET action = 'rewritten'", "DELETE FROM audit_events",
                          "TRUNCATE audit_events", f"UPDATE reports SET findings = 'x' WHERE id = {report_id}",
                          f"DELETE FROM reports WHERE id = {report_id}", "TRUNCATE reports CASCADE"):
            with pytest.raises(sa.exc.DBAPIError, match="not allowed"):
                db.session.execute(sa.text(statement))
            db.session.rollback()
        assert db.session.scalar(sa.select(Report.findings).where(Report.id == report_id)) == "changed while draft"


def test_the_add_patient_form_cannot_sweep_for_taken_emails(app, auth, client):
    app.config["NEW_ACCOUNT_RATE_LIMIT"] = "3 per hour"
    auth.login("doctor@example.org")
    statuses = []
    for index in range(4):
        token = csrf_token(client, "/doctor/patients")
        statuses.append(client.post("/doctor/patients", data={"email": "patient2@example.org" if index else
                                                              "new@example.org", "name": "X", "password": PASSWORD,
                                                              "csrf_token": token}).status_code)
    assert statuses[-1] == 429
    with app.app_context():
        refused = db.session.scalar(sa.select(AuditEvent).where(AuditEvent.action == "account_creation_refused"))
        assert "patient2@example.org" in refused.detail


def test_a_restarted_worker_takes_back_its_predecessors_jobs_at_once(app, tmp_path):
    """The supervisor restarts a worker under the same name: what the dead one was running is queued again on the
    new one's first step, not after the 5-minute lease."""
    from portal.jobs import DatabaseQueue, JobSettings, claim
    from portal.worker import Worker
    from serving.client import ServingClient

    _report(app, self_submitted=False, uploader="doctor@example.org")
    with app.app_context():
        job = db.session.scalar(sa.select(Job))
        job.status, job.attempts = "queued", 0
        db.session.commit()
        (held,) = claim([job.id], "host-worker-0", JobSettings(lease_seconds=300))
        assert held.status == "running"
    with ServingClient("127.0.0.1:1", timeout=1, retries=0) as dead_model:
        restarted = Worker(app, dead_model, queue=DatabaseQueue(poll_seconds=0.01), name="host-worker-0")
        with app.app_context():
            restarted.step(timeout=0)
            job = db.session.scalar(sa.select(Job))
            # Given back and claimed again in the same step (its attempt 2; without the recovery it would still be
            # "running" on attempt 1 for five minutes).
            assert job.attempts == 2 and job.worker == "host-worker-0" and job.status != "running"


def test_the_audit_log_pages_through_every_event_and_filters_by_action(app, auth, client):
    with app.app_context():
        db.session.add_all([AuditEvent(action="bulk_event", detail=str(i)) for i in range(250)])
        db.session.commit()
    auth.login("admin@example.org")
    first = client.get("/admin/audit?action=bulk_event").get_data(as_text=True)
    assert first.count("<td>bulk_event</td>") == 200 and 'id="older"' in first
    older = re.search(r'id="older" href="([^"]+)"', first).group(1).replace("&amp;", "&")
    second = client.get(older).get_data(as_text=True)
    assert second.count("<td>bulk_event</td>") == 50 and 'id="older"' not in second
