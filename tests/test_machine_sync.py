"""The Machine sync hook against an in-memory Metal API: what gets created, and the status a user sees."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest

from hooks import machine
from hooks.context import BadRequest
from hooks.exceptions import (
    CapacityError,
    Forbidden,
    NotFound,
    RateLimited,
    ServerError,
    TransportError,
    Unauthorized,
    UnexpectedResponse,
    Unprocessable,
)
from tests.crd_schema import status_problems
from tests.machine_support import (
    CREATED,
    DECORATOR_KEYS,
    NAME,
    PROJECT,
    TOKEN,
    UID_TAG,
    USERDATA_SECRET_LINE,
    Clock,
    FakeMetal,
    apply,
    cached_crd_schemas,
    clock_fixture,
    context,
    fake_fixture,
    node,
    provider_spec,
    set_secret_value,
    sync_request,
    with_node,
    wrong_shape,
)

__all__ = ["cached_crd_schemas", "clock_fixture", "fake_fixture"]


def run(body, fake, clock, **settings):
    response = machine.sync(body, context(fake, clock, **settings))
    assert set(response) <= DECORATOR_KEYS
    if response.get("status") is not None:
        assert status_problems(response["status"], "Machine") == []
    return response


def phase(response) -> str:
    return response["status"]["currentStatus"]["phase"]


def op(response) -> dict:
    return response["status"]["lastOperation"]


def test_fresh_machine_creates_one_device_and_goes_pending(fake, clock) -> None:
    response = run(sync_request(), fake, clock)
    assert fake.ops() == ["list_devices", "create_device"]
    assert phase(response) == "Pending"
    assert op(response)["description"] == "Creating machine on cloud provider"
    assert op(response)["state"] == "Processing" and op(response)["type"] == "Create"
    assert response["status"]["currentStatus"]["timeoutActive"] is True
    (device,) = fake.devices.values()
    assert response["annotations"]["metal-machine-hooks/device-id"] == device["id"]
    assert response["annotations"]["metal-machine-hooks/provider-id"] == f"equinixmetal://ny/{device['id']}"
    assert response["annotations"]["machinepriority.machine.sapcloud.io"] == "3"
    assert response["labels"] == {"node": NAME}
    assert 0 < response["resyncAfterSeconds"] <= 10
    assert fake.tokens == [TOKEN]


def test_create_request_carries_spec_userdata_and_ownership_tags(fake, clock) -> None:
    run(sync_request(), fake, clock)
    (request,) = fake.create_requests
    assert request.hostname == NAME
    assert (request.metro, request.plan, request.operating_system) == ("ny", "c3.small.x86", "ubuntu_22_04")
    assert request.billing_cycle == "hourly"
    assert request.project_ssh_keys == ["0b6c7f0e-5c1b-4a8e-bb2d-7e0f3a9d1c55"]
    assert request.hardware_reservation_id is None and request.ipxe_script_url is None
    assert f"hostname: {NAME}" in request.userdata and "<<MACHINE_NAME>>" not in request.userdata
    assert request.tags == [
        "kubernetes.io/cluster/shoot--dev--metal: 1",
        "kubernetes.io/role/node: 1",
        "team: platform",
        "metal-machine-hooks:managed",
        UID_TAG,
    ]


def test_ipxe_class_boots_custom_ipxe(fake, clock) -> None:
    body = sync_request()
    provider_spec(body)["ipxeScriptUrl"] = "https://boot.example.com/ipxe"
    del provider_spec(body)["OS"]
    run(body, fake, clock)
    (request,) = fake.create_requests
    assert request.operating_system == "custom_ipxe"
    assert request.ipxe_script_url == "https://boot.example.com/ipxe"


def test_alternate_api_token_is_used_as_the_token(fake, clock) -> None:
    body = sync_request()
    set_secret_value(body, "apiToken", None)
    set_secret_value(body, "alternateApiToken", "alt-token-123")
    assert phase(run(body, fake, clock)) == "Pending"
    assert fake.tokens == ["alt-token-123"]


def test_two_syncs_before_status_is_stored_create_one_device(fake, clock) -> None:
    body = sync_request()
    first = run(body, fake, clock)
    second = run(body, fake, clock)
    assert len(fake.devices) == 1
    assert fake.ops().count("create_device") == 1
    key = "metal-machine-hooks/device-id"
    assert second["annotations"][key] == first["annotations"][key]


def test_composite_keys_are_not_a_decorator_request(fake, clock) -> None:
    """Metacontroller sends a decorator's Machine under `object`; `parent`/`children` are refused, not guessed."""
    for hook in (machine.sync, machine.finalize):
        with pytest.raises(BadRequest, match="no `object`"):
            hook(wrong_shape(sync_request()), context(fake, clock))
    assert fake.calls == [] and fake.devices == {}


