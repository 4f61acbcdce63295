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

from hooks import deadline, objects
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

MIB = 1024 * 1024
# Per-route body limits, checked against Content-Length before anything is read (and as a streamed cap for a
# chunked body). A MachineSet of 1000 Machines is a 3 MB sync request (bench/results.json machineset_1000
# request_bytes), and class and deployment syncs carry as many: those routes get 20x headroom. A Machine's hooks
# carry one Machine with its Node, class, Secret and Jobs; a customize request only the parent.
BODY_LIMITS: dict[str, int] = {
    "/machine/customize": 2 * MIB, "/machine/sync": 8 * MIB, "/machine/finalize": 8 * MIB,
    "/machineset/customize": 2 * MIB, "/machineset/sync": 64 * MIB,
    "/machinedeployment/sync": 64 * MIB,
    "/machineclass/customize": 2 * MIB, "/machineclass/sync": 64 * MIB, "/machineclass/finalize": 64 * MIB,
    "/credentials/customize": 2 * MIB, "/credentials/sync": 16 * MIB, "/credentials/finalize": 16 * MIB,
}
# The largest limit; kept as the app-wide cap for anything not in the table.
MAX_BODY_BYTES = max(BODY_LIMITS.values())
# A refused request's body is read and dropped up to this size, so the kept-alive connection stays usable;
# a larger (or unbounded) one is not read at all and the connection is closed instead.
DISCARD_LIMIT = 256 * 1024


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
    settings, config_error = _configure(settings)
    ctx: HookContext | None = None
    if settings is not None:
        metal = metal or _default_metal_factory(settings)
        ctx = HookContext(
            settings=settings,
            metal=metal,
            clock=clock or utc_now,
            driver=driver or EquinixDriver(settings, metal),
            runtime=Runtime(),  # one per app: the class scan clock
        )
        app.extensions["hook_context"] = ctx
    _add_probes(app, config_error)
    routes = _routes()
    for path, hook in routes.items():
        view = _view(hook, ctx) if ctx is not None and not config_error else _closed_view(hook, config_error)
        app.add_url_rule(path, endpoint=path, view_func=view, methods=["POST"])
    _instrument(app, settings.hook_tokens if settings is not None else [], config_error, frozenset(routes))
    app.register_error_handler(HTTPException, _http_error)
    return app


def _configure(settings: Settings | None) -> tuple[Settings | None, str]:
    """The settings (from the environment unless given) and, joined, every reason the server must not serve:
    invalid settings, an unknown LOG_LEVEL, no hook token. Logging is configured here, once per app."""
    problems: list[str] = []
    if settings is None:
        try:
            settings = Settings.from_env()
        except ConfigError as exc:
            # Never a fallback to defaults: they would drop the token and every other choice the operator made.
            problems.append(str(exc))
    problems.append(logs.configure_logging(os.environ.get("LOG_LEVEL")))
    if settings is not None:
        problems.append(settings.auth_problem())
    return settings, "; ".join(p for p in problems if p)


def _add_probes(app: Flask, config_error: str) -> None:
    """/healthz (the process answers), /readyz (it is configured to serve hooks) and /metrics."""

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


def _http_error(exc: HTTPException) -> Any:
    """Werkzeug's HTTP errors as JSON; a body over its route's limit (413) closes the connection."""
    if exc.code == 413:
        limit = BODY_LIMITS.get(request.path, MAX_BODY_BYTES)
        response = jsonify({"error": f"request body larger than {limit} bytes"})
        response.status_code = 413
        response.headers["Connection"] = "close"  # the rest of the body is never read
        return response
    if isinstance(exc, ClientDisconnected):  # the body stopped arriving (read deadline, hooks/server/worker.py)
        return jsonify({"error": "request body was not received in time; send the whole request at once"}), 408
    return jsonify({"error": exc.description or exc.name}), exc.code


def _instrument(app: Flask, tokens: list[str], closed: str, hook_paths: frozenset[str]) -> None:
    """Request id, logging scope, closed-door and bearer-token checks, body limit, latency metric and one log
    line per hook call.

    The checks run before the body is parsed: a refused request's body is never parsed or logged, and one larger
    than its route allows is refused from its Content-Length alone, before a byte of it is read.
    """

    @app.before_request
    def begin() -> Any:
        hook = request.endpoint if request.endpoint in hook_paths else None
        g.started = time.perf_counter()
        g.arrived = time.monotonic()  # the hook call's deadline counts from here, body reading included
        g.hook = hook
        g.request_id = logs.new_request_id(request.headers.get(logs.REQUEST_ID_HEADER))
        g.log_scope = logs.begin_request(g.request_id, hook)
        if not hook:
            return None
        g.metrics_scope = metrics.begin_request(hook)
        return _admit(hook, tokens, closed)

    @app.after_request
    def finish(response: Response) -> Response:
        request_id = g.get("request_id")
        if request_id:
            response.headers[logs.REQUEST_ID_HEADER] = request_id
        hook = g.get("hook")
        if hook:
            _observe(hook, response.status_code, time.perf_counter() - g.started)
        return response

    @app.teardown_request
    def end(_exc: BaseException | None) -> None:
        metrics.end_request(g.pop("metrics_scope", None))
        scope = g.pop("log_scope", None)
        if scope is not None:
            logs.end_request(scope)


