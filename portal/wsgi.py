"""WSGI entry point for gunicorn: ``gunicorn portal.wsgi:app`` (configuration from the environment)."""

from portal import create_app

app = create_app()
