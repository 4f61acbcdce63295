"""Prometheus metrics of the hook server: hook latency, Metal API calls, retries, devices, rate limit.

Under gunicorn with several workers, each worker is its own process; prometheus-client's multiprocess mode
(PROMETHEUS_MULTIPROC_DIR, set by gunicorn.conf.py) keeps the values in files so that /metrics, answered by any
one worker, reports the sum over all of them. Without that variable (tests, `python -m hooks`) the ordinary
in-process registry is used. The variable is read when prometheus_client is first imported, so it must be set
before this module is imported.

Other modules call the small functions below rather than touching the metric objects.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
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

from hooks import events

if TYPE_CHECKING:
    from hooks.equinix.client import ApiCall, RateLimit

P = ParamSpec("P")
log = logging.getLogger("hooks.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "metal_machine_hooks"
OUTCOMES = ("ok", "bad_request", "error")

HOOK_DURATION = Histogram(
    f"{PREFIX}_hook_duration_seconds",
    "Time to answer one Metacontroller hook call, by hook path and outcome (ok, bad_request, error).",
    ["hook", "outcome"],
)
API_CALLS = Counter(
    f"{PREFIX}_api_calls_total",
    "HTTP attempts to the Equinix Metal API, by operation and HTTP status (or 'transport' for no answer).",
    ["operation", "status"],
)
API_CALL_DURATION = Histogram(
    f"{PREFIX}_api_call_duration_seconds",
    "Duration of one HTTP attempt to the Equinix Metal API, by operation.",
    ["operation"],
)
API_RETRIES = Counter(
    f"{PREFIX}_api_retries_total",
    "Metal API attempts that were retries of an earlier failed attempt, by operation.",
    ["operation"],
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


def outcome_for_status(status: int) -> str:
    """How a hook call ended, from its HTTP status: 2xx ok, 4xx the request's fault, anything else ours."""
    if 200 <= status < 300:
        return "ok"
    if 400 <= status < 500:
        return "bad_request"
    return "error"


@_never_raises
def observe_hook(hook: str, outcome: str, seconds: float) -> None:
    HOOK_DURATION.labels(hook=hook, outcome=outcome).observe(max(0.0, seconds))


@_never_raises
def observe_api_call(call: ApiCall) -> None:
    """The MetalClient observer: one call per HTTP attempt."""
    API_CALLS.labels(operation=call.operation, status=call.status).inc()
    API_CALL_DURATION.labels(operation=call.operation).observe(max(0.0, call.seconds))
    if call.attempt > 1:
        API_RETRIES.labels(operation=call.operation).inc()
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


events.subscribe(events.ORPHANS_COLLECTED, orphans_collected)


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
