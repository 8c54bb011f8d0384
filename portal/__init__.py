"""RadAssist portal: doctors and patients log in, upload CT slices and read decision-support reports."""

import os
import secrets

from flask import Flask, current_app, g, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from sqlalchemy import exc as sa_exc
from werkzeug.exceptions import HTTPException, ServiceUnavailable

from portal import config as portal_config
from portal.extensions import blobs, csrf, limiter, report_jobs
from portal.models import db
from portal.storage import StorageUnavailable


def create_app(test_config: dict | None = None, environment: str | None = None) -> Flask:
    """Application factory. ``environment``: development (default), testing or production (entry points pass
    $RADASSIST_ENV: portal/wsgi.py, portal/cli.py)."""
    app = Flask(__name__, instance_relative_config=True)
    environment = environment or "development"
    if environment not in portal_config.CONFIGS:
        raise portal_config.UnsafeConfiguration(f"RADASSIST_ENV must be one of {sorted(portal_config.CONFIGS)}, "
                                                f"not {environment!r}")
    config_class = portal_config.CONFIGS[environment]
    app.config.from_object(config_class)
    app.config["ENVIRONMENT"] = environment
    if test_config:
        app.config.update(test_config)
    config_class.validate(app.config)  # before any default is filled in: production must be explicit
    os.makedirs(app.instance_path, exist_ok=True)
    if not app.config["SQLALCHEMY_DATABASE_URI"]:
        app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///" + os.path.join(app.instance_path, "radassist.db")
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):  # a dead database fails fast, not in 2 min
        options = app.config["SQLALCHEMY_ENGINE_OPTIONS"] = dict(app.config["SQLALCHEMY_ENGINE_OPTIONS"])
        options["connect_args"] = {"connect_timeout": app.config["DATABASE_CONNECT_TIMEOUT"],
                                   **options.get("connect_args", {})}
        options.setdefault("pool_timeout", 10)  # waiting for a pooled connection, seconds
    if not app.config["SCAN_STORE"]:
        app.config["SCAN_STORE"] = os.path.join(app.instance_path, "scans")
    if not app.config.get("SECRET_KEY") and environment == "development":
        app.config["SECRET_KEY"] = _development_secret(app.instance_path)
    if not app.config.get("SECRET_KEY") and environment == "testing":
        app.config["SECRET_KEY"] = os.urandom(32).hex()
    if app.config["TRUSTED_PROXIES"]:
        from werkzeug.middleware.proxy_fix import ProxyFix

        hops = app.config["TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)

    from portal import commands

    db.init_app(app)
    commands.init_app(app)
    blobs.init_app(app)
    report_jobs.init_app(app)
    csrf.init_app(app)
    limiter.init_app(app)

    from portal import admin, api, auth, doctor, patient, report_pages, scans
    from portal.jobs import batch_progress
    from portal.security import load_current_user

    app.before_request(load_current_user)
    for blueprint in (auth.bp, admin.bp, doctor.bp, patient.bp, scans.bp, report_pages.bp, api.bp):
        app.register_blueprint(blueprint)

    @app.before_request
    def _csp_nonce():
        g.csp_nonce = secrets.token_urlsafe(16)

    @app.after_request
    def _security_headers(response):
        """What a browser must not do with our pages: frame them (clickjacking the sign-off), guess types, load
        other sites' scripts, keep PHI in its cache or history, or reach us over plain HTTP once it knows better."""
        nonce = g.get("csp_nonce", "")
        response.headers["Content-Security-Policy"] = (
            f"default-src 'self'; script-src 'self' 'nonce-{nonce}'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
            + ("; sandbox" if g.get("csp_sandbox") else ""))
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
        response.headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
        if app.config["SESSION_COOKIE_SECURE"] or request.is_secure:
            response.headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
        if g.get("user") is not None or response.mimetype == "text/html":
            response.headers["Cache-Control"] = "no-store"  # scans, reports and names: never on a shared disk
        return response

    @app.errorhandler(CSRFError)
    def handle_csrf_error(error: CSRFError):
        """An expired or missing form token. What was typed into a report is shown back, so it is not lost."""
        return render_template("error.html", error=error, kept_text=request.form.get("findings")), 400

    @app.errorhandler(HTTPException)
    def handle_http_error(error: HTTPException):
        from portal.security import record, wants_json

        if error.code == 404 and g.get("user") is not None:  # probing for other people's objects is audited
            try:
                record("not_found", detail=f"{request.method} {request.path[:200]}")
                db.session.commit()
            except sa_exc.SQLAlchemyError:
                db.session.rollback()
        if wants_json():
            return jsonify({"error": error.name, "message": error.description}), error.code
        return render_template("error.html", error=error), error.code

    @app.errorhandler(sa_exc.OperationalError)
    @app.errorhandler(sa_exc.TimeoutError)
    def handle_database_down(error):
        app.logger.error("database unavailable: %s", error)
        db.session.rollback()
        return handle_http_error(ServiceUnavailable("The database is not reachable. Nothing was saved; please "
                                                    "try again in a moment."))

    @app.errorhandler(StorageUnavailable)
    def handle_storage_down(error):
        app.logger.error("scan storage unavailable: %s", error)
        db.session.rollback()
        return handle_http_error(ServiceUnavailable("Scan storage is not reachable. Nothing was saved; please "
                                                    "try again in a moment."))

    @app.context_processor
    def inject_user():
        return {"current_user": g.get("user"), "batch_progress": batch_progress, "csp_nonce": g.get("csp_nonce", ""),
                "drift_alert": _drift_alert}

    return app


def _drift_alert() -> dict | None:
    """For an admin's pages: the classifier's newest monitored window when it raised the drift alert."""
    from portal import monitoring

    user = g.get("user")
    if user is None or user.role != "admin" or not current_app.config["MONITORING_DIR"]:
        return None
    return monitoring.latest_alert(current_app.config["MONITORING_DIR"], current_app.config["MODEL_NAME"])


def _development_secret(instance_path: str) -> str:
    """A random per-install secret for development, kept in the instance folder (never used in production)."""
    path = os.path.join(instance_path, "secret_key")
    if not os.path.exists(path):
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
            handle.write(os.urandom(32).hex())
    with open(path) as handle:
        return handle.read().strip()
