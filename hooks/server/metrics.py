"""Prometheus metrics of the hook server: what the hooks do (hook latency, Metal API calls and errors, retries,
rate-limit waits, devices, orphans, drains). Fleet state (Machines by phase, set replicas, drains in progress) is not
here: a stateless worker sees only the objects it was just called for, so those gauges come from kube-state-metrics
(kubernetes/monitoring/kube-state-metrics-crs.yaml), which watches the whole fleet.

Naming follows Prometheus' conventions: one `metal_machine_hooks_` prefix, base units (seconds), `_total` on
counters, and label values from small fixed sets (hook paths, client operations, HTTP status codes folded into a
known list, MCM error codes), so no label carries a Machine name, a device id or a free text.

Under gunicorn with several workers, each worker is its own process; prometheus-client's multiprocess mode
(PROMETHEUS_MULTIPROC_DIR, set by gunicorn.conf.py) keeps the values in files so that /metrics, answered by any
one worker, reports the sum over all of them. Without that variable (tests, `python -m hooks`) the ordinary
in-process registry is used. The variable is read when prometheus_client is first imported, so it must be set
before this module is imported.

Other modules call the small functions below rather than touching the metric objects.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ParamSpec

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics import MetricWrapperBase

from hooks import __version__, events

if TYPE_CHECKING:
    from hooks.equinix.client import ApiCall, RateLimit

P = ParamSpec("P")
log = logging.getLogger("hooks.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "metal_machine_hooks"
# ok: answered 2xx and every Metal API call it made succeeded; api_error: answered (2xx, the failure is written to
# the object's status) but a Metal API call failed; bad_request: 4xx; error: anything else (5xx, a crash).
OUTCOMES = ("ok", "api_error", "bad_request", "error")
# Metacontroller's webhook timeout is at most 30 s (ours are set to 30 s), and the Metal API client's read timeout
# and retry budget are a few seconds each: the buckets resolve both ranges and end past the timeout, so a hook that
# hit it shows up in the 30 s..60 s bucket rather than vanishing into +Inf.
HOOK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 45.0, 60.0)
API_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0)
# HTTP statuses the Metal API is documented to answer; any other is folded into its class ("1xx".."5xx") so a
# misbehaving proxy cannot create a series per status.
KNOWN_STATUSES = frozenset(
    {"200", "201", "202", "204", "304", "400", "401", "403", "404", "409", "413", "422", "429", "500", "502", "503",
     "504", "transport"}
)
# MCM's error codes (hooks.mcm.vocabulary; hooks.equinix.errors.MetalError.mcm_code); anything else counts as Unknown.
ERROR_CODES = frozenset(
    {"InvalidArgument", "NotFound", "Unavailable", "ResourceExhausted", "Unknown", "Unauthenticated",
     "PermissionDenied", "FailedPrecondition"}
)

HOOK_DURATION = Histogram(
    f"{PREFIX}_hook_duration_seconds",
    "Time to answer one Metacontroller hook call, by hook path and outcome (ok, bad_request, error).",
    ["hook", "outcome"],
    buckets=HOOK_BUCKETS,
)
API_CALLS = Counter(
    f"{PREFIX}_api_calls_total",
    "HTTP attempts to the Equinix Metal API, by client operation and HTTP status ('transport' for no answer; "
    "statuses outside a known list folded into their class, e.g. '4xx').",
    ["operation", "status"],
)
API_CALL_DURATION = Histogram(
    f"{PREFIX}_api_call_duration_seconds",
    "Duration of one HTTP attempt to the Equinix Metal API, by operation.",
    ["operation"],
    buckets=API_BUCKETS,
)
API_RETRIES = Counter(
    f"{PREFIX}_api_retries_total",
    "Metal API attempts that were retries of an earlier failed attempt, by operation.",
    ["operation"],
)
API_ERRORS = Counter(
    f"{PREFIX}_api_errors_total",
    "Metal API operations that failed after the client's retries, by hook, operation and MCM error code "
    "(the code written to the object's status.lastOperation.errorCode).",
    ["hook", "operation", "error_code"],
)
RATE_LIMITED = Counter(
    f"{PREFIX}_api_rate_limited_total",
    "Metal API answers 429 Too Many Requests, by operation.",
    ["operation"],
)
RATE_LIMIT_WAIT = Counter(
    f"{PREFIX}_api_rate_limit_wait_seconds_total",
    "Seconds the client slept before a retry because the API asked it to (Retry-After of a 429), by operation.",
    ["operation"],
)
DRAINS_STARTED = Counter(
    f"{PREFIX}_drains_started_total",
    "Drain Jobs declared by the Machine finalize hook, by attempt ('first', or 'retry' after a failed Job).",
    ["attempt"],
)
TARGET_READS = Counter(
    f"{PREFIX}_target_node_reads_total",
    "Reads of a Machine's Node from a target cluster (two-cluster topology), by outcome: ok, not_found, "
    "unreachable, rejected (401/403), error.",
    ["outcome"],
)
TARGET_DECISIONS = Counter(
    f"{PREFIX}_target_decisions_total",
    "What the Machine hooks concluded from the target cluster, by outcome: ok, recovered, frozen (target "
    "unreachable, Machine frozen), held (a deletion waiting for the target).",
    ["outcome"],
)
# Both vocabularies are fixed: every series exists from the start (at 0), so an alert on a rate sees the first one.
for _outcome in ("ok", "not_found", "unreachable", "rejected", "error"):
    TARGET_READS.labels(_outcome)
for _outcome in ("ok", "recovered", "frozen", "held"):
    TARGET_DECISIONS.labels(_outcome)
BUILD_INFO = Gauge(
    f"{PREFIX}_build_info",
    "Always 1; the version label is the running hooks.__version__ (joins with other series to show a rollout).",
    ["version"],
    multiprocess_mode="max",
)
DEVICES_CREATED = Counter(f"{PREFIX}_devices_created_total", "Devices created in Equinix Metal.")
DEVICES_DELETED = Counter(f"{PREFIX}_devices_deleted_total", "Devices deleted in Equinix Metal.")
ORPHANS_COLLECTED = Counter(
    f"{PREFIX}_orphan_devices_collected_total",
    "Devices carrying our ownership tag with no Machine left, deleted by the orphan collection.",
)
RATE_LIMIT_REMAINING = Gauge(
    f"{PREFIX}_api_rate_limit_remaining",
    "X-RateLimit-Remaining of the latest Metal API answer that carried it.",
    multiprocess_mode="mostrecent",
)
RATE_LIMIT_LIMIT = Gauge(
    f"{PREFIX}_api_rate_limit_limit",
    "X-RateLimit-Limit of the latest Metal API answer that carried it.",
    multiprocess_mode="mostrecent",
)


def _never_raises(record: Callable[P, None]) -> Callable[P, None]:
    """Counting must never fail a hook call (e.g. a full /tmp in multiprocess mode): log and carry on."""

    @functools.wraps(record)
    def safe(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            record(*args, **kwargs)
        except Exception as exc:
            log.warning("could not record metric %s: %s", record.__name__, exc)

    return safe


def outcome_for_status(status: int, api_failed: bool = False) -> str:
    """How a hook call ended, from its HTTP status: 2xx ok (api_error when a Metal API call failed on the way: the
    answer is still 200, the failure is in the object's status), 4xx the request's fault, anything else ours."""
    if 200 <= status < 300:
        return "api_error" if api_failed else "ok"
    if 400 <= status < 500:
        return "bad_request"
    return "error"


def bounded_status(status: str) -> str:
    """The `status` label for an HTTP status: itself when known, else its class, so the label set stays small."""
    if status in KNOWN_STATUSES:
        return status
    if len(status) == 3 and status.isdigit():
        return f"{status[0]}xx"
    return "other"


def bounded_error_code(code: str | None) -> str:
    """The `error_code` label: an MCM code, or Unknown for anything outside MCM's list."""
    return code if code in ERROR_CODES else "Unknown"


@_never_raises
def observe_hook(hook: str, outcome: str, seconds: float) -> None:
    HOOK_DURATION.labels(hook=hook, outcome=outcome).observe(max(0.0, seconds))


@_never_raises
def observe_api_call(call: ApiCall) -> None:
    """The MetalClient observer: one call per HTTP attempt."""
    status = bounded_status(call.status)
    API_CALLS.labels(operation=call.operation, status=status).inc()
    API_CALL_DURATION.labels(operation=call.operation).observe(max(0.0, call.seconds))
    if call.attempt > 1:
        API_RETRIES.labels(operation=call.operation).inc()
    if status == "429":
        RATE_LIMITED.labels(operation=call.operation).inc()
    # Counted from the API's own answers, so every hook that creates or deletes is covered the same way.
    if call.operation == "create_device" and call.status == "201":
        DEVICES_CREATED.inc()
    elif call.operation == "delete_device" and call.status == "204":
        DEVICES_DELETED.inc()


@_never_raises
def observe_rate_limit(rate_limit: RateLimit | None) -> None:
    """Records the client's last X-RateLimit-* headers; answers without them leave the gauges as they were."""
    if rate_limit is None:
        return
    if rate_limit.remaining is not None:
        RATE_LIMIT_REMAINING.set(rate_limit.remaining)
    if rate_limit.limit is not None:
        RATE_LIMIT_LIMIT.set(rate_limit.limit)


@_never_raises
def orphans_collected(n: int = 1) -> None:
    if n > 0:
        ORPHANS_COLLECTED.inc(n)


@_never_raises
def observe_api_error(hook: str, operation: str, error_code: str | None) -> None:
    """One Metal API operation that failed for good (after retries) while answering `hook`."""
    API_ERRORS.labels(hook=hook, operation=operation, error_code=bounded_error_code(error_code)).inc()


@dataclass
class _RequestScope:
    """The hook being answered and whether a Metal API operation failed while answering it."""

    hook: str
    api_failures: int = 0


# Per request: gunicorn's gthread worker answers each request in one thread, and a ContextVar set there is seen by
# everything the hook calls, so hooks/mcm can report a failure without knowing about Flask or the request.
_SCOPE: contextvars.ContextVar[_RequestScope | None] = contextvars.ContextVar("metal_machine_hooks_scope",
                                                                           default=None)


def begin_request(hook: str) -> contextvars.Token[_RequestScope | None]:
    """Called by the app when a hook request starts; end_request(token) when it is answered."""
    return _SCOPE.set(_RequestScope(hook))


def end_request(token: contextvars.Token[_RequestScope | None] | None) -> None:
    if token is not None:
        _SCOPE.reset(token)


def api_failure(operation: str, error_code: str | None) -> None:
    """A Metal API operation failed for good while answering the current hook request: counted by hook, operation
    and MCM code, and remembered so the request's outcome is `api_error` rather than `ok`."""
    scope = _SCOPE.get()
    if scope is not None:
        scope.api_failures += 1
    observe_api_error(scope.hook if scope else "none", operation or "unknown", error_code)


def request_api_failed() -> bool:
    """Whether the current hook request saw a Metal API failure (for outcome_for_status's api_failed)."""
    scope = _SCOPE.get()
    return scope is not None and scope.api_failures > 0


@_never_raises
def rate_limit_wait(operation: str, seconds: float) -> None:
    """The client is about to sleep `seconds` because a 429 told it to."""
    if seconds > 0:
        RATE_LIMIT_WAIT.labels(operation=operation).inc(seconds)


@_never_raises
def drain_started(retry: bool = False) -> None:
    """The finalize hook declared a drain Job that did not exist yet."""
    DRAINS_STARTED.labels(attempt="retry" if retry else "first").inc()


@_never_raises
def set_build_info(version: str) -> None:
    BUILD_INFO.labels(version=version).set(1)


def all_metrics() -> list[MetricWrapperBase]:
    """The metric objects defined in this module (the ones /metrics exports)."""
    return [value for value in globals().values() if isinstance(value, MetricWrapperBase)]


def registered_names() -> set[str]:
    """Every sample name the hook server can export (the base name plus the _total, _bucket, _count, _sum, _created
    series prometheus-client derives): what alert rules and dashboards may refer to."""
    names: set[str] = set()
    for metric in all_metrics():
        for family in metric.describe():
            kind = family.type
            base = family.name
            if kind == "counter":
                names |= {f"{base}_total"}
            elif kind == "histogram":
                names |= {f"{base}_bucket", f"{base}_count", f"{base}_sum"}
            else:
                names.add(base)
    return names


def _on_api_failure(_count: int, *, operation: str = "unknown", code: str | None = None) -> None:
    api_failure(operation, code)


def _on_drain_started(count: int, *, retry: bool = False) -> None:
    for _ in range(count):
        drain_started(retry=retry)


def _on_rate_limit_wait(_count: int, *, operation: str = "unknown", seconds: float = 0.0) -> None:
    rate_limit_wait(operation, seconds)


events.subscribe(events.ORPHANS_COLLECTED, orphans_collected)
events.subscribe(events.API_FAILURE, _on_api_failure)
events.subscribe(events.DRAIN_STARTED, _on_drain_started)
events.subscribe(events.RATE_LIMIT_WAIT, _on_rate_limit_wait)
events.subscribe(events.TARGET_READ, lambda count, *, outcome="error": TARGET_READS.labels(outcome).inc(count))
events.subscribe(events.TARGET_DECISION,
                 lambda count, *, outcome="ok": TARGET_DECISIONS.labels(outcome).inc(count))


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def exposition() -> tuple[bytes, str]:
    """The /metrics body and content type: summed over all gunicorn workers in multiprocess mode."""
    if multiprocess_dir():
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


set_build_info(__version__)
