"""A Machine's life through MCM's phases, against the fake Driver: what a user sees in the status as the device and
the Node change (moved here from test_machine_sync.py, which keeps what the Metal API receives)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from hooks.driver import DeviceState, DriverError, Validation
from tests.fake_driver import FakeDriver
from tests.machine_support import (
    CREATED,
    NAME,
    UID,
    Clock,
    apply,
    cached_crd_schemas,
    clock_fixture,
    node,
    permit_failure,
    sync_request,
    with_node,
)
from tests.test_machine_hook import driver_fixture, op, phase
from tests.test_machine_hook import sync as run

__all__ = ["cached_crd_schemas", "clock_fixture", "driver_fixture"]

UNAVAILABLE = DriverError("list_devices failed: HTTP 503: Service Unavailable", "Unavailable")


def created(driver: FakeDriver, clock: Clock, **settings) -> dict:
    return apply(sync_request(), run(sync_request(), driver, clock, **settings))


def device_id(body: dict) -> str:
    return body["object"]["metadata"]["annotations"]["metal-machine-hooks/device-id"]


def _running(driver: FakeDriver, clock: Clock) -> dict:
    body = created(driver, clock)
    driver.set_state(device_id(body), DeviceState.ACTIVE)
    clock.advance(minutes=4, seconds=30)
    with_node(body, node())
    response = run(body, driver, clock)
    assert phase(response) == "Running"
    return apply(body, response)


def test_same_request_twice_gives_identical_response(driver, clock) -> None:
    body = created(driver, clock)
    clock.advance(seconds=7)
    first = run(body, driver, clock)
    clock.advance(seconds=3)
    second = run(body, driver, clock)
    assert first == second
    assert first["status"] == body["object"]["status"]  # nothing moved: no write, no hot loop


def test_steady_running_machine_costs_one_status_call(driver, clock) -> None:
    body = _running(driver, clock)
    driver.calls.clear()
    clock.advance(minutes=5)
    response = run(body, driver, clock)
    assert driver.ops() == ["get_machine_status"]
    assert "resyncAfterSeconds" not in response
    assert response["status"] == body["object"]["status"]


def test_pending_becomes_running_when_node_ready(driver, clock) -> None:
    body = _running(driver, clock)
    status = body["object"]["status"]
    assert status["lastOperation"] == {
        "description": f"Machine {NAME} successfully joined the cluster in 5m0s",
        "state": "Successful",
        "type": "Create",
        "lastUpdateTime": "2026-11-25T10:05:00Z",
    }
    assert status["currentStatus"]["timeoutActive"] is False
    assert {"address": "10.70.1.3", "type": "InternalIP"} in status["addresses"]
    assert {"address": "147.75.84.11", "type": "ExternalIP"} in status["addresses"]
    assert {"address": NAME, "type": "Hostname"} in status["addresses"]
    assert [c["type"] for c in status["conditions"]][-1] == "Ready"


def test_pending_waits_while_device_provisions_or_node_missing(driver, clock) -> None:
    body = created(driver, clock)
    clock.advance(minutes=2)
    response = run(body, driver, clock)
    assert phase(response) == "Pending"
    driver.set_state(device_id(body), DeviceState.ACTIVE)
    response = run(body, driver, clock)  # active, but no Node yet
    assert phase(response) == "Pending"
    assert response["resyncAfterSeconds"] > 0


def test_running_goes_unknown_then_back_to_running(driver, clock) -> None:
    body = _running(driver, clock)
    clock.advance(minutes=10)
    response = run(with_node(body, node(ready=False)), driver, clock)
    assert phase(response) == "Unknown"
    assert op(response)["description"].startswith(f"Machine {NAME} is unhealthy - changing MachinePhase to Unknown")
    assert "Ready=False" in op(response)["description"]
    assert op(response)["type"] == "HealthCheck"
    body = apply(body, response)
    clock.advance(minutes=3)
    response = run(with_node(body, node()), driver, clock)
    assert phase(response) == "Running"
    assert op(response)["description"] == f"Machine {NAME} successfully re-joined the cluster"


def test_missing_node_makes_running_unknown_and_failed_after_health_timeout(driver, clock) -> None:
    body = _running(driver, clock)
    clock.advance(minutes=1)
    response = run(with_node(body, None), driver, clock)
    assert phase(response) == "Unknown"
    assert op(response)["description"].startswith("Node object went missing.")
    went_unknown = response["status"]["currentStatus"]["lastUpdateTime"]
    body = apply(body, response)
    clock.advance(minutes=9)
    response = run(body, driver, clock)
    assert phase(response) == "Unknown"
    assert response["status"]["currentStatus"]["lastUpdateTime"] == went_unknown
    assert response["resyncAfterSeconds"] <= 61
    clock.advance(minutes=1, seconds=1)
    held = run(permit_failure(body, None), driver, clock)  # another Machine of the deployment is being replaced
    assert phase(held) == "Unknown"
    assert held["status"]["lastOperation"] == response["status"]["lastOperation"]
    assert held["resyncAfterSeconds"] <= 60
    response = run(permit_failure(body, NAME), driver, clock)
    assert phase(response) == "Failed"
    assert "health checks failing since last 10m0s minutes" in op(response)["description"]
    assert "resyncAfterSeconds" not in response


def test_health_timeout_override_from_spec(driver, clock) -> None:
    body = _running(driver, clock)
    body["object"]["spec"]["healthTimeout"] = "90s"
    body = apply(body, run(with_node(body, None), driver, clock))
    clock.advance(seconds=91)
    assert phase(run(permit_failure(body, NAME), driver, clock)) == "Failed"


def test_pending_fails_after_creation_timeout(driver, clock) -> None:
    body = created(driver, clock)
    clock.advance(minutes=19)
    assert phase(run(body, driver, clock)) == "Pending"
    clock.advance(minutes=1)
    response = run(body, driver, clock)
    assert phase(response) == "Failed"
    assert op(response)["description"] == f"Machine {NAME} failed to join the cluster in 20m0s minutes."


@pytest.mark.parametrize(("value", "fails_after"), [("5m", 5), ("1h30m", 90), ("90s", 1.5)])
def test_creation_timeout_override(driver, clock, value, fails_after) -> None:
    body = sync_request()
    body["object"]["spec"]["creationTimeout"] = value
    body = apply(body, run(body, driver, clock))
    clock.now = CREATED + timedelta(minutes=fails_after, seconds=-1)
    assert phase(run(body, driver, clock)) == "Pending"
    clock.advance(seconds=1)
    assert phase(run(body, driver, clock)) == "Failed"


def test_failed_device_fails_the_machine(driver, clock) -> None:
    body = created(driver, clock)
    driver.set_state(device_id(body), DeviceState.FAILED)
    response = run(body, driver, clock)
    assert phase(response) == "Failed"
    assert "state failed" in op(response)["description"]


def test_failed_is_terminal_and_costs_nothing(driver, clock) -> None:
    body = created(driver, clock)
    driver.set_state(device_id(body), DeviceState.FAILED)
    body = apply(body, run(body, driver, clock))
    driver.set_state(device_id(body), DeviceState.ACTIVE)
    driver.calls.clear()
    assert run(with_node(body, node()), driver, clock) == {}
    assert driver.calls == []


def test_device_deleted_out_of_band_fails_the_machine(driver, clock) -> None:
    body = _running(driver, clock)
    driver.devices.clear()
    driver.calls.clear()
    response = run(body, driver, clock)
    assert phase(response) == "Failed"
    assert "deleted outside the hooks" in op(response)["description"]
    assert op(response)["errorCode"] == "NotFound"
    assert "create_machine" not in driver.ops()


def test_error_backoff_grows_with_the_time_the_error_lasts(driver, clock) -> None:
    body = sync_request()
    waits = []
    for _ in range(4):
        driver.fail("get_machine_status", UNAVAILABLE)
        response = run(body, driver, clock)
        waits.append(response["resyncAfterSeconds"])
        body = apply(body, response)
        clock.advance(seconds=response["resyncAfterSeconds"])
    assert waits == sorted(waits) and waits[-1] > waits[0]


def test_api_error_on_running_machine_keeps_phase(driver, clock) -> None:
    body = _running(driver, clock)
    driver.fail("get_machine_status", DriverError("get_device failed: HTTP 500", "Unavailable"))
    response = run(body, driver, clock)
    assert phase(response) == "Running"
    assert op(response)["type"] == "HealthCheck" and op(response)["errorCode"] == "Unavailable"
    body = apply(body, response)
    response = run(body, driver, clock)
    assert phase(response) == "Running" and op(response)["state"] == "Successful"


def test_no_target_cluster_makes_active_device_available(driver, clock) -> None:
    body = created(driver, clock, no_target_cluster=True)
    assert "labels" not in body or "node" not in body["object"]["metadata"].get("labels", {})
    driver.set_state(device_id(body), DeviceState.ACTIVE)
    response = run(body, driver, clock, no_target_cluster=True)
    assert phase(response) == "Available"
    assert op(response)["description"] == "Created machine on cloud provider"
    assert "resyncAfterSeconds" not in response
    assert any(a["type"] == "ExternalIP" for a in response["status"]["addresses"])


def recorded(driver: FakeDriver, **fields) -> tuple[dict, str]:
    """A request whose Machine already records one of its devices."""
    device = driver.add(UID, hostname=NAME, **fields)
    body = sync_request()
    body["object"]["metadata"]["annotations"] = {"metal-machine-hooks/device-id": device.id}
    return body, device.id


def test_available_machine_stays_available_without_health_checks(driver, clock) -> None:
    body, device = recorded(driver, state=DeviceState.ACTIVE)
    body = apply(body, run(body, driver, clock, no_target_cluster=True))
    assert body["object"]["status"]["currentStatus"]["phase"] == "Available"
    driver.devices[device] = replace(driver.devices[device], state=DeviceState.PROVISIONING, provider_state="inactive")
    clock.advance(hours=2)
    response = run(body, driver, clock, no_target_cluster=True)
    assert phase(response) == "Available"
    assert response["status"]["lastKnownState"] == f"device {device} is inactive"
    driver.set_state(device, DeviceState.FAILED)
    assert phase(run(body, driver, clock, no_target_cluster=True)) == "Failed"


def test_pending_machine_waits_for_critical_components_taint(driver, clock) -> None:
    body, _ = recorded(driver, state=DeviceState.ACTIVE)
    tainted = node()
    tainted["spec"]["taints"] = [{"key": "node.gardener.cloud/critical-components-not-ready", "effect": "NoSchedule"}]
    assert phase(run(with_node(body, tainted), driver, clock)) == "Pending"
    assert phase(run(with_node(body, node()), driver, clock)) == "Running"


@pytest.mark.parametrize("condition", ["DiskPressure", "NetworkUnavailable", "KernelDeadlock", "ReadonlyFilesystem"])
def test_problem_node_condition_makes_running_unknown(driver, clock, condition) -> None:
    body = _running(driver, clock)
    sick = node()
    sick["status"]["conditions"].append({"type": condition, "status": "True", "reason": "Bad"})
    sick["status"]["conditions"] = [c for c in sick["status"]["conditions"] if c["type"] != condition or
                                    c["status"] == "True"]
    response = run(with_node(body, sick), driver, clock)
    assert phase(response) == "Unknown"
    assert f"{condition}=True" in op(response)["description"]
    assert [c["type"] for c in response["status"]["conditions"]].count(condition) == 1


INVALID = Validation(problems=("providerSpec.metro: Required value: Metro is required",))


def _scenario(name: str, driver: FakeDriver, clock: Clock) -> tuple[dict, dict]:
    """A request in a given situation, after Metacontroller stored the hook's first answer; plus settings."""
    settings: dict = {}
    if name == "invalid":
        body = sync_request()
        driver.validation = INVALID
    elif name == "api-error":
        body = sync_request()
    elif name == "pending":
        body = created(driver, clock)
    elif name == "running":
        body = _running(driver, clock)
    elif name == "unknown":
        body = _running(driver, clock)
        body = apply(body, run(with_node(body, node(ready=False)), driver, clock))
    elif name == "available":
        settings = {"no_target_cluster": True}
        body, _ = recorded(driver, state=DeviceState.ACTIVE)
    if name == "api-error":
        driver.fail("get_machine_status", UNAVAILABLE)
    body = apply(body, run(body, driver, clock, **settings))
    return body, settings