def test_same_request_twice_gives_identical_response(fake, clock) -> None:
    body = apply(sync_request(), run(sync_request(), fake, clock))
    clock.advance(seconds=7)
    first = run(body, fake, clock)
    clock.advance(seconds=3)
    second = run(body, fake, clock)
    assert first == second
    assert first["status"] == body["object"]["status"]  # nothing moved: no write, no hot loop


def test_steady_running_machine_costs_one_get(fake, clock) -> None:
    body = apply(sync_request(), run(sync_request(), fake, clock))
    device_id = body["object"]["metadata"]["annotations"]["metal-machine-hooks/device-id"]
    fake.devices[device_id]["state"] = "active"
    clock.advance(minutes=5)
    body = apply(with_node(body, node()), run(with_node(body, node()), fake, clock))
    assert body["object"]["status"]["currentStatus"]["phase"] == "Running"
    fake.calls.clear()
    clock.advance(minutes=5)
    response = run(body, fake, clock)
    assert fake.calls == [("get_device", device_id)]
    assert "resyncAfterSeconds" not in response
    assert response["status"] == body["object"]["status"]


def _running(fake, clock) -> dict:
    body = apply(sync_request(), run(sync_request(), fake, clock))
    device_id = body["object"]["metadata"]["annotations"]["metal-machine-hooks/device-id"]
    fake.devices[device_id]["state"] = "active"
    clock.advance(minutes=4, seconds=30)
    with_node(body, node())
    response = run(body, fake, clock)
    assert phase(response) == "Running"
    return apply(body, response)


def test_pending_becomes_running_when_node_ready(fake, clock) -> None:
    body = _running(fake, clock)
    status = body["object"]["status"]
    assert status["lastOperation"] == {
        "description": f"Machine {NAME} successfully joined the cluster in 5m0s",
        "state": "Successful",
        "type": "Create",
        "lastUpdateTime": "2026-11-25T10:05:00Z",
    }
    assert status["currentStatus"]["timeoutActive"] is False
    assert {"address": "10.70.1.3", "type": "InternalIP"} in status["addresses"]
    assert {"address": "198.51.100.11", "type": "ExternalIP"} in status["addresses"]
    assert {"address": NAME, "type": "Hostname"} in status["addresses"]
    assert [c["type"] for c in status["conditions"]][-1] == "Ready"


def test_pending_waits_while_device_provisions_or_node_missing(fake, clock) -> None:
    body = apply(sync_request(), run(sync_request(), fake, clock))
    clock.advance(minutes=2)
    response = run(body, fake, clock)
    assert phase(response) == "Pending"
    device_id = body["object"]["metadata"]["annotations"]["metal-machine-hooks/device-id"]
    fake.devices[device_id]["state"] = "active"
    response = run(body, fake, clock)  # active, but no Node yet
    assert phase(response) == "Pending"
    assert response["resyncAfterSeconds"] > 0


def test_running_goes_unknown_then_back_to_running(fake, clock) -> None:
    body = _running(fake, clock)
    clock.advance(minutes=10)
    response = run(with_node(body, node(ready=False)), fake, clock)
    assert phase(response) == "Unknown"
    assert op(response)["description"].startswith(f"Machine {NAME} is unhealthy - changing MachinePhase to Unknown")
    assert "Ready=False" in op(response)["description"]
    assert op(response)["type"] == "HealthCheck"
    body = apply(body, response)
    clock.advance(minutes=3)
    response = run(with_node(body, node()), fake, clock)
    assert phase(response) == "Running"
    assert op(response)["description"] == f"Machine {NAME} successfully re-joined the cluster"


