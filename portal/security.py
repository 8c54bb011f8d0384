"""Password hashing (Argon2id, memory-hard), login backoff, role checks and the audit trail."""

import datetime as dt
import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import abort, current_app, g, redirect, request, session, url_for

from portal.models import AuditEvent, Role, User, db, utcnow

_hasher = PasswordHasher()  # Argon2id, 64 MiB, t=3: the library's RFC 9106 low-memory profile
MIN_PASSWORD_LENGTH = 12


class WeakPassword(ValueError):
    pass


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(f"passwords need at least {MIN_PASSWORD_LENGTH} characters")
    return _hasher.hash(password)


def verify_password(user: User, password: str) -> bool:
    try:
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return True


def authenticate(email: str, password: str) -> tuple[User | None, str | None]:
    """(user, None) on success; (None, message) otherwise. Repeated failures lock the account with backoff."""
    user = db.session.scalar(db.select(User).where(User.email == email.strip().lower()))
    now = utcnow()
    if user is None or not user.active:
        return None, "Wrong email or password."
    if user.locked_until and user.locked_until > now:
        return None, "Too many failed attempts. Try again later."
    if not verify_password(user, password):
        user.failed_logins += 1
        threshold = current_app.config["LOGIN_FAILURES_BEFORE_LOCK"]
        if user.failed_logins >= threshold:
            seconds = current_app.config["LOGIN_LOCK_SECONDS"] * 2 ** (user.failed_logins - threshold)
            user.locked_until = now + dt.timedelta(seconds=min(seconds, 24 * 3600))
        record("login_failed", user)
        db.session.commit()
        return None, "Wrong email or password."
    user.failed_logins, user.locked_until = 0, None
    return user, None


def record(action: str, obj=None, detail: str | None = None, actor: User | None = None) -> None:
    """Adds an audit event (committed with the caller's transaction)."""
    actor = actor or g.get("user")
    db.session.add(AuditEvent(
        actor_id=actor.id if actor else None, action=action,
        object_type=type(obj).__name__.lower() if obj is not None else None,
        object_id=str(obj.id) if obj is not None and getattr(obj, "id", None) is not None else None,
        remote_addr=request.remote_addr if request else None, detail=detail))


def load_current_user() -> None:
    user_id = session.get("user_id")
    g.user = db.session.get(User, user_id) if user_id else None
    if g.user is not None and not g.user.active:
        session.clear()
        g.user = None


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
