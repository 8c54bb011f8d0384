"""The portal's Flask CLI commands, registered on every app (``flask --app portal.wsgi users create|list``,
``flask --app portal.wsgi migrate``); ``radassist users ...`` and ``radassist migrate`` run the same commands
(portal/cli.py)."""

import sys

import click
from flask import Flask
from flask.cli import with_appcontext

ROLES = ("admin", "doctor", "patient")


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


@click.group("feedback", help="Doctors' sign-off readings (labels for monitoring and retraining).")
def feedback() -> None:
    pass


@feedback.command("export", help="Write every signed reading as CSV (no names, no patient identifiers).")
@click.option("--out", type=click.Path(dir_okay=False, writable=True), help="The CSV file (default: stdout).")
@click.option("--images", type=click.Path(file_okay=False, writable=True),
              help="Also write the image each reading is of, as <folder>/<image_sha256> (for radassist retrain).")
@with_appcontext
def feedback_export(out: str | None, images: str | None) -> None:
    from portal import feedback as labels
    from portal.extensions import blobs
    from portal.models import db
    from portal.security import record

    records = labels.rows()
    text = labels.to_csv(records)
    if images:
        click.echo(f"{labels.export_images(records, blobs.store, images)} images in {images}", err=True)
    if out:
        with open(out, "w", newline="") as handle:
            handle.write(text)
    else:
        click.echo(text, nl=False)
    record("feedback_exported", detail=f"{len(records)} readings, radassist CLI")
    db.session.commit()
    click.echo(f"{len(records)} signed readings", err=True)


def init_app(app: Flask) -> None:
    """Registers the portal's Flask CLI commands on ``app``."""
    app.cli.add_command(users)
    app.cli.add_command(migrate)
    app.cli.add_command(feedback)
