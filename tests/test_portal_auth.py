"""Portal accounts and access: real app, real databases (SQLite and PostgreSQL), CSRF on, no mocks."""

import subprocess
import sys

import pytest
from conftest import PASSWORD, csrf_token

from portal import create_app
from portal.config import UnsafeConfiguration
from portal.models import AppendOnlyViolation, AuditEvent, User, db
from portal.security import hash_password


def _user_id(app, email: str) -> int:
    with app.app_context():
        return db.session.scalar(db.select(User.id).where(User.email == email))


def test_each_role_lands_on_its_home(auth):
    assert auth.login("admin@example.org").headers["Location"] == "/admin/doctors"
    auth.logout()
    assert auth.login("doctor@example.org").headers["Location"] == "/doctor/worklist"
    auth.logout()
    assert auth.login("patient@example.org").headers["Location"] == "/me/"


def test_wrong_password_is_refused_and_audited(app, auth):
    response = auth.login("doctor@example.org", "not the password")
    assert response.status_code == 401 and "Wrong email or password" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(db.select(AuditEvent.action).order_by(AuditEvent.id.desc())) == "login_failed"


def test_redirect_after_login_stays_on_this_site(auth):
    assert auth.login("doctor@example.org", next_url="?next=//evil.example/phish").headers["Location"] == \
        "/doctor/worklist"


def test_forms_without_csrf_token_are_rejected(client, auth):
    assert client.post("/login", data={"email": "doctor@example.org", "password": PASSWORD}).status_code == 400
    auth.login("admin@example.org")
    response = client.post("/admin/doctors", data={"email": "x@example.org", "name": "X", "password": PASSWORD})
    assert response.status_code == 400


def test_repeated_failures_lock_the_account_with_backoff(app, auth):
    for _ in range(app.config["LOGIN_FAILURES_BEFORE_LOCK"]):
        auth.login("doctor@example.org", "wrong password!")
    response = auth.login("doctor@example.org")  # even the right password waits for the lock to expire
    assert response.status_code == 401 and "Wrong email or password" in response.get_data(as_text=True)
    with app.app_context():
        user = db.session.get(User, _user_id(app, "doctor@example.org"))
        assert user.locked_until is not None


def test_login_attempts_are_rate_limited_per_address(client):
    token = csrf_token(client, "/login")
    statuses = [client.post("/login", data={"email": "a@example.org", "password": "x", "csrf_token": token}).status_code
                for _ in range(12)]
    assert statuses[:10] == [401] * 10 and statuses[-1] == 429


@pytest.mark.parametrize("url", ["/admin/doctors", "/admin/audit"])
def test_admin_pages_are_for_admins_only(auth, client, url):
    assert client.get(url).status_code == 302  # logged out: to the login page
    auth.login("doctor@example.org")
    assert client.get(url).status_code == 403
    assert client.get(url, headers={"Accept": "application/json"}).get_json()["error"] == "Forbidden"


def test_doctors_see_only_their_own_patients(app, auth, client):
    mine, theirs = _user_id(app, "patient@example.org"), _user_id(app, "patient2@example.org")
    auth.login("doctor@example.org")
    assert client.get(f"/doctor/patients/{mine}").status_code == 200
    assert client.get(f"/doctor/patients/{theirs}").status_code == 404
    assert client.get(f"/doctor/patients/{_user_id(app, 'other@example.org')}").status_code == 404
    listing = client.get("/doctor/patients").get_data(as_text=True)
    assert "Pat One" in listing and "Pat Two" not in listing


def test_patients_cannot_open_doctor_or_admin_pages(app, auth, client):
    auth.login("patient@example.org")
    assert client.get("/me/").status_code == 200
    assert client.get(f"/doctor/patients/{_user_id(app, 'patient@example.org')}").status_code == 403
    assert client.get("/admin/audit").status_code == 403


