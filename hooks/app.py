"""Kept so that `gunicorn "hooks.app:create_app()"` (the image command) works; the factory is hooks.server.app."""

from hooks.server.app import create_app

__all__ = ["create_app"]
