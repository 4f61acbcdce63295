"""The baseline for hook overhead: a Flask app that parses the request body as the hooks do and answers `{}`.

Served by gunicorn with the same gunicorn.conf.py as the hooks, so the difference to a hook is the hook's own work.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify, request


def create_app() -> Flask:
    app = Flask("bench-noop")

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify({"status": "ok"})

    @app.post("/sync")
    def sync() -> Any:
        body = request.get_json(silent=True, force=True)
        if not isinstance(body, dict):
            return jsonify({"error": "request body must be a JSON object"}), 400
        return jsonify({})

    return app
