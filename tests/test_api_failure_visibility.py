"""An Equinix Metal API failure is visible outside `.status`: a WARN log line naming the Machine, the route, the HTTP
status and the MCM error code, a hook outcome other than `ok`, and a count in metal_machine_hooks_api_errors_total.

The hooks answer 200 on an API failure (the failure belongs in the Machine's status, and Metacontroller must apply
it), so neither the access log's status nor the 2xx outcome shows it. The MCM package reports the failure through
hooks/events.py and the server turns it into the log line, the outcome and the count.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from prometheus_client import REGISTRY

from hooks.config import Settings
from hooks.equinix.errors import RateLimited, ServerError, TransportError, Unauthorized, Unprocessable
from hooks.server.app import create_app
from tests.machine_support import (
    NAME,
    Clock,
    FakeMetal,
    apply,
    clock_fixture,
    context,
    fake_fixture,
    finalize_request,
    node,
    observe_jobs,
    sync_request,
    with_node,
)

__all__ = ["clock_fixture", "fake_fixture"]

HOOK_COUNT = "metal_machine_hooks_hook_duration_seconds_count"
ERRORS = "metal_machine_hooks_api_errors_total"
DRAINS = "metal_machine_hooks_drains_started_total"


FAILURES = {
    "unauthorized": (Unauthorized("Invalid authentication token", status=401, from_api=True,
                                  operation="list_devices"), 401, "Unauthenticated"),
    "refused-connection": (TransportError("connection refused", operation="list_devices"), None, "Unavailable"),
    "bad-plan": (Unprocessable("plan not valid", status=422, from_api=True, operation="list_devices"), 422,
                 "InvalidArgument"),
    "server-error": (ServerError("bad gateway", status=502, from_api=True, operation="list_devices"), 502,
                     "Unavailable"),
    "rate-limited": (RateLimited("too many requests", status=429, from_api=True, retry_after=3.0,
                                 operation="list_devices"), 429, "ResourceExhausted"),
}


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def client(fake: FakeMetal) -> Any:
    return create_app(Settings(), metal=fake.factory, clock=Clock()).test_client()


def _sync_with_failure(client: Any, fake: FakeMetal, error: Exception) -> dict[str, Any]:
    fake.fail("list_devices", error)
    fake.fail("create_device", error)
    response = client.post("/machine/sync", json=sync_request())
    assert response.status_code == 200  # the failure goes into the status, Metacontroller applies it
    return response.json


def test_the_failure_reaches_the_status_today(client: Any, fake: FakeMetal) -> None:
    """What already works: the error code is in lastOperation (the tests below add visibility outside it)."""
    answer = _sync_with_failure(client, fake, FAILURES["unauthorized"][0])
    assert answer["status"]["lastOperation"]["errorCode"] == "Unauthenticated"



@pytest.mark.parametrize("case", FAILURES)
def test_api_failure_logs_a_warning_with_machine_route_status_and_code(
    client: Any, fake: FakeMetal, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    error, status, code = FAILURES[case]
    with caplog.at_level(logging.INFO):
        _sync_with_failure(client, fake, error)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and NAME in r.getMessage()]
    assert warnings, "no WARN line names the Machine"
    record = warnings[0]
    text = record.getMessage()
    assert "/machine/sync" in text or getattr(record, "hook", None) == "/machine/sync"
    assert code in text or getattr(record, "error_code", None) == code
    if status is not None:
        assert str(status) in text or getattr(record, "api_status", None) == status



@pytest.mark.parametrize("case", FAILURES)
def test_api_failure_outcome_is_not_ok(client: Any, fake: FakeMetal, case: str) -> None:
    error, _, code = FAILURES[case]
    ok = sample(HOOK_COUNT, hook="/machine/sync", outcome="ok")
    failed = sample(HOOK_COUNT, hook="/machine/sync", outcome="api_error")
    errors = sample(ERRORS, hook="/machine/sync", operation="list_devices", error_code=code)
    _sync_with_failure(client, fake, error)
    assert sample(HOOK_COUNT, hook="/machine/sync", outcome="ok") == ok
    assert sample(HOOK_COUNT, hook="/machine/sync", outcome="api_error") == failed + 1
    assert sample(ERRORS, hook="/machine/sync", operation="list_devices", error_code=code) == errors + 1



def test_drain_start_is_counted_once_per_job(fake: FakeMetal, clock: Clock) -> None:
    """The finalize hook counts a drain Job when it declares it, not on each call that keeps it declared."""
    from hooks.mcm import machine

    body = sync_request()
    body = apply(body, machine.sync(body, context(fake, clock)))
    body = with_node(finalize_request(body), node())
    started = sample(DRAINS, attempt="first")
    first = machine.finalize(body, context(fake, clock))
    assert first["status"]["lastOperation"]["description"] == "Initiate node drain"
    body = observe_jobs(apply(body, first), first["attachments"], complete=False)
    machine.finalize(body, context(fake, clock))
    assert sample(DRAINS, attempt="first") == started + 1



@pytest.mark.slow  # the client really waits the 1 s Retry-After
def test_rate_limit_waits_are_counted(requests_mock: Any) -> None:
    """The client the app builds reports the seconds it sleeps because a 429 asked it to (metrics.rate_limit_wait)."""
    from hooks.equinix.driver import client_factory

    url = "https://metal.invalid/metal/v1"
    requests_mock.get(f"{url}/devices/dev-1", [
        {"status_code": 429, "json": {"errors": ["Rate limit exceeded"]},
         "headers": {"Content-Type": "application/json", "Retry-After": "1"}},
        {"status_code": 200, "json": {"id": "dev-1", "state": "active"},
         "headers": {"Content-Type": "application/json"}},
    ])
    waited = sample("metal_machine_hooks_api_rate_limit_wait_seconds_total", operation="get_device")
    client = client_factory(Settings(metal_api_url=url), register_secret=lambda _s: None,
                            observe_call=lambda _c: None, observe_rate_limit=lambda _r: None)("token-for-waits")
    client.get_device("dev-1")
    assert sample("metal_machine_hooks_api_rate_limit_wait_seconds_total", operation="get_device") >= waited + 1.0