def test_admin_creates_a_doctor_and_the_audit_log_shows_it(app, auth, client):
    auth.login("admin@example.org")
    token = csrf_token(client, "/admin/doctors")
    response = client.post("/admin/doctors", data={"email": "New@Example.org", "name": "Dr. New",
                                                   "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 302
    assert "new@example.org" in client.get("/admin/doctors").get_data(as_text=True)
    audit = client.get("/admin/audit").get_data(as_text=True)
    assert "doctor_created" in audit and "admin@example.org" in audit


def test_weak_and_duplicate_accounts_are_refused_with_a_message(auth, client):
    auth.login("admin@example.org")
    token = csrf_token(client, "/admin/doctors")
    weak = client.post("/admin/doctors", data={"email": "w@example.org", "name": "W", "password": "short",
                                               "csrf_token": token}).get_data(as_text=True)
    assert "at least 12 characters" in weak
    duplicate = client.post("/admin/doctors", data={"email": "doctor@example.org", "name": "D",
                                                    "password": PASSWORD, "csrf_token": token})
    assert "cannot be used for a new account" in duplicate.get_data(as_text=True)


def test_password_change_requires_the_current_password(auth, client):
    auth.login("patient@example.org")
    token = csrf_token(client, "/password")
    wrong = client.post("/password", data={"current": "nope", "new": "a new long password",
                                           "confirm": "a new long password", "csrf_token": token})
    assert wrong.status_code == 400
    changed = client.post("/password", data={"current": PASSWORD, "new": "a new long password",
                                             "confirm": "a new long password", "csrf_token": token})
    assert changed.status_code == 302
    auth.logout()
    assert auth.login("patient@example.org").status_code == 401
    assert auth.login("patient@example.org", "a new long password").status_code == 302


def test_passwords_use_memory_hard_argon2id(app):
    """Outside the testing config (whose cheap profile keeps the suite fast) passwords cost 64 MiB, t=3; production
    refuses anything weaker."""
    with app.app_context():
        stored = db.session.scalar(db.select(User.password_hash).where(User.email == "doctor@example.org"))
    assert stored.startswith("$argon2id$")
    development = create_app({"SQLALCHEMY_DATABASE_URI": app.config["SQLALCHEMY_DATABASE_URI"]},
                             environment="development")
    with development.app_context():
        assert "m=65536,t=3" in hash_password("correct horse battery")
    weak = {"SECRET_KEY": "s" * 48, "SQLALCHEMY_DATABASE_URI": "sqlite://", "RATELIMIT_STORAGE_URI": "redis://x",
            "PASSWORD_HASHING": {"memory_cost": 1024, "time_cost": 1}}
    with pytest.raises(UnsafeConfiguration, match="PASSWORD_HASHING"):
        create_app(weak, environment="production")


def test_audit_events_are_append_only(app, auth):
    auth.login("doctor@example.org")
    with app.app_context():
        event = db.session.scalar(db.select(AuditEvent).where(AuditEvent.action == "login"))
        event.detail = "tampered"
        with pytest.raises(AppendOnlyViolation):
            db.session.commit()
        db.session.rollback()
        db.session.delete(db.session.get(AuditEvent, event.id))
        with pytest.raises(AppendOnlyViolation):
            db.session.commit()


def test_session_cookie_is_httponly_and_samesite(auth):
    cookie = auth.login("doctor@example.org").headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({}, "RADASSIST_SECRET_KEY"), ({"SECRET_KEY": "x" * 40, "DEBUG": True}, "DEBUG"),
     ({"SECRET_KEY": "x" * 40, "SQLALCHEMY_DATABASE_URI": ""}, "RADASSIST_DATABASE_URL"),
     ({"SECRET_KEY": "x" * 40, "RATELIMIT_STORAGE_URI": "memory://"}, "RADASSIST_RATELIMIT_STORAGE_URI")],
)
def test_production_refuses_unsafe_configuration(monkeypatch, overrides, message):
    monkeypatch.delenv("RADASSIST_SECRET_KEY", raising=False)
    config = {"SQLALCHEMY_DATABASE_URI": "sqlite://", "SECRET_KEY": None, **overrides}
    with pytest.raises(UnsafeConfiguration, match=message):
        create_app(config, environment="production")


def test_production_starts_with_safe_configuration():
    app = create_app({"SECRET_KEY": "s" * 48, "SQLALCHEMY_DATABASE_URI": "sqlite://",
                      "RATELIMIT_STORAGE_URI": "redis://127.0.0.1:6379/1"}, environment="production")
    assert app.config["SESSION_COOKIE_SECURE"] and not app.debug


@pytest.mark.slow  # two `radassist` processes
def test_cli_creates_an_admin(tmp_path):
    env = {"RADASSIST_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "PATH": "/usr/bin:/bin"}
    created = subprocess.run([sys.executable, "-m", "radassist.cli", "users", "create", "--role", "admin",
                              "--email", "root@example.org", "--name", "Root", "--password-stdin"],
                             input=PASSWORD + "\n", capture_output=True, text=True, env=env, timeout=120)
    assert created.returncode == 0, created.stderr
    listed = subprocess.run([sys.executable, "-m", "radassist.cli", "users", "list"], capture_output=True, text=True,
                            env=env, timeout=120)
    assert "root@example.org" in listed.stdout and "admin" in listed.stdout
    weak = subprocess.run([sys.executable, "-m", "radassist.cli", "users", "create", "--role", "admin", "--email",
                           "weak@example.org", "--name", "W", "--password-stdin"], input="short\n",
                          capture_output=True, text=True, env=env, timeout=120)
    assert weak.returncode != 0 and "at least 12 characters" in weak.stderr


def test_a_dead_database_is_a_clear_503_not_a_stack_trace(tmp_path):
    from portal import create_app

    app = create_app({"SQLALCHEMY_DATABASE_URI": "postgresql+psycopg://postgres@127.0.0.1:1/test",
                      "SCAN_STORE": str(tmp_path / "scans")}, environment="testing")
    client = app.test_client()
    token = csrf_token(client, "/login")
    response = client.post("/login", data={"email": "doctor@example.org", "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 503
    assert "The database is not reachable" in response.get_data(as_text=True)
