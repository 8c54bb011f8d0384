"""RadAssist portal: doctors and patients log in, upload CT slices and read decision-support reports."""

import os

from flask import Flask, g, jsonify, render_template
from sqlalchemy import exc as sa_exc
from werkzeug.exceptions import HTTPException, ServiceUnavailable

from portal import config as portal_config
from portal.extensions import csrf, limiter
from portal.models import db
from portal.storage import StorageUnavailable


def create_app(test_config: dict | None = None, environment: str | None = None) -> Flask:
    """Application factory. ``environment``: development (default), testing or production."""
    app = Flask(__name__, instance_relative_config=True)
    environment = environment or os.environ.get("RADASSIST_ENV", "development")
    config_class = portal_config.CONFIGS[environment]
    app.config.from_object(config_class)
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

    db.init_app(app)
    csrf.init_app(app)
    limiter.init_app(app)

    from portal import admin, api, auth, doctor, patient, report_pages, scans
    from portal.jobs import batch_progress
    from portal.security import load_current_user

    app.before_request(load_current_user)
    for blueprint in (auth.bp, admin.bp, doctor.bp, patient.bp, scans.bp, report_pages.bp, api.bp):
        app.register_blueprint(blueprint)

    @app.errorhandler(HTTPException)
    def handle_http_error(error: HTTPException):
        from portal.security import wants_json

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
        return {"current_user": g.get("user"), "batch_progress": batch_progress}

    return app


def _development_secret(instance_path: str) -> str:
    """A random per-install secret for development, kept in the instance folder (never used in production)."""
    path = os.path.join(instance_path, "secret_key")
    if not os.path.exists(path):
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
            handle.write(os.urandom(32).hex())
    with open(path) as handle:
        return handle.read().strip()
