"""The portal's `radassist` commands (importable without the portal's dependencies: they are imported when run).

- ``radassist portal``: migrate, create the first admin, then gunicorn and the report workers under the
  supervisor (portal/supervisor.py); ``radassist worker``: one report worker.
- ``radassist users ...``, ``radassist migrate``: the app's Flask CLI commands (portal/commands.py).
This entry point reads $RADASSIST_ENV and the $RADASSIST_PORTAL_* defaults; the app reads its configuration once
(portal/config.py).
"""

import logging
import os
import sys

# The app's Flask CLI commands that `radassist` runs too, and whether the database is migrated before each.
APP_COMMANDS = {"users": True, "migrate": False, "feedback": True}


def migrated_app():
    """The portal app, its database migrated first, except in production, where `radassist migrate` runs once per
    release (infra/portal/migrate-job.yaml) instead of in every replica at once."""
    from portal import create_app
    from portal.database import upgrade

    app = create_app(environment=os.environ.get("RADASSIST_ENV"))
    if app.config["ENVIRONMENT"] != "production":
        upgrade(app.config["SQLALCHEMY_DATABASE_URI"])
    return app


def run_app_command(argv: list[str]) -> int:
    """Runs one of the app's Flask CLI commands (``users ...``, ``migrate``) as ``radassist <argv>``."""
    import click
    from flask.cli import FlaskGroup

    from portal import create_app

    migrate_first = APP_COMMANDS[argv[0]]
    factory = migrated_app if migrate_first else (lambda: create_app(environment=os.environ.get("RADASSIST_ENV")))
    group = FlaskGroup(create_app=factory, add_default_commands=False, load_dotenv=False)
    try:
        group.main(args=argv, prog_name="radassist", standalone_mode=False)
    except click.exceptions.Abort:
        return 1
    except click.ClickException as error:
        error.show()
        return error.exit_code
    return 0


def cmd_portal(args) -> int:
    """Migrates the database, creates the first admin if there is none, then runs gunicorn and the report workers
    under a supervisor that restarts whichever of them dies (portal/supervisor.py)."""
    from portal.accounts import FIRST_ADMIN_EMAIL, ensure_first_admin
    from portal.supervisor import Child, Supervisor, worker_name

    app = migrated_app()
    with app.app_context():
        password = ensure_first_admin()
    if password:
        print(f"First start: admin login {FIRST_ADMIN_EMAIL} / {password}  (shown once; change it after login)",
              file=sys.stderr)
    bind = f"{args.host}:{args.port}"
    print(f"RadAssist portal on http://{bind}", file=sys.stderr)
    if args.workers > 1 and str(app.config["RATELIMIT_STORAGE_URI"]).startswith("memory://"):
        print(f"note: login rate limits are counted per web process ({args.workers} of them); set "
              "RADASSIST_RATELIMIT_STORAGE_URI=redis://... to share them", file=sys.stderr)
    children = [Child("gunicorn", [sys.executable, "-m", "gunicorn", "--bind", bind, "--workers", str(args.workers),
                                   "--threads", "4", "--access-logfile", "-", "portal.wsgi:app"])]
    if args.report_workers:
        print(f"{args.report_workers} report worker(s), model server {app.config['MODEL_SERVER']}, queue "
              f"{app.config['JOB_QUEUE_URL'] or 'in the database'}", file=sys.stderr)
        children += [Child(f"report worker {i}", [sys.executable, "-m", "radassist.cli", "worker", "--name",
                                                  worker_name(i)]) for i in range(args.report_workers)]
    logging.getLogger("portal.supervisor").setLevel(logging.INFO)
    return Supervisor(children).run()


def cmd_worker(args) -> int:
    """Runs one report worker: analysis jobs -> model server -> draft reports."""
    from portal import worker

    logging.getLogger("portal").setLevel(logging.INFO)
    worker.main(migrated_app(), name=args.name)
    return 0


def add_commands(areas) -> None:
    """Registers ``portal``, ``worker``, ``users`` and ``migrate`` on the dispatcher's subparsers."""
    portal = areas.add_parser("portal", help="run the portal under gunicorn, with its report workers")
    portal.add_argument("--host", default=os.environ.get("RADASSIST_PORTAL_HOST", "127.0.0.1"))
    portal.add_argument("--port", type=int, default=int(os.environ.get("RADASSIST_PORTAL_PORT", 8000)))
    portal.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    portal.add_argument("--report-workers", type=int, default=int(os.environ.get("RADASSIST_REPORT_WORKERS", 1)),
                        help="report workers to start beside gunicorn (0 when they run elsewhere)")
    portal.set_defaults(func=cmd_portal)
    worker = areas.add_parser("worker", help="run a report worker (analysis jobs -> model server -> reports)")
    worker.add_argument("--name", help="stable worker name: a restarted worker takes back the jobs its "
                                       "predecessor of the same name held (default <host>-<pid>)")
    worker.set_defaults(func=cmd_worker)
    # Listed for --help; radassist.cli hands their arguments to the Flask commands before argparse sees them.
    areas.add_parser("users", help="portal accounts (create, list)", add_help=False)
    areas.add_parser("migrate", help="bring the portal database to the newest schema", add_help=False)
    areas.add_parser("feedback", help="export doctors' sign-off readings as CSV (feedback export --out F)",
                     add_help=False)
