"""/metrics shows hook latency by hook and outcome, Metal API calls, retries, devices and the rate limit."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY

from hooks.config import Settings
from hooks.context import BadRequest, HookContext
from hooks.equinix.client import ApiCall, DeviceCreate, MetalClient
from hooks.equinix.errors import NotFound, Unprocessable
from hooks.server import app as app_module
from hooks.server import metrics
from hooks.server.app import create_app

HOOK_COUNT = "metal_machine_hooks_hook_duration_seconds_count"
API_URL = "https://metal.invalid/metal/v1"
JSON = {"Content-Type": "application/json"}


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_hook(body: dict[str, Any], ctx: HookContext) -> dict[str, Any]:
    if body.get("bad"):
        raise BadRequest("no machine in the request")
    if body.get("crash"):
        raise KeyError("status")
    return {}


test_hook.__test__ = False  # type: ignore[attr-defined]  # a hook, not a pytest test


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(app_module, "_routes", lambda: {"/test/sync": test_hook})
    return create_app(Settings(hook_auth_token="hook-token")).test_client()


def test_hook_latency_is_observed_per_hook_and_outcome(client: Any) -> None:
    auth = {"Authorization": "Bearer hook-token"}
    before = {o: sample(HOOK_COUNT, hook="/test/sync", outcome=o) for o in metrics.OUTCOMES}
    assert client.post("/test/sync", json={}, headers=auth).status_code == 200
    assert client.post("/test/sync", json={}, headers=auth).status_code == 200
    assert client.post("/test/sync", json={"bad": True}, headers=auth).status_code == 400
    assert client.post("/test/sync", data="[1, 2]", headers=auth).status_code == 400
    assert client.post("/test/sync", json={}).status_code == 401
    assert client.post("/test/sync", json={"crash": True}, headers=auth).status_code == 500
    after = {o: sample(HOOK_COUNT, hook="/test/sync", outcome=o) for o in metrics.OUTCOMES}
    expected = {"ok": 2, "api_error": 0, "bad_request": 3, "error": 1}
    assert {o: after[o] - before[o] for o in metrics.OUTCOMES} == expected


def test_probes_and_unknown_paths_are_not_counted_as_hooks(client: Any) -> None:
    client.get("/healthz")
    client.post("/no/such/hook", json={})
    text = client.get("/metrics").get_data(as_text=True)
    assert 'hook="/healthz"' not in text
    assert 'hook="/no/such/hook"' not in text


def test_metrics_endpoint_serves_text_exposition_without_auth(client: Any) -> None:
    client.post("/test/sync", json={}, headers={"Authorization": "Bearer hook-token"})
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=")
    text = response.get_data(as_text=True)
    for name in (
        "metal_machine_hooks_hook_duration_seconds_bucket",
        "# TYPE metal_machine_hooks_api_calls_total counter",
        "# TYPE metal_machine_hooks_api_retries_total counter",
        "metal_machine_hooks_devices_created_total",
        "metal_machine_hooks_devices_deleted_total",
        "metal_machine_hooks_orphan_devices_collected_total",
        "metal_machine_hooks_api_rate_limit_remaining",
    ):
        assert name in text
    assert 'hook="/test/sync",le="0.005",outcome="ok"' in text


def test_metal_client_calls_and_rate_limit_are_recorded(requests_mock: Any) -> None:
    requests_mock.get(
        f"{API_URL}/devices/dev-1",
        json={"id": "dev-1", "state": "active"},
        headers={**JSON, "X-Request-Id": "r1", "X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": "4321"},
    )
    requests_mock.get(
        f"{API_URL}/devices/dev-2",
        status_code=404,
        json={"errors": ["Not found"]},
        headers={**JSON, "X-Request-Id": "r2"},
    )
    client = app_module._default_metal_factory(Settings(metal_api_url=API_URL))("token-for-metrics")
    ok_before = sample("metal_machine_hooks_api_calls_total", operation="get_device", status="200")
    missing_before = sample("metal_machine_hooks_api_calls_total", operation="get_device", status="404")
    client.get_device("dev-1")
    with pytest.raises(NotFound):
        client.get_device("dev-2")
    assert sample("metal_machine_hooks_api_calls_total", operation="get_device", status="200") == ok_before + 1
    assert sample("metal_machine_hooks_api_calls_total", operation="get_device", status="404") == missing_before + 1
    # The 404 carried no rate-limit headers: the gauge keeps the last value seen.
    assert sample("metal_machine_hooks_api_rate_limit_remaining") == 4321
    assert sample("metal_machine_hooks_api_rate_limit_limit") == 5000


def test_retries_are_counted_by_operation() -> None:
    before = sample("metal_machine_hooks_api_retries_total", operation="list_devices")
    calls_before = sample("metal_machine_hooks_api_calls_total", operation="list_devices", status="503")
    metrics.observe_api_call(ApiCall(operation="list_devices", status="503", seconds=0.2, attempt=1))
    metrics.observe_api_call(ApiCall(operation="list_devices", status="503", seconds=0.2, attempt=2))
    metrics.observe_api_call(ApiCall(operation="list_devices", status="200", seconds=0.1, attempt=3))
    assert sample("metal_machine_hooks_api_retries_total", operation="list_devices") == before + 2
    assert sample("metal_machine_hooks_api_calls_total", operation="list_devices", status="503") == calls_before + 2


def test_device_counters_follow_the_api_answers(metal_sim: Any) -> None:
    created = sample("metal_machine_hooks_devices_created_total")
    deleted = sample("metal_machine_hooks_devices_deleted_total")
    orphans = sample("metal_machine_hooks_orphan_devices_collected_total")
    client = MetalClient(metal_sim.token, base_url=metal_sim.url, observer=metrics.observe_api_call)
    device = client.create_device(metal_sim.project, DeviceCreate(metro="ny", plan="t1.small.x86",
                                                                  operating_system="alpine_3", hostname="m-1"))
    with pytest.raises(Unprocessable):
        client.create_device(metal_sim.project, DeviceCreate(metro="ny", plan="no.such.plan",
                                                             operating_system="alpine_3"))
    client.delete_device(device["id"])
    with pytest.raises(NotFound):
        client.delete_device("00000000-0000-4000-8000-000000000000")
    metrics.orphans_collected(3)
    metrics.orphans_collected(0)
    assert sample("metal_machine_hooks_devices_created_total") == created + 1
    assert sample("metal_machine_hooks_devices_deleted_total") == deleted + 1
    assert sample("metal_machine_hooks_orphan_devices_collected_total") == orphans + 3


@pytest.mark.parametrize(("status", "outcome"), [(200, "ok"), (400, "bad_request"), (401, "bad_request"),
                                                  (413, "bad_request"), (500, "error"), (503, "error")])
def test_outcome_for_status(status: int, outcome: str) -> None:
    assert metrics.outcome_for_status(status) == outcome


def test_oversized_body_is_refused_with_json_413(client: Any) -> None:
    body = b'{"pad": "' + b"x" * (app_module.MAX_BODY_BYTES + 1) + b'"}'
    response = client.post("/test/sync", data=body, content_type="application/json",
                           headers={"Authorization": "Bearer hook-token"})
    assert response.status_code == 413
    assert "larger than" in response.json["error"]
    assert sample(HOOK_COUNT, hook="/test/sync", outcome="bad_request") >= 1


class BrokenMetric:
    """Stands in for a metric whose storage fails (a full /tmp in multiprocess mode)."""

    def labels(self, **_: str) -> BrokenMetric:
        return self

    def inc(self, *_: float) -> None:
        raise OSError(28, "No space left on device")

    observe = inc


def test_a_failing_metric_never_fails_the_hook(
    client: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(metrics, "HOOK_DURATION", BrokenMetric())
    monkeypatch.setattr(metrics, "ORPHANS_COLLECTED", BrokenMetric())
    response = client.post("/test/sync", json={}, headers={"Authorization": "Bearer hook-token"})
    assert response.status_code == 200
    metrics.orphans_collected(2)
    warnings = [r.getMessage() for r in caplog.records if r.name == "hooks.metrics"]
    assert any("observe_hook" in w and "No space left" in w for w in warnings)
    assert any("orphans_collected" in w for w in warnings)
