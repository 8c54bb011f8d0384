"""Server-side login sessions: the signed cookie carries only a random token; the ``user_sessions`` row it names
decides. So a session can be ended for good: logout revokes it, a password change revokes every other session of
the user, and disabling an account revokes all of them. A session also ends SESSION_IDLE_SECONDS after its last
request and PERMANENT_SESSION_LIFETIME after login, whatever the cookie says.
"""

import datetime as dt
import hashlib
import secrets

import sqlalchemy as sa
from flask import current_app, request, session

from portal.models import User, UserSession, db, utcnow

TOKEN_KEY = "sid"
TOUCH_EVERY = dt.timedelta(seconds=60)  # last_seen is written at most this often (not on every request)


def _row_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()  # a leaked table does not hand out live cookies


def _request_token() -> str | None:
    token = session.get(TOKEN_KEY)
    return token if isinstance(token, str) and token else None


def start(user: User) -> None:
    """A new session for ``user`` (after a successful login): a fresh cookie, whatever the old one held."""
    session.clear()
    token = secrets.token_urlsafe(32)
    now = utcnow()
    db.session.add(UserSession(id=_row_id(token), user_id=user.id, created_at=now, last_seen=now,
                               expires_at=now + current_app.permanent_session_lifetime,
                               remote_addr=request.remote_addr))
    session.permanent = True
    session[TOKEN_KEY] = token


def current() -> UserSession | None:
    """The request's session if it is still good (touching it), else None."""
    token = _request_token()
    if token is None:
        return None
    row = db.session.get(UserSession, _row_id(token))
    now = utcnow()
    idle = dt.timedelta(seconds=current_app.config["SESSION_IDLE_SECONDS"])
    if row is None or row.revoked_at is not None or row.expires_at <= now or row.last_seen + idle <= now:
        return None
    if now - row.last_seen >= TOUCH_EVERY:
        row.last_seen = now
        db.session.commit()
    return row


def end() -> None:
    """Logout: this session is revoked and the cookie emptied."""
    token = _request_token()
    if token is not None:
        db.session.execute(sa.update(UserSession).where(UserSession.id == _row_id(token),
                                                        UserSession.revoked_at.is_(None))
                           .values(revoked_at=utcnow()))
    session.clear()


def revoke_all(user: User, keep_current: bool = False) -> int:
    """Revokes every live session of ``user`` (but the request's own when ``keep_current``); returns how many."""
    query = sa.update(UserSession).where(UserSession.user_id == user.id, UserSession.revoked_at.is_(None))
    token = _request_token()
    if keep_current and token is not None:
        query = query.where(UserSession.id != _row_id(token))
    return db.session.execute(query.values(revoked_at=utcnow())).rowcount
