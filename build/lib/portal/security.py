"""Password hashing (Argon2id, memory-hard), login backoff, role checks and the audit trail."""

import contextlib
import datetime as dt
import functools
from urllib.parse import urlsplit

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import abort, current_app, g, redirect, request, session, url_for

from portal.models import AuditEvent, Role, User, db, utcnow

MIN_PASSWORD_LENGTH = 12
_DUMMY_PASSWORD = "radassist: an unknown account still costs one Argon2 verification"


def _hasher() -> tuple[PasswordHasher, str]:
    """The app's Argon2id hasher (``PASSWORD_HASHING``: the library's RFC 9106 low-memory profile, 64 MiB and t=3,
    unless a test config says otherwise) and a hash of a dummy password made with it, both made once per app."""
    made = current_app.extensions.get("radassist_hasher")
    if made is None:
        hasher = PasswordHasher(**current_app.config["PASSWORD_HASHING"])
        made = current_app.extensions["radassist_hasher"] = (hasher, hasher.hash(_DUMMY_PASSWORD))
    return made


class WeakPassword(ValueError):
    pass


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(f"passwords need at least {MIN_PASSWORD_LENGTH} characters")
    return _hasher()[0].hash(password)


def verify_password(user: User, password: str) -> bool:
    hasher, _ = _hasher()
    try:
        hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
    if hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hasher.hash(password)
    return True


LOGIN_FAILED = ("Wrong email or password. After repeated failures an account is locked for a few minutes; your "
                "administrator can unlock it.")


def authenticate(email: str, password: str) -> tuple[User | None, str | None]:
    """(user, None) on success; (None, message) otherwise, the same message and the same work (one Argon2
    verification) whether the account exists, is locked or the password is wrong. Repeated failures lock the account
    with a doubling backoff up to LOGIN_LOCK_MAX_SECONDS; the counter is one atomic UPDATE, so parallel guesses all
    count."""
    user = db.session.scalar(db.select(User).where(User.email == email.strip().lower()))
    now = utcnow()
    if user is None or not user.active:
        _hasher_verify_dummy(password)
        record("login_failed", detail=f"unknown or disabled account {email.strip().lower()[:254]!r}")
        db.session.commit()
        return None, LOGIN_FAILED
    locked = user.locked_until is not None and user.locked_until > now
    if not verify_password(user, password) or locked:
        failures = db.session.execute(sa.update(User).where(User.id == user.id)
                                      .values(failed_logins=User.failed_logins + 1)
                                      .returning(User.failed_logins)).scalar_one()
        threshold = current_app.config["LOGIN_FAILURES_BEFORE_LOCK"]
        if failures >= threshold:
            seconds = current_app.config["LOGIN_LOCK_SECONDS"] * 2 ** min(failures - threshold, 20)
            until = now + dt.timedelta(seconds=min(seconds, current_app.config["LOGIN_LOCK_MAX_SECONDS"]))
            db.session.execute(sa.update(User).where(User.id == user.id).values(locked_until=until))
        record("login_failed", user, detail="account locked" if locked else None)
        db.session.commit()
        db.session.refresh(user)
        return None, LOGIN_FAILED
    user.failed_logins, user.locked_until = 0, None
    return user, None


def _hasher_verify_dummy(password: str) -> None:
    hasher, dummy_hash = _hasher()
    with contextlib.suppress(VerificationError, InvalidHashError):
        hasher.verify(dummy_hash, password)


def unlock(user: User) -> None:
    user.failed_logins, user.locked_until = 0, None


def safe_next(target: str | None) -> str | None:
    """``target`` if it is a path on this site, else None: no scheme, no host, no ``//`` or ``\\`` prefix, no
    control characters or whitespace (browsers drop tabs and newlines, turning ``/\t/evil`` into ``//evil``)."""
    if not target or any(ord(c) < 33 or ord(c) == 127 or c == "\\" for c in target):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return None
    return target


def record(action: str, obj=None, detail: str | None = None, actor: User | None = None) -> None:
    """Adds an audit event (committed with the caller's transaction)."""
    actor = actor or g.get("user")
    db.session.add(AuditEvent(
        actor_id=actor.id if actor else None, action=action,
        object_type=type(obj).__name__.lower() if obj is not None else None,
        object_id=str(obj.id) if obj is not None and getattr(obj, "id", None) is not None else None,
        remote_addr=request.remote_addr if request else None, detail=detail))


def load_current_user() -> None:
    """g.user from the request's server-side session (portal/sessions.py); None when it was revoked or ran out."""
    from portal import sessions

    current = sessions.current()
    g.user = current.user if current is not None and current.user.active else None
    if g.user is None and sessions.TOKEN_KEY in session:
        session.clear()  # a revoked or expired login: nothing of it stays in the cookie


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json"


def login_required(view):
    @functools.wraps(view)
    def wrapped(**kwargs):
        if g.user is None:
            if wants_json():
                abort(401)
            return redirect(url_for("auth.login", next=request.path))
        return view(**kwargs)

    return wrapped


def role_required(*roles: Role):
    """Only users with one of ``roles``: 401/redirect when logged out, 403 otherwise."""

    def decorator(view):
        @functools.wraps(view)
        @login_required
        def wrapped(**kwargs):
            if g.user.role not in {r.value for r in roles}:
                abort(403)
            return view(**kwargs)

        return wrapped

    return decorator
