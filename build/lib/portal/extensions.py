"""Flask extensions, created here and bound to each app in create_app (init_app)."""

from flask import Flask, current_app, g
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_wtf.csrf import CSRFProtect

from portal.jobs import JobQueue, queue_from_url
from portal.storage import BlobStore, store_from_uri


class Blobs:
    """The scan store (images, overlays, PDFs) as an extension: made once per app from SCAN_STORE (a folder or
    s3://bucket/prefix; an S3 client is not free)."""

    key = "radassist_blobs"

    def init_app(self, app: Flask) -> None:
        app.extensions[self.key] = store_from_uri(app.config["SCAN_STORE"])

    @property
    def store(self) -> BlobStore:
        return current_app.extensions[self.key]


class ReportJobs:
    """The report-job queue as an extension: made once per app from JOB_QUEUE_URL (Redis, or the database)."""

    key = "radassist_jobs"

    def init_app(self, app: Flask) -> None:
        app.extensions[self.key] = queue_from_url(app.config["JOB_QUEUE_URL"])

    @property
    def queue(self) -> JobQueue:
        return current_app.extensions[self.key]


blobs = Blobs()
report_jobs = ReportJobs()
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
