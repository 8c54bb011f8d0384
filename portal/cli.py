"""The portal's commands.

- Flask CLI commands the app registers (``flask --app portal.wsgi users create|list``, ``flask ... migrate``);
  ``radassist users ...`` and ``radassist migrate`` run the same commands.
- ``radassist portal``: migrate, create the first admin, then gunicorn and the report workers under the
  supervisor (portal/supervisor.py); ``radassist worker``: one report worker.
This entry point reads $RADASSIST_ENV and the $RADASSIST_PORTAL_* defaults; the app reads its configuration once
(portal/config.py).
"""

import logging
import os
import sys

import click
from flask import Flask
from flask.cli import FlaskGroup, with_appcontext

ROLES = ("admin", "doctor", "patient")
# The app's Flask CLI commands that `radassist` runs too, and whether the database is migrated before each.
APP_COMMANDS = {"users": True, "migrate": False}


def migrated_app() -> Flask:
    """The portal app, its database migrated first, except in production, where `radassist migrate` runs once per
    release (infra/portal/migrate-job.yaml) instead of in every replica at once."""
    from portal import create_app
    from portal.database import upgrade

    app = create_app(environment=os.environ.get("RADASSIST_ENV"))
    if app.config["ENVIRONMENT"] != "production":
        upgrade(app.config["SQLALCHEMY_DATABASE_URI"])
    return app


@click.group("users", help="Portal accounts.")
def users() -> None:
    pass


@users.command("create", help="Create an admin, doctor or patient.")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--email", required=True)
@click.option("--name", required=True)
@click.option("--doctor", help="The patient's doctor (email).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@with_appcontext
def users_create(role: str, email: str, name: str, doctor: str | None, password_stdin: bool) -> None:
    from portal.accounts import AccountError, create_user
    from portal.models import Role, User, db
    from portal.security import WeakPassword, record

    password = sys.stdin.readline().rstrip("\n") if password_stdin else click.prompt("Password", hide_input=True)
    doctor_user = db.session.scalar(db.select(User).where(User.email == doctor.lower())) if doctor else None
    try:
        user = create_user(email, name, Role(role), password, doctor=doctor_user)
    except (AccountError, WeakPassword) as error:
        raise click.ClickException(str(error)) from error
    record(f"{role}_created", user, detail="created with the radassist CLI")
    db.session.commit()
    click.echo(f"created {role} {user.email} (id {user.id})")


@users.command("list", help="List accounts.")
@with_appcontext
def users_list() -> None:
    from portal.models import User, db

    for user in db.session.scalars(db.select(User).order_by(User.role, User.email)):
        click.echo(f"{user.id:>5}  {user.role:<8} {user.email:<40} {'active' if user.active else 'disabled'}")


@click.command("migrate", help="Bring the portal database to the newest schema.")
@with_appcontext
def migrate() -> None:
    from flask import current_app

    from portal.database import upgrade

    upgrade(current_app.config["SQLALCHEMY_DATABASE_URI"])
    click.echo("database schema is up to date", err=True)


def init_app(app: Flask) -> None:
    """Registers the portal's Flask CLI commands on ``app``."""
    app.cli.add_command(users)
    app.cli.add_command(migrate)


def run_app_command(argv: list[str]) -> int:
    """Runs one of the app's Flask CLI commands (``users ...``, ``migrate``) as ``radassist <argv>``."""
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
