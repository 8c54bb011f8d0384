"""Portal configuration classes, read once at start-up. Production refuses unsafe settings."""

import os


class UnsafeConfiguration(RuntimeError):
    """Production configuration that must not start (missing secret, debug on, insecure cookies)."""


class Config:
    SECRET_KEY = os.environ.get("RADASSIST_SECRET_KEY")
    SQLALCHEMY_DATABASE_URI = os.environ.get("RADASSIST_DATABASE_URL", "")  # default: SQLite in the instance folder
    SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True}
    RATELIMIT_STORAGE_URI = os.environ.get("RADASSIST_RATELIMIT_STORAGE_URI", "memory://")
    LOGIN_RATE_LIMIT = "10 per minute"
    LOGIN_FAILURES_BEFORE_LOCK = 5
    LOGIN_LOCK_SECONDS = 30  # doubles with every further failure
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    SESSION_COOKIE_SECURE = False
    WTF_CSRF_TIME_LIMIT = 3600
    MAX_CONTENT_LENGTH = 512 * 1024 * 1024
    SCAN_STORE = os.environ.get("RADASSIST_SCAN_STORE", "")  # folder or s3://bucket/prefix; default instance/scans
    DEBUG = False
    TESTING = False

    @classmethod
    def validate(cls, config: dict) -> None:
        """Development and tests accept anything; ProductionConfig overrides this."""


class DevelopmentConfig(Config):
    DEBUG = False


class TestingConfig(Config):
    TESTING = True
    SECRET_KEY = "testing-only-secret"
    RATELIMIT_STORAGE_URI = "memory://"


class ProductionConfig(Config):
    SESSION_COOKIE_SECURE = True

    @classmethod
    def validate(cls, config: dict) -> None:
        problems = []
        secret = config.get("SECRET_KEY") or ""
        if len(secret) < 32:
            problems.append("RADASSIST_SECRET_KEY must be set to a random value of at least 32 characters")
        if config.get("DEBUG"):
            problems.append("DEBUG must be off")
        if not config.get("SESSION_COOKIE_SECURE"):
            problems.append("session cookies must be Secure (HTTPS)")
        if not config.get("SQLALCHEMY_DATABASE_URI"):
            problems.append("RADASSIST_DATABASE_URL must name the production database")
        if problems:
            raise UnsafeConfiguration("refusing to start in production: " + "; ".join(problems))


CONFIGS = {"development": DevelopmentConfig, "testing": TestingConfig, "production": ProductionConfig}
