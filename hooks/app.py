"""Flask application factory: one POST route per Metacontroller hook, served by gunicorn.

Each route parses the JSON body, hands it to a pure hook function with a HookContext, and answers 200 with
the hook's JSON. A malformed request gets 400 with a JSON error; an unexpected failure gets a JSON 500 that
names no secret (Metacontroller retries with backoff).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from hooks.config import ConfigError, Settings
from hooks.context import BadRequest, HookContext, utc_now

Hook = Callable[[dict[str, Any], HookContext], dict[str, Any]]
log = logging.getLogger("hooks")

# Requests larger than this are refused before parsing (Metacontroller sends whole objects, never megabytes).
MAX_BODY_BYTES = 16 * 1024 * 1024


def _routes() -> dict[str, Hook]:
    """Path → hook function. Imported lazily so a broken module shows up as a clear start-up error."""
    routes: dict[str, Hook] = {}
    from hooks import machine

    routes["/machine/customize"] = machine.customize
    routes["/machine/sync"] = machine.sync
    routes["/machine/finalize"] = machine.finalize
    return routes


def _default_metal_factory(settings: Settings) -> Callable[[str], Any]:
    def build(token: str) -> Any:
        from hooks.metal import MetalClient

        return MetalClient(
            token,
            base_url=settings.metal_api_url,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            retry_budget=settings.retry_budget,
        )

    return build


def create_app(
    settings: Settings | None = None,
    *,
    metal: Callable[[str], Any] | None = None,
    clock: Callable[[], Any] | None = None,
) -> Flask:
    app = Flask("hooks")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    config_error = ""
    if settings is None:
        try:
            settings = Settings.from_env()
        except ConfigError as exc:
            config_error = str(exc)
            settings = Settings()
    ctx = HookContext(
        settings=settings,
        metal=metal or _default_metal_factory(settings),
        clock=clock or utc_now,
    )
    app.extensions["hook_context"] = ctx

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify({"status": "ok"})

    @app.get("/readyz")
    def readyz() -> Any:
        if config_error:
            return jsonify({"status": "not ready", "error": config_error}), 503
        return jsonify({"status": "ready"})

    for path, hook in _routes().items():
        app.add_url_rule(path, endpoint=path, view_func=_view(hook, ctx), methods=["POST"])

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        return jsonify({"error": exc.description or exc.name}), exc.code

    return app


def _view(hook: Hook, ctx: HookContext) -> Callable[[], Any]:
    def view() -> Any:
        body = request.get_json(silent=True, force=True)
        if not isinstance(body, dict):
            return jsonify({"error": "request body must be a JSON object"}), 400
        try:
            return jsonify(hook(body, ctx))
        except BadRequest as exc:
            return jsonify({"error": str(exc)}), 400
        except Exception:
            log.exception("hook %s failed", request.path)
            return jsonify({"error": f"internal error in {request.path}; see the hook server log"}), 500

    view.__name__ = f"hook_{hook.__module__}_{hook.__name__}"
    return view