def test_missing_node_makes_running_unknown_and_failed_after_health_timeout(fake, clock) -> None:
    body = _running(fake, clock)
    clock.advance(minutes=1)
    response = run(with_node(body, None), fake, clock)
    assert phase(response) == "Unknown"
    assert op(response)["description"].startswith("Node object went missing.")
    went_unknown = response["status"]["currentStatus"]["lastUpdateTime"]
    body = apply(body, response)
    clock.advance(minutes=9)
    response = run(body, fake, clock)
    assert phase(response) == "Unknown"
    assert response["status"]["currentStatus"]["lastUpdateTime"] == went_unknown
    assert response["resyncAfterSeconds"] <= 61
    clock.advance(minutes=1, seconds=1)
    response = run(body, fake, clock)
    assert phase(response) == "Failed"
    assert "health checks failing since last 10 minutes" in op(response)["description"]
    assert "resyncAfterSeconds" not in response


def test_health_timeout_override_from_spec(fake, clock) -> None:
    body = _running(fake, clock)
    body["object"]["spec"]["healthTimeout"] = "90s"
    body = apply(body, run(with_node(body, None), fake, clock))
    clock.advance(seconds=91)
    assert phase(run(body, fake, clock)) == "Failed"


def test_pending_fails_after_creation_timeout(fake, clock) -> None:
    body = apply(sync_request(), run(sync_request(), fake, clock))
    clock.advance(minutes=19)
    assert phase(run(body, fake, clock)) == "Pending"
    clock.advance(minutes=1)
    response = run(body, fake, clock)
    assert phase(response) == "Failed"
    assert op(response)["description"] == f"Machine {NAME} failed to join the cluster in 20 minutes."


@pytest.mark.parametrize(("value", "fails_after"), [("5m", 5), ("1h30m", 90), ("90s", 1.5)])
def test_creation_timeout_override(fake, clock, value, fails_after) -> None:
    body = sync_request()
    body["object"]["spec"]["creationTimeout"] = value
    body = apply(body, run(body, fake, clock))
    clock.now = CREATED + timedelta(minutes=fails_after, seconds=-1)
    assert phase(run(body, fake, clock)) == "Pending"
    clock.advance(seconds=1)
    assert phase(run(body, fake, clock)) == "Failed"


def test_failed_device_fails_the_machine(fake, clock) -> None:
    body = apply(sync_request(), run(sync_request(), fake, clock))
    device_id = body["object"]["metadata"]["annotations"]["metal-machine-hooks/device-id"]
    fake.devices[device_id]["state"] = "failed"
    response = run(body, fake, clock)
    assert phase(response) == "Failed"
    assert "state failed" in op(response)["description"]


def test_failed_is_terminal_and_costs_nothing(fake, clock) -> None:
    body = apply(sync_request(), run(sync_request(), fake, clock))
    device_id = body["object"]["metadata"]["annotations"]["metal-machine-hooks/device-id"]
    fake.devices[device_id]["state"] = "failed"
    body = apply(body, run(body, fake, clock))
    fake.devices[device_id]["state"] = "active"
    fake.calls.clear()
    assert run(with_node(body, node()), fake, clock) == {}
    assert fake.calls == []


def test_device_deleted_out_of_band_fails_the_machine(fake, clock) -> None:
    body = _running(fake, clock)
    fake.devices.clear()
    fake.calls.clear()
    response = run(body, fake, clock)
    assert phase(response) == "Failed"
    assert "deleted outside the hooks" in op(response)["description"]
    assert op(response)["errorCode"] == "NotFound"
    assert "create_device" not in fake.ops()


def test_device_found_by_provider_id_when_no_annotation(fake, clock) -> None:
    device = fake.add(state="active")
    body = sync_request()
    body["object"]["spec"]["providerID"] = f"equinixmetal://ny/{device['id']}"
    response = run(with_node(body, node()), fake, clock)
    assert fake.ops() == ["get_device"]
    assert phase(response) == "Running"
    assert response["annotations"]["metal-machine-hooks/device-id"] == device["id"]