@pytest.mark.parametrize("name", ["invalid", "api-error", "pending", "running", "unknown", "available"])
def test_unchanged_observation_gives_unchanged_status(driver, clock, name) -> None:
    body, settings = _scenario(name, driver, clock)
    answers = []
    for _ in range(2):
        clock.advance(seconds=2)
        if name == "api-error":
            driver.fail("get_machine_status", UNAVAILABLE)
        answers.append(run(body, driver, clock, **settings))
    assert answers[0] == answers[1]
    assert answers[0]["status"] == body["object"]["status"]


def test_invalid_class_fails_after_creation_timeout(driver, clock) -> None:
    driver.validation = Validation(problems=("providerSpec.machineType: Required value: Machine Type is required",))
    body = sync_request()
    response = run(body, driver, clock)
    assert phase(response) == "CrashLoopBackOff"
    assert response["resyncAfterSeconds"] <= 20 * 60
    body = apply(body, response)
    clock.now = CREATED + timedelta(minutes=20, seconds=1)
    response = run(body, driver, clock)
    assert phase(response) == "Failed"
    assert "Machine Type is required" in op(response)["description"]
    assert driver.calls == []


def test_running_machine_whose_secret_went_away_stays_running(driver, clock) -> None:
    body = _running(driver, clock)
    gone = ("secretRef: Not found: Secret \"ns/metal-credentials\" is not visible to the hooks; it must exist in "
            "namespace \"ns\" and carry the label metal-machine-hooks/credentials: \"true\"",)
    driver.validation = Validation(problems=gone, access_problems=gone)
    driver.calls.clear()
    response = run(body, driver, clock)
    assert phase(response) == "Running"
    assert op(response)["state"] == "Failed" and op(response)["errorCode"] == "InvalidArgument"
    assert op(response)["type"] == "HealthCheck"
    assert "metal-machine-hooks/credentials" in op(response)["description"]
    assert driver.calls == []
