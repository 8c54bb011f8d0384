"""Portal configuration classes, read once at start-up. Production refuses unsafe settings."""

import os

from radassist import contract


class UnsafeConfiguration(RuntimeError):
    """Production configuration that must not start (missing secret, debug on, insecure cookies)."""


class Config:
    SECRET_KEY = os.environ.get("RADASSIST_SECRET_KEY")
    SQLALCHEMY_DATABASE_URI = os.environ.get("RADASSIST_DATABASE_URL", "")  # default: SQLite in the instance folder
    SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True}
    PASSWORD_HASHING: dict = {}  # argon2.PasswordHasher's arguments; {}: Argon2id, 64 MiB, t=3 (RFC 9106 low-memory)
    DATABASE_CONNECT_TIMEOUT = int(os.environ.get("RADASSIST_DATABASE_CONNECT_TIMEOUT", 5))  # seconds, PostgreSQL
    RATELIMIT_STORAGE_URI = os.environ.get("RADASSIST_RATELIMIT_STORAGE_URI", "memory://")
    LOGIN_RATE_LIMIT = "10 per minute"
    PASSWORD_CHANGE_RATE_LIMIT = "5 per 15 minutes"  # per account
    NEW_ACCOUNT_RATE_LIMIT = "30 per hour"  # accounts a doctor may try to create (the form tells taken emails)
    LOGIN_FAILURES_BEFORE_LOCK = 5
    LOGIN_LOCK_SECONDS = 30  # doubles with every further failure
    LOGIN_LOCK_MAX_SECONDS = 900  # a stranger who knows an email can lock it for this long at most; admins unlock
    # Proxies in front of the portal (an ingress: 1) whose X-Forwarded-For/-Proto are trusted for the client
    # address (rate limits, the audit log) and the scheme. 0: none, the socket's peer is the client.
    TRUSTED_PROXIES = int(os.environ.get("RADASSIST_TRUSTED_PROXIES", 0))
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    SESSION_COOKIE_SECURE = False
    PERMANENT_SESSION_LIFETIME = int(os.environ.get("RADASSIST_SESSION_HOURS", 12)) * 3600  # from login
    SESSION_IDLE_SECONDS = int(os.environ.get("RADASSIST_SESSION_IDLE_MINUTES", 60)) * 60   # without a request
    # CSRF tokens last as long as the session they belong to: a report edited for an hour is not lost on save.
    WTF_CSRF_TIME_LIMIT = None
    # Key of the hash kept of each DICOM's PatientID (patient-mismatch warnings); default: SECRET_KEY.
    PHI_HASH_KEY = os.environ.get("RADASSIST_PHI_HASH_KEY")
    MAX_CONTENT_LENGTH = 512 * 1024 * 1024
    SCAN_STORE = os.environ.get("RADASSIST_SCAN_STORE", "")  # folder or s3://bucket/prefix; default instance/scans
    # The model, through TF Serving's gRPC API (RadAssist's server or the real one). Only the report workers call
    # it; they also record its status for the admin page.
    MODEL_SERVER = os.environ.get("RADASSIST_MODEL_SERVER", "localhost:8500")
    MODEL_NAME = os.environ.get("RADASSIST_MODEL_NAME", contract.MODEL_NAME)
    # The nodule segmenter on the same server (its lesions and outlines in every report); "" turns it off.
    SEGMENTATION_MODEL_NAME = os.environ.get("RADASSIST_SEGMENTATION_MODEL_NAME", contract.SEGMENTATION_MODEL_NAME)
    MODEL_TIMEOUT = float(os.environ.get("RADASSIST_MODEL_TIMEOUT", 120))
    # A model server that requires TLS (PEM files; a client certificate and key for mutual TLS) and/or a token.
    MODEL_SERVER_TLS_CA = os.environ.get("RADASSIST_MODEL_SERVER_TLS_CA")
    MODEL_SERVER_TLS_CERT = os.environ.get("RADASSIST_MODEL_SERVER_TLS_CERT")
    MODEL_SERVER_TLS_KEY = os.environ.get("RADASSIST_MODEL_SERVER_TLS_KEY")
    MODEL_SERVER_TLS_NAME = os.environ.get("RADASSIST_MODEL_SERVER_TLS_NAME")  # name in its certificate, if not
    MODEL_SERVER_TOKEN_FILE = os.environ.get("RADASSIST_MODEL_SERVER_TOKEN_FILE")  # the address's host
    # While the model server is down, jobs wait (no attempt is used up); retries back off up to this many seconds.
    MODEL_OUTAGE_MAX_WAIT = float(os.environ.get("RADASSIST_MODEL_OUTAGE_MAX_WAIT", 60))
    # How often each report worker records the model server's versions for the admin page (seconds).
    MODEL_STATUS_SECONDS = float(os.environ.get("RADASSIST_MODEL_STATUS_SECONDS", 30))
    # A folder for what the workers know of each model call (portal/prediction_context.py); unset: not written.
    PREDICTION_CONTEXT_LOG = os.environ.get("RADASSIST_PREDICTION_CONTEXT_LOG") or None
    # The monitoring pipeline's published window reports (`radassist monitor --publish-dir`): the Monitoring page.
    MONITORING_DIR = os.environ.get("RADASSIST_MONITORING_DIR", "")
    # Background jobs: redis://host:port/db in production; empty = the database itself is the queue.
    JOB_QUEUE_URL = os.environ.get("RADASSIST_QUEUE_URL", "")
    JOB_MAX_ATTEMPTS = int(os.environ.get("RADASSIST_JOB_MAX_ATTEMPTS", 4))
    JOB_RETRY_SECONDS = float(os.environ.get("RADASSIST_JOB_RETRY_SECONDS", 5))
    JOB_LEASE_SECONDS = float(os.environ.get("RADASSIST_JOB_LEASE_SECONDS", 300))
    WORKER_BATCH_SIZE = int(os.environ.get("RADASSIST_WORKER_BATCH_SIZE", 8))
    # A report whose top calibrated probability is below this is flagged "uncertain, needs review". Unset: the
    # model's own line (its needs_review output, chosen on validation data when it was trained); 0.6 for models
    # exported without one.
    REPORT_UNCERTAIN_BELOW = (float(os.environ["RADASSIST_UNCERTAIN_BELOW"])
                              if os.environ.get("RADASSIST_UNCERTAIN_BELOW") else None)
    DEBUG = False
    TESTING = False

    @classmethod
    def validate(cls, config: dict) -> None:
        """Development and tests accept anything; ProductionConfig overrides this."""


class DevelopmentConfig(Config):
    DEBUG = False


class TestingConfig(Config):
    TESTING = True
    # Tests exercise logins, not Argon2's cost: a 1 MiB, single-pass profile (about a millisecond, not 0.2 s).
    PASSWORD_HASHING = {"time_cost": 1, "memory_cost": 1024, "parallelism": 1}
    SECRET_KEY = None  # a random one per app (create_app): no fixed secret exists that a deployment could run with
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
        if str(config.get("RATELIMIT_STORAGE_URI", "")).startswith("memory://"):
            problems.append("RADASSIST_RATELIMIT_STORAGE_URI must name shared storage (redis://...): per-process "
                            "counters let every worker process allow its own share of login attempts")
        hashing = config.get("PASSWORD_HASHING") or {}
        if hashing.get("memory_cost", 65536) < 65536 or hashing.get("time_cost", 3) < 3:
            problems.append("PASSWORD_HASHING must be at least Argon2id's 64 MiB, t=3 profile")
        if problems:
            raise UnsafeConfiguration("refusing to start in production: " + "; ".join(problems))


CONFIGS = {"development": DevelopmentConfig, "testing": TestingConfig, "production": ProductionConfig}