def test_device_recorded_but_not_ours_is_not_used(fake, clock) -> None:
    foreign = fake.add(state="active", tags=["someone-else"])
    body = sync_request()
    body["object"]["metadata"]["annotations"] = {"metal-machine-hooks/device-id": foreign["id"]}
    response = run(body, fake, clock)
    assert phase(response) == "CrashLoopBackOff"
    assert foreign["id"] in op(response)["description"] and "ownership tag" in op(response)["description"]
    assert "create_device" not in fake.ops() and "delete_device" not in fake.ops()
    assert "metal-machine-hooks/device-id" not in response.get("annotations", {})


def test_duplicates_are_deleted_keeping_the_oldest(fake, clock) -> None:
    oldest = fake.add(state="active")
    newer = fake.add(state="provisioning")
    foreign = fake.add(state="active", tags=["metal-machine-hooks:managed", "metal-machine-hooks:uid:other"])
    response = run(sync_request(), fake, clock)
    assert set(fake.devices) == {oldest["id"], foreign["id"]}
    assert ("delete_device", newer["id"]) in fake.calls
    assert response["annotations"]["metal-machine-hooks/device-id"] == oldest["id"]
    assert f"deleted duplicate device(s) {newer['id']}" in op(response)["description"]


def test_lost_create_answer_is_not_retried_and_next_sync_finds_device(fake, clock) -> None:
    fake.lose_create_answer = True
    body = sync_request()
    response = run(body, fake, clock)
    assert fake.ops().count("create_device") == 1
    assert phase(response) == "CrashLoopBackOff"
    assert "outcome of the create request is unknown" in op(response)["description"]
    assert op(response)["errorCode"] == "Unavailable"
    assert response["resyncAfterSeconds"] <= 10
    assert "metal-machine-hooks/device-id" not in response.get("annotations", {})
    fake.lose_create_answer = False
    body = apply(body, response)
    response = run(body, fake, clock)
    assert fake.ops().count("create_device") == 1
    assert len(fake.devices) == 1
    assert phase(response) == "Pending"


@pytest.mark.parametrize("error", [ServerError("502 Bad Gateway", status=502), TransportError("connection reset")])
def test_ambiguous_create_errors_do_not_retry(fake, clock, error) -> None:
    fake.fail("create_device", error)
    response = run(sync_request(), fake, clock)
    assert fake.ops().count("create_device") == 1
    assert "unknown" in op(response)["description"]


def test_reservations_tried_in_order_with_fresh_requests_then_on_demand(fake, clock) -> None:
    body = sync_request()
    provider_spec(body)["reservationIDs"] = ["res-1", "res-2"]
    fake.fail(
        "create_device",
        lambda request: CapacityError("no available hardware reservations", status=422)
        if request.hardware_reservation_id == "res-1"
        else Unprocessable("reservation res-2 is not provisionable", status=422)
        if request.hardware_reservation_id == "res-2"
        else None,
    )
    response = run(body, fake, clock)
    assert [c[1] for c in fake.calls if c[0] == "create_device"] == ["res-1", "res-2", None]
    requests = fake.create_requests
    assert len({id(r) for r in requests}) == 3
    assert [r.hardware_reservation_id for r in requests] == ["res-1", "res-2", None]
    assert phase(response) == "Pending"


def test_first_working_reservation_wins(fake, clock) -> None:
    body = sync_request()
    provider_spec(body)["reservationIDs"] = ["res-1", "res-2"]
    run(body, fake, clock)
    assert [c[1] for c in fake.calls if c[0] == "create_device"] == ["res-1"]


def test_reserved_only_without_capacity_is_resource_exhausted(fake, clock) -> None:
    body = sync_request()
    provider_spec(body)["reservationIDs"] = ["res-1"]
    provider_spec(body)["reservedDevicesOnly"] = True
    fake.fail("create_device", CapacityError("no available hardware reservations", status=422))
    response = run(body, fake, clock)
    assert [c[1] for c in fake.calls if c[0] == "create_device"] == ["res-1"]
    assert phase(response) == "CrashLoopBackOff"
    assert op(response)["errorCode"] == "ResourceExhausted"
    assert "reservedDevicesOnly is true" in op(response)["description"]


