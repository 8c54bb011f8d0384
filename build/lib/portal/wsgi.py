"""WSGI entry point for gunicorn: ``gunicorn portal.wsgi:app`` (configuration from the environment; $RADASSIST_ENV
picks development, testing or production)."""

import os

from portal import create_app

app = create_app(environment=os.environ.get("RADASSIST_ENV"))
