"""Flask application factory: one POST route per Metacontroller hook, served by gunicorn.

Each route parses the JSON body, hands it to a pure hook function with a HookContext, and answers 200 with
the hook's JSON. A malformed request gets 400 with a JSON error; an unexpected failure gets a JSON 500 that
names no secret (Metacontroller retries with backoff).
"""

from __future__ import annotations

import base64
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import ClientDisconnected, HTTPException

from hooks.config import ConfigError, Settings
from hooks.context import BadRequest, HookContext, Runtime, utc_now
from hooks.driver import Driver
from hooks.equinix.driver import EquinixDriver, client_factory
from hooks.server import logs, metrics
from hooks.server.auth import check_bearer
from hooks.server.jsonio import FastJSONProvider
from hooks.target import kubeconfig as target_kubeconfig

Hook = Callable[[dict[str, Any], HookContext], dict[str, Any]]
log = logging.getLogger("hooks")
access_log = logging.getLogger("hooks.access")

# Requests larger than this are refused before parsing (Metacontroller sends whole objects, never megabytes).
MAX_BODY_BYTES = 16 * 1024 * 1024


def _routes() -> dict[str, Hook]:
    """Path → hook function. Imported lazily so a broken module shows up as a clear start-up error."""
    routes: dict[str, Hook] = {}
    from hooks.mcm import machine

    routes["/machine/customize"] = machine.customize
    routes["/machine/sync"] = machine.sync
    routes["/machine/finalize"] = machine.finalize
    from hooks.mcm import machineclass, machinedeployment, machineset

    routes["/machineset/customize"] = machineset.customize
    routes["/machineset/sync"] = machineset.sync
    routes["/machinedeployment/sync"] = machinedeployment.sync
    from hooks.mcm import deployment_revision

    routes["/machinedeployment-revision/customize"] = deployment_revision.customize
    routes["/machinedeployment-revision/sync"] = deployment_revision.sync
    routes["/machineclass/customize"] = machineclass.customize
    routes["/machineclass/sync"] = machineclass.sync
    routes["/machineclass/finalize"] = machineclass.finalize
    from hooks.mcm import credentials

    routes["/credentials/customize"] = credentials.customize
    routes["/credentials/sync"] = credentials.sync
    routes["/credentials/finalize"] = credentials.finalize
    return routes


def _default_metal_factory(settings: Settings) -> Callable[[str], Any]:
    """The Equinix client factory, with this server's log redaction and metrics attached."""
    return client_factory(settings, register_secret=logs.register_secret, observe_call=metrics.observe_api_call,
                          observe_rate_limit=metrics.observe_rate_limit)


