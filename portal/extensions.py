"""Flask extensions, created here and bound to each app in create_app (init_app)."""

from flask import current_app
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_wtf.csrf import CSRFProtect

csrf = CSRFProtect()
# Storage comes from the app's RATELIMIT_STORAGE_URI: memory:// by default, Redis in production.
limiter = Limiter(key_func=get_remote_address, headers_enabled=True)


def login_limit() -> str:
    return current_app.config["LOGIN_RATE_LIMIT"]
