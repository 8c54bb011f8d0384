"""Flask extensions, created here and bound to each app in create_app (init_app)."""

from flask import current_app, g
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_wtf.csrf import CSRFProtect

csrf = CSRFProtect()
# Storage comes from the app's RATELIMIT_STORAGE_URI: memory:// by default, Redis in production (required there, so
# every process counts against one bucket). The client address is the proxy's X-Forwarded-For when TRUSTED_PROXIES
# says how many proxies to trust (portal/__init__.py wraps the app in ProxyFix).
limiter = Limiter(key_func=get_remote_address, headers_enabled=True)


def login_limit() -> str:
    return current_app.config["LOGIN_RATE_LIMIT"]


def password_limit() -> str:
    return current_app.config["PASSWORD_CHANGE_RATE_LIMIT"]


def new_account_limit() -> str:
    return current_app.config["NEW_ACCOUNT_RATE_LIMIT"]


def user_key() -> str:
    """Rate-limit bucket per logged-in account (guesses of the current password from anywhere count together)."""
    return f"user:{g.user.id}" if g.get("user") is not None else get_remote_address()