def create_app(
    settings: Settings | None = None,
    *,
    metal: Callable[[str], Any] | None = None,
    clock: Callable[[], Any] | None = None,
    driver: Driver | None = None,
) -> Flask:
    """The hook server. `metal` builds a Metal API client per token (tests pass a fake or the simulator's);
    `driver` replaces the Equinix driver built on it (tests pass a fake Driver)."""
    app = Flask("hooks")
    app.json = FastJSONProvider(app)  # orjson: large parents decode and encode in a fraction of the time (bench/)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    config_error = ""
    if settings is None:
        try:
            settings = Settings.from_env()
        except ConfigError as exc:
            config_error = str(exc)
            settings = Settings()
    log_level_error = logs.configure_logging(os.environ.get("LOG_LEVEL"))
    config_error = "; ".join(e for e in (config_error, log_level_error) if e)
    metal = metal or _default_metal_factory(settings)
    ctx = HookContext(
        settings=settings,
        metal=metal,
        clock=clock or utc_now,
        driver=driver or EquinixDriver(settings, metal),
        runtime=Runtime(),  # one per app: the class scan clock
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

    @app.get("/metrics")
    def prometheus_metrics() -> Any:
        body, content_type = metrics.exposition()
        return Response(body, content_type=content_type)

    routes = _routes()
    for path, hook in routes.items():
        app.add_url_rule(path, endpoint=path, view_func=_view(hook, ctx), methods=["POST"])
    _instrument(app, settings, frozenset(routes))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        if exc.code == 413:
            return jsonify({"error": f"request body larger than {MAX_BODY_BYTES} bytes"}), 413
        if isinstance(exc, ClientDisconnected):  # the body stopped arriving (read deadline, hooks/server/worker.py)
            return jsonify({"error": "request body was not received in time; send the whole request at once"}), 408
        return jsonify({"error": exc.description or exc.name}), exc.code

    return app


def _instrument(app: Flask, settings: Settings, hook_paths: frozenset[str]) -> None:
    """Request id, logging scope, bearer-token check, latency metric and one log line per hook call.

    The token check runs before the body is parsed: an unauthenticated request's body is read and dropped, never
    parsed or logged.
    """

    @app.before_request
    def begin() -> Any:
        hook = request.endpoint if request.endpoint in hook_paths else None
        g.started = time.perf_counter()
        g.hook = hook
        g.request_id = logs.new_request_id(request.headers.get(logs.REQUEST_ID_HEADER))
        g.log_scope = logs.begin_request(g.request_id, hook)
        if hook:
            g.metrics_scope = metrics.begin_request(hook)
        if hook and settings.hook_auth_token:
            problem = check_bearer(request.headers.get("Authorization"), settings.hook_auth_token)
            if problem:
                _discard_body()
                response = jsonify({"error": problem})
                response.status_code = 401
                response.headers["WWW-Authenticate"] = 'Bearer realm="metal-machine-hooks"'
                return response
        return None

    @app.after_request
    def finish(response: Response) -> Response:
        request_id = g.get("request_id")
        if request_id:
            response.headers[logs.REQUEST_ID_HEADER] = request_id
        hook = g.get("hook")
        if hook:
            seconds = time.perf_counter() - g.started
            outcome = metrics.outcome_for_status(response.status_code, api_failed=metrics.request_api_failed())
            metrics.observe_hook(hook, outcome, seconds)
            level = {"ok": logging.INFO, "bad_request": logging.WARNING, "api_error": logging.WARNING}.get(
                outcome, logging.ERROR)
            access_log.log(
                level,
                "%s answered %d",
                hook,
                response.status_code,
                extra={"status": response.status_code, "outcome": outcome, "duration_ms": round(seconds * 1000, 3)},
            )
        return response

    @app.teardown_request
    def end(_exc: BaseException | None) -> None:
        metrics.end_request(g.pop("metrics_scope", None))
        scope = g.pop("log_scope", None)
        if scope is not None:
            logs.end_request(scope)


def _discard_body() -> None:
    """Reads and drops the body of a request we refuse unread (bounded by MAX_CONTENT_LENGTH).

    Left unread, gunicorn's gthread worker drains it later in a pool thread that then blocks waiting for the
    next request on the kept-alive connection: a busy thread, and a graceful shutdown that waits its full timeout.
    """
    try:
        while request.stream.read(64 * 1024):
            pass
    except (HTTPException, OSError):  # too large or the client went away: nothing left worth reading
        pass


def _subject(body: dict[str, Any]) -> str | None:
    """"Kind namespace/name" of the object a hook request is about: `object` (decorators) or `parent`."""
    target = body.get("object") if isinstance(body.get("object"), dict) else body.get("parent")
    meta = target.get("metadata") if isinstance(target, dict) else None
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
        return None
    kind = target.get("kind") if isinstance(target.get("kind"), str) else "object"
    namespace = meta.get("namespace")
    name = f"{namespace}/{meta['name']}" if isinstance(namespace, str) and namespace else meta["name"]
    return f"{kind} {name}"[:300]


def _secret_values(body: dict[str, Any]) -> list[str]:
    """Every value of every Secret in a hook request (API tokens, userData), decoded, so no log line can show one.

    Metacontroller hands us Secrets in the `related`, `attachments` and `children` maps (kind key, then name key),
    and a Secret decorator (the credentials controller) gets one as the decorated object itself. A target
    kubeconfig Secret's token, client certificate and key are added as parsed (hooks/target/kubeconfig.py), so a
    short token an echo prints alone is still scrubbed.
    """
    secrets: list[Any] = [body.get(key) for key in ("object", "parent")]
    for group in ("related", "attachments", "children"):
        kinds = body.get(group)
        for objects in kinds.values() if isinstance(kinds, dict) else ():
            secrets += objects.values() if isinstance(objects, dict) else ()
    values: list[str] = []
    for obj in secrets:
        if not isinstance(obj, dict) or obj.get("kind") != "Secret":
            continue
        for field in ("data", "stringData"):
            data = obj.get(field)
            for value in data.values() if isinstance(data, dict) else ():
                if isinstance(value, str):
                    values += [value, *_decoded(value)] if field == "data" else [value]
        values += _target_credentials(obj)
    return values


def _target_credentials(secret: dict[str, Any]) -> list[str]:
    """The credentials inside a target kubeconfig Secret; nothing when it is not one or cannot be parsed."""
    labels = (secret.get("metadata") or {}).get("labels")
    wanted = target_kubeconfig.TARGET_LABEL_VALUE
    if not isinstance(labels, dict) or labels.get(target_kubeconfig.TARGET_LABEL) != wanted:
        return []
    data = secret.get("data")
    raw = data.get(target_kubeconfig.KUBECONFIG_KEY) if isinstance(data, dict) else None
    text = _decoded(raw) if isinstance(raw, str) else []
    try:
        return target_kubeconfig.parse(text[0]).secrets() if text else []
    except target_kubeconfig.TargetConfigError:
        return []


def _decoded(value: str) -> list[str]:
    try:
        return [base64.b64decode(value, validate=True).decode()]
    except (ValueError, UnicodeDecodeError):
        return []


def _view(hook: Hook, ctx: HookContext) -> Callable[[], Any]:
    def view() -> Any:
        try:
            body = request.get_json(silent=True, force=True)
        except RecursionError:  # nested deeper than the JSON decoder can follow: not a Metacontroller request
            return jsonify({"error": "request body is nested too deeply to be a JSON object we can read"}), 400
        if not isinstance(body, dict):
            return jsonify({"error": "request body must be a JSON object"}), 400
        for secret in _secret_values(body):
            logs.register_secret(secret)
        logs.set_subject(_subject(body))
        try:
            return jsonify(hook(body, ctx))
        except BadRequest as exc:
            return jsonify({"error": str(exc)}), 400
        except Exception:
            log.exception("hook %s failed", request.path)
            return jsonify({"error": f"internal error in {request.path}; see the hook server log"}), 500

    view.__name__ = f"hook_{hook.__module__}_{hook.__name__}"
    return view