def test_unrelated_unprocessable_stops_reservation_attempts(fake, clock) -> None:
    body = sync_request()
    provider_spec(body)["reservationIDs"] = ["res-1", "res-2"]
    fake.fail("create_device", Unprocessable("plan is not valid", status=422))
    response = run(body, fake, clock)
    assert fake.ops().count("create_device") == 1
    assert op(response)["errorCode"] == "InvalidArgument"
    assert "plan is not valid" in op(response)["description"]


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (Unauthorized("401 Unauthorized: invalid token", status=401), "Unauthenticated"),
        (Forbidden("403 Forbidden", status=403), "PermissionDenied"),
        (RateLimited("429 Too Many Requests", status=429, retry_after=42.0), "ResourceExhausted"),
        (ServerError("503 Service Unavailable", status=503), "Unavailable"),
        (TransportError("read timed out"), "Unavailable"),
        (UnexpectedResponse("409 Conflict", status=409), "Unknown"),
        (NotFound("404 project not found", status=404, from_api=True), "NotFound"),
    ],
)
def test_api_errors_use_mcm_codes(fake, clock, error, code) -> None:
    fake.fail("list_devices", error)
    response = run(sync_request(), fake, clock)
    assert phase(response) == "CrashLoopBackOff"
    assert op(response)["errorCode"] == code
    assert op(response)["state"] == "Failed"
    assert op(response)["description"].startswith("Cloud provider message - ")
    assert "create_device" not in fake.ops()
    if isinstance(error, RateLimited):
        assert response["resyncAfterSeconds"] >= 42


def test_error_backoff_grows_with_the_time_the_error_lasts(fake, clock) -> None:
    body = sync_request()
    waits = []
    for _ in range(4):
        fake.fail("list_devices", ServerError("503 Service Unavailable", status=503))
        response = run(body, fake, clock)
        waits.append(response["resyncAfterSeconds"])
        body = apply(body, response)
        clock.advance(seconds=response["resyncAfterSeconds"])
    assert waits == sorted(waits) and waits[-1] > waits[0]


def test_api_error_on_running_machine_keeps_phase(fake, clock) -> None:
    body = _running(fake, clock)
    fake.fail("get_device", ServerError("500 Internal Server Error", status=500))
    response = run(body, fake, clock)
    assert phase(response) == "Running"
    assert op(response)["type"] == "HealthCheck" and op(response)["errorCode"] == "Unavailable"
    body = apply(body, response)
    response = run(body, fake, clock)
    assert phase(response) == "Running" and op(response)["state"] == "Successful"


def test_no_target_cluster_makes_active_device_available(fake, clock) -> None:
    body = apply(sync_request(), run(sync_request(), fake, clock, no_target_cluster=True))
    device_id = body["object"]["metadata"]["annotations"]["metal-machine-hooks/device-id"]
    assert "labels" not in body or "node" not in body["object"]["metadata"].get("labels", {})
    fake.devices[device_id]["state"] = "active"
    response = run(body, fake, clock, no_target_cluster=True)
    assert phase(response) == "Available"
    assert op(response)["description"] == "Created machine on cloud provider"
    assert "resyncAfterSeconds" not in response
    assert any(a["type"] == "ExternalIP" for a in response["status"]["addresses"])


def test_ignored_provider_spec_keys_are_shown_in_an_annotation(fake, clock) -> None:
    body = sync_request()
    provider_spec(body)["facilities"] = ["ewr1", "ny5"]
    provider_spec(body)["os"] = "alpine_3"  # the exact spelling "OS" wins, as in Go
    response = run(body, fake, clock)
    assert response["annotations"]["metal-machine-hooks/ignored-keys"] == "facilities,os"
    assert fake.create_requests[0].operating_system == "ubuntu_22_04"
    body = apply(body, response)
    del provider_spec(body)["facilities"], provider_spec(body)["os"]
    assert run(body, fake, clock)["annotations"]["metal-machine-hooks/ignored-keys"] is None