def _admit(hook: str, tokens: list[str], closed: str) -> Response | None:
    """The refusal of a hook request before its body is read (closed server, bad token, body over the route's
    limit), or None to serve it."""
    limit = BODY_LIMITS.get(hook, MAX_BODY_BYTES)
    request.max_content_length = limit  # also caps a chunked body as it streams in (413)
    if closed:
        return _refuse(503, f"the hook server is not configured correctly: {closed}")
    if tokens:
        problem = check_bearer(request.headers.get("Authorization"), tokens)
        if problem:
            response = _refuse(401, problem)
            response.headers["WWW-Authenticate"] = 'Bearer realm="metal-machine-hooks"'
            return response
    if request.content_length is not None and request.content_length > limit:
        return _refuse(413, f"request body larger than {limit} bytes")
    return None


def _observe(hook: str, status: int, seconds: float) -> None:
    """A hook call's latency metric by outcome, and its one access log line (WARN for a client or API problem)."""
    outcome = metrics.outcome_for_status(status, api_failed=metrics.request_api_failed())
    metrics.observe_hook(hook, outcome, seconds)
    level = {"ok": logging.INFO, "bad_request": logging.WARNING, "api_error": logging.WARNING}.get(
        outcome, logging.ERROR)
    access_log.log(
        level,
        "%s answered %d",
        hook,
        status,
        extra={"status": status, "outcome": outcome, "duration_ms": round(seconds * 1000, 3)},
    )


def _refuse(status: int, error: str) -> Response:
    """An answer that leaves the body unparsed; the connection is closed unless the body was small enough to drop."""
    response = jsonify({"error": error})
    response.status_code = status
    if not _discard_body():
        response.headers["Connection"] = "close"
    return response


def _discard_body() -> bool:
    """Reads and drops a refused request's body when it is small (DISCARD_LIMIT); False when it was left unread.

    Left unread on a kept-alive connection, gunicorn's gthread worker drains it later in a pool thread that then
    blocks waiting for the next request: a busy thread, and a graceful shutdown that waits its full timeout. A large
    or unbounded (chunked) body is not worth reading: the caller closes the connection instead.
    """
    length = request.content_length
    if length is None and request.headers.get("Transfer-Encoding", "").lower() != "chunked":
        return True  # no body
    if length is None or length > DISCARD_LIMIT:
        return False
    try:
        stream = request.stream
        left = length
        while left > 0:
            chunk = stream.read(min(64 * 1024, left))
            if not chunk:
                break
            left -= len(chunk)
    except (HTTPException, OSError):  # the client went away: nothing left worth reading
        return False
    return True


def _subject(body: dict[str, Any]) -> str | None:
    """"Kind namespace/name" of the object a hook request is about: `object` (decorators) or `parent`."""
    target = body.get("object") if isinstance(body.get("object"), dict) else body.get("parent")
    meta = target.get("metadata") if isinstance(target, dict) else None
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
        return None
    kind = objects.string(target, "kind", default="object")
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
        for group_objects in kinds.values() if isinstance(kinds, dict) else ():
            secrets += group_objects.values() if isinstance(group_objects, dict) else ()
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
    labels = objects.labels(secret)
    if labels.get(target_kubeconfig.TARGET_LABEL) != target_kubeconfig.TARGET_LABEL_VALUE:
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


def _closed_view(hook: Hook, reason: str) -> Callable[[], Any]:
    """The route of a server that must not serve (invalid configuration, no token): 503 with the reason."""

    def view() -> Any:
        return jsonify({"error": f"the hook server is not configured correctly: {reason}"}), 503

    view.__name__ = f"closed_{hook.__module__}_{hook.__name__}"
    return view


def _view(hook: Hook, ctx: HookContext) -> Callable[[], Any]:
    def view() -> Any:
        # Read first, outside get_json's silence: a body cut at the route's limit (a chunked one has no
        # Content-Length to refuse up front) is a 413, and one that stopped arriving a 408, not "not JSON".
        data = request.get_data(cache=True)
        limit = request.max_content_length
        if request.content_length is None and limit is not None and len(data) >= limit:
            request.stream.read(1)  # at the cap: werkzeug raises 413 if the body goes on
        try:
            body = request.get_json(silent=True, force=True)
        except RecursionError:  # nested deeper than the JSON decoder can follow: not a Metacontroller request
            return jsonify({"error": "request body is nested too deeply to be a JSON object we can read"}), 400
        if not isinstance(body, dict):
            return jsonify({"error": "request body must be a JSON object"}), 400
        for secret in _secret_values(body):
            logs.register_secret(secret)
        logs.set_subject(_subject(body))
        # One deadline per call, from the webhook timeout the request's own controller config sets: every
        # outbound call checks it, and the hook answers "try again" rather than after Metacontroller gave up.
        budget = deadline.Deadline.for_request(body, request.path.rsplit("/", 1)[-1])
        budget.started = g.get("arrived", budget.started)
        try:
            with deadline.scope(budget):
                return jsonify(hook(body, ctx))
        except BadRequest as exc:
            return jsonify({"error": str(exc)}), 400
        except Exception:
            log.exception("hook %s failed", request.path)
            return jsonify({"error": f"internal error in {request.path}; see the hook server log"}), 500

    view.__name__ = f"hook_{hook.__module__}_{hook.__name__}"
    return view
