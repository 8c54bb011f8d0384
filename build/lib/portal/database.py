"""Schema management through Alembic (SQLite by default, PostgreSQL in production)."""

import os

from alembic import command
from alembic.config import Config as AlembicConfig

MIGRATIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")


def alembic_config(database_url: str) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", MIGRATIONS)
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str) -> None:
    """Brings the database to the newest schema; safe to run at every start."""
    command.upgrade(alembic_config(database_url), "head")