def test_token_and_userdata_never_in_responses_or_logs(fake, clock, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    secret_token = "tok-SECRET-98765"
    body = sync_request()
    from tests.machine_support import set_secret_value as put

    put(body, "apiToken", secret_token)
    fake.fail("list_devices", Unauthorized(f"401 Unauthorized: bad token {secret_token}", status=401))
    outputs = [run(body, fake, clock)]
    fake.lose_create_answer = True
    outputs.append(run(body, fake, clock))
    fake.lose_create_answer = False
    outputs.append(run(apply(body, outputs[-1]), fake, clock))
    text = json.dumps(outputs) + caplog.text
    assert secret_token not in text
    assert USERDATA_SECRET_LINE not in text
    assert "[redacted]" in json.dumps(outputs[0])


def test_project_from_class_is_used(fake, clock) -> None:
    calls = []
    original = fake.list_devices

    def spy(project_id, **kwargs):
        calls.append(project_id)
        return original(project_id, **kwargs)

    fake.list_devices = spy
    run(sync_request(), fake, clock)
    assert calls == [PROJECT]


def test_invalid_class_fails_after_creation_timeout(fake, clock) -> None:
    body = sync_request()
    provider_spec(body).pop("machineType")
    response = run(body, fake, clock)
    assert phase(response) == "CrashLoopBackOff"
    assert response["resyncAfterSeconds"] <= 20 * 60
    body = apply(body, response)
    clock.now = CREATED + timedelta(minutes=20, seconds=1)
    response = run(body, fake, clock)
    assert phase(response) == "Failed"
    assert "Machine Type is required" in op(response)["description"]
    assert fake.calls == []


def test_reserved_only_with_no_reservation_ids_does_not_post(fake, clock) -> None:
    body = sync_request()
    provider_spec(body)["reservedDevicesOnly"] = True
    response = run(body, fake, clock)
    assert "create_device" not in fake.ops()
    assert op(response)["errorCode"] == "ResourceExhausted"
    assert "reservationIDs is empty" in op(response)["description"]


def test_running_machine_whose_secret_went_away_stays_running(fake, clock) -> None:
    body = _running(fake, clock)
    body["related"]["Secret.v1"].clear()
    fake.calls.clear()
    response = run(body, fake, clock)
    assert phase(response) == "Running"
    assert op(response)["state"] == "Failed" and op(response)["errorCode"] == "InvalidArgument"
    assert op(response)["type"] == "HealthCheck"
    assert "metal-machine-hooks/credentials" in op(response)["description"]
    assert fake.calls == []


def test_duplicate_that_cannot_be_deleted_keeps_the_tag_lookup_going(fake, clock) -> None:
    oldest = fake.add(state="active")
    newer = fake.add(state="active")
    fake.fail("delete_device", ServerError("503 Service Unavailable", status=503))
    response = run(sync_request(), fake, clock)
    assert newer["id"] in fake.devices
    assert "metal-machine-hooks/device-id" not in response["annotations"]
    assert f"could not delete duplicate device(s) {newer['id']}" in op(response)["description"]
    assert 0 < response["resyncAfterSeconds"] <= 10
    response = run(apply(sync_request(), response), fake, clock)
    assert set(fake.devices) == {oldest["id"]}
    assert response["annotations"]["metal-machine-hooks/device-id"] == oldest["id"]


def test_provider_id_of_another_provider_is_not_used(fake, clock) -> None:
    body = sync_request()
    body["object"]["spec"]["providerID"] = "aws:///eu-west-1a/i-0123456789"
    run(body, fake, clock)
    assert fake.ops() == ["list_devices", "create_device"]


def test_available_machine_stays_available_without_health_checks(fake, clock) -> None:
    device = fake.add(state="active")
    body = sync_request()
    body["object"]["metadata"]["annotations"] = {"metal-machine-hooks/device-id": device["id"]}
    body = apply(body, run(body, fake, clock, no_target_cluster=True))
    assert body["object"]["status"]["currentStatus"]["phase"] == "Available"
    fake.devices[device["id"]]["state"] = "inactive"
    clock.advance(hours=2)
    response = run(body, fake, clock, no_target_cluster=True)
    assert phase(response) == "Available"
    assert response["status"]["lastKnownState"] == f"device {device['id']} is inactive"
    fake.devices[device["id"]]["state"] = "failed"
    assert phase(run(body, fake, clock, no_target_cluster=True)) == "Failed"


def test_pending_machine_waits_for_critical_components_taint(fake, clock) -> None:
    device = fake.add(state="active")
    body = sync_request()
    body["object"]["metadata"]["annotations"] = {"metal-machine-hooks/device-id": device["id"]}
    tainted = node()
    tainted["spec"]["taints"] = [{"key": "node.gardener.cloud/critical-components-not-ready", "effect": "NoSchedule"}]
    assert phase(run(with_node(body, tainted), fake, clock)) == "Pending"
    assert phase(run(with_node(body, node()), fake, clock)) == "Running"


@pytest.mark.parametrize("condition", ["DiskPressure", "NetworkUnavailable", "KernelDeadlock", "ReadonlyFilesystem"])
def test_problem_node_condition_makes_running_unknown(fake, clock, condition) -> None:
    body = _running(fake, clock)
    sick = node()
    sick["status"]["conditions"].append({"type": condition, "status": "True", "reason": "Bad"})
    sick["status"]["conditions"] = [c for c in sick["status"]["conditions"] if c["type"] != condition or
                                    c["status"] == "True"]
    response = run(with_node(body, sick), fake, clock)
    assert phase(response) == "Unknown"
    assert f"{condition}=True" in op(response)["description"]
    assert [c["type"] for c in response["status"]["conditions"]].count(condition) == 1


def _scenario(name: str, fake: FakeMetal, clock: Clock) -> tuple[dict, dict]:
    """A request in a given situation, after Metacontroller stored the hook's first answer; plus settings."""
    settings: dict = {}
    if name == "invalid":
        body = sync_request()
        provider_spec(body).pop("metro")
    elif name == "api-error":
        body = sync_request()
    elif name == "pending":
        body = apply(sync_request(), run(sync_request(), fake, clock))
    elif name == "running":
        body = _running(fake, clock)
    elif name == "unknown":
        body = _running(fake, clock)
        body = apply(body, run(with_node(body, node(ready=False)), fake, clock))
    elif name == "available":
        settings = {"no_target_cluster": True}
        device = fake.add(state="active")
        body = sync_request()
        body["object"]["metadata"]["annotations"] = {"metal-machine-hooks/device-id": device["id"]}
    if name == "api-error":
        fake.fail("list_devices", ServerError("503 Service Unavailable", status=503))
    body = apply(body, run(body, fake, clock, **settings))
    return body, settings


@pytest.mark.parametrize("name", ["invalid", "api-error", "pending", "running", "unknown", "available"])
def test_unchanged_observation_gives_unchanged_status(fake, clock, name) -> None:
    body, settings = _scenario(name, fake, clock)
    answers = []
    for _ in range(2):
        clock.advance(seconds=2)
        if name == "api-error":
            fake.fail("list_devices", ServerError("503 Service Unavailable", status=503))
        answers.append(run(body, fake, clock, **settings))
    assert answers[0] == answers[1]
    assert answers[0]["status"] == body["object"]["status"]


def test_oldest_duplicate_wins_across_time_zones_and_ties_go_by_id(fake, clock) -> None:
    late = fake.add(id="00000000-0000-4000-8000-00000000000a", state="active", created_at="2026-11-25T10:00:09Z")
    early = fake.add(id="00000000-0000-4000-8000-00000000000b", state="active",
                     created_at="2026-11-25T11:00:05+01:00")
    tie = fake.add(id="00000000-0000-4000-8000-00000000000c", state="active", created_at="2026-11-25T10:00:05Z")
    response = run(sync_request(), fake, clock)
    assert response["annotations"]["metal-machine-hooks/device-id"] == early["id"]
    assert set(fake.devices) == {early["id"]}
    assert {late["id"], tie["id"]} == {i for op_, i in fake.calls if op_ == "delete_device"}


@pytest.mark.parametrize(
    "odd",
    [{"tags": "metal-machine-hooks:managed"}, {"ip_addresses": {"address": "1.2.3.4"}}, {"metro": "ny"},
     {"state": 7}, {"created_at": 12}, {"hostname": None}],
)
def test_odd_device_fields_from_the_api_do_not_crash(fake, clock, odd) -> None:
    device = fake.add(state="active")
    fake.devices[device["id"]].update(odd)
    body = sync_request()
    body["object"]["metadata"]["annotations"] = {"metal-machine-hooks/device-id": device["id"]}
    response = run(with_node(body, node()), fake, clock)
    if "tags" in odd:  # a device whose tags are not a list cannot prove it is ours
        assert op(response)["errorCode"] == "FailedPrecondition"
    else:
        assert phase(response) in ("Running", "Pending")
