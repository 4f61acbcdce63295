"""The Machine hooks through their seam: a fake Driver stands for the provider, the assertions are what a user of
the Machine API sees (phase, lastOperation, annotations, resync, finalized) and which driver calls were made.

The same behaviours against the real EquinixDriver (what the Metal API receives) are in test_machine_sync.py,
test_machine_finalize.py and, against the simulator, test_machine_sim.py.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from hooks.config import Settings
from hooks.context import HookContext
from hooks.driver import DeviceState, DriverError, Validation
from hooks.mcm import machine
from tests.crd_schema import status_problems
from tests.fake_driver import FakeDriver
from tests.machine_support import (
    DECORATOR_KEYS,
    NAME,
    NS,
    OWNER,
    UID,
    Clock,
    apply,
    cached_crd_schemas,
    clock_fixture,
    decorated,
    finalize_request,
    node,
    sync_request,
    with_node,
)

__all__ = ["cached_crd_schemas", "clock_fixture"]

MACHINESET_KEY = "MachineSet.machine.sapcloud.io/v1alpha1"
OWNER_KEY = f"{NS}/{OWNER['name']}"


@pytest.fixture(name="driver")
def driver_fixture() -> FakeDriver:
    return FakeDriver()


def context(driver: FakeDriver, clock: Clock, **settings: Any) -> HookContext:
    return HookContext(settings=Settings(**settings), metal=lambda token: None, clock=clock, driver=driver)


def sync(body: dict, driver: FakeDriver, clock: Clock, **settings: Any) -> dict:
    response = machine.sync(body, context(driver, clock, **settings))
    assert set(response) <= DECORATOR_KEYS
    if response.get("status") is not None:
        assert status_problems(response["status"], "Machine") == []
    return response


def finalize(body: dict, driver: FakeDriver, clock: Clock, **settings: Any) -> dict:
    response = machine.finalize(body, context(driver, clock, **settings))
    assert set(response) <= DECORATOR_KEYS
    assert response["status"]["currentStatus"]["phase"] == "Terminating"
    assert response["status"]["lastOperation"]["type"] == "Delete"
    return response


def op(response: dict) -> dict:
    return response["status"]["lastOperation"]


def phase(response: dict) -> str:
    return response["status"]["currentStatus"]["phase"]


def created(driver: FakeDriver, clock: Clock) -> dict:
    body = sync_request()
    return apply(body, sync(body, driver, clock))


# -- sync -------------------------------------------------------------------------------------------------------


def test_a_new_machine_gets_one_device_and_records_it(driver, clock) -> None:
    body = sync_request()
    response = sync(body, driver, clock)
    assert driver.ops() == ["get_machine_status", "create_machine"]
    (device,) = driver.devices.values()
    assert device.owner_uid == UID and device.hostname == NAME
    assert phase(response) == "Pending"
    assert op(response) == {"description": "Creating machine on cloud provider", "state": "Processing",
                            "type": "Create", "lastUpdateTime": "2026-11-25T10:00:30Z"}
    assert response["annotations"]["metal-machine-hooks/device-id"] == device.id
    assert response["annotations"]["metal-machine-hooks/provider-id"] == f"fake://{device.id}"
    assert response["annotations"]["machinepriority.machine.sapcloud.io"] == "3"
    assert response["labels"] == {"node": NAME, "metal-machine-hooks/class": decorated(body)["spec"]["class"]["name"]}
    assert response["status"]["lastKnownState"] == f"device {device.id} is provisioning"
    assert 0 < response["resyncAfterSeconds"] <= 10


def test_the_next_sync_uses_the_recorded_device_and_creates_nothing(driver, clock) -> None:
    body = created(driver, clock)
    driver.calls.clear()
    response = sync(body, driver, clock)
    assert driver.ops() == ["get_machine_status"]
    assert len(driver.devices) == 1
    assert "annotations" not in response and "labels" not in response  # nothing left to change
    assert response["status"] == decorated(body)["status"]


def test_active_device_and_ready_node_make_the_machine_running(driver, clock) -> None:
    body = created(driver, clock)
    driver.set_state(next(iter(driver.devices)), DeviceState.ACTIVE)
    clock.advance(minutes=3)
    response = sync(with_node(body, node()), driver, clock)
    assert phase(response) == "Running"
    assert op(response)["description"] == f"Machine {NAME} successfully joined the cluster in 3m30s"
    assert {c["type"]: c["status"] for c in response["status"]["conditions"]}["Ready"] == "True"


def test_invalid_machine_costs_no_provider_call_and_names_every_problem(driver, clock) -> None:
    driver.validation = Validation(problems=("providerSpec.metro: Required value: Metro is required",))
    body = sync_request()
    decorated(body)["spec"]["creationTimeout"] = "soon"
    response = sync(body, driver, clock)
    assert driver.calls == []
    assert phase(response) == "CrashLoopBackOff"
    assert op(response)["errorCode"] == "InvalidArgument"
    assert op(response)["description"] == (
        "Cloud provider message - invalid machine: providerSpec.metro: Required value: Metro is required; "
        "spec.creationTimeout: Invalid value: \"soon\": must be a duration such as \"20m\", \"1h30m\" or \"90s\"")


def test_a_missing_class_is_named_and_nothing_is_called(driver, clock) -> None:
    body = sync_request()
    decorated(body)["spec"]["class"]["name"] = "no-such-class"
    response = sync(body, driver, clock)
    assert driver.calls == []
    assert op(response)["description"] == (
        f"Cloud provider message - invalid machine: spec.class.name: Not found: MachineClass \"{NS}/no-such-class\" "
        "does not exist")


def test_a_lost_create_answer_is_looked_up_not_repeated(driver, clock) -> None:
    driver.lose_create_answer = True
    first = sync(sync_request(), driver, clock)
    assert phase(first) == "CrashLoopBackOff"
    assert op(first)["errorCode"] == "Unavailable"
    assert first["resyncAfterSeconds"] == 5.0
    driver.lose_create_answer = False
    driver.calls.clear()
    second = sync(apply(sync_request(), first), driver, clock)
    assert driver.ops() == ["get_machine_status"]
    assert len(driver.devices) == 1
    assert second["annotations"]["metal-machine-hooks/device-id"] == next(iter(driver.devices))


def test_a_rate_limited_lookup_waits_at_least_retry_after(driver, clock) -> None:
    driver.fail("get_machine_status", DriverError("HTTP 429: slow down", "ResourceExhausted", retry_after=120.0))
    response = sync(sync_request(), driver, clock)
    assert driver.ops() == ["get_machine_status"]
    assert op(response)["description"] == "Cloud provider message - looking up the device failed: HTTP 429: slow down"
    assert response["resyncAfterSeconds"] == 120.0


def test_a_recorded_device_that_is_not_ours_is_refused(driver, clock) -> None:
    foreign = driver.add("someone-else")
    body = sync_request()
    decorated(body)["metadata"].setdefault("annotations", {})["metal-machine-hooks/device-id"] = foreign.id
    response = sync(body, driver, clock)
    assert "create_machine" not in driver.ops()
    assert op(response)["errorCode"] == "FailedPrecondition"
    assert foreign.id in op(response)["description"]


def test_a_recorded_device_deleted_behind_our_back_fails_the_machine(driver, clock) -> None:
    body = created(driver, clock)
    driver.devices.clear()
    driver.calls.clear()
    response = sync(body, driver, clock)
    assert driver.ops() == ["get_machine_status"]
    assert phase(response) == "Failed"
    assert op(response)["errorCode"] == "NotFound" and op(response)["type"] == "HealthCheck"


def test_duplicates_are_reported_and_the_oldest_kept(driver, clock) -> None:
    oldest = driver.add(UID, age=60)
    newer = driver.add(UID)
    response = sync(sync_request(), driver, clock)
    assert list(driver.devices) == [oldest.id]
    assert response["annotations"]["metal-machine-hooks/device-id"] == oldest.id
    assert op(response)["description"] == (
        f"Creating machine on cloud provider; deleted duplicate device(s) {newer.id}, kept the oldest")


def test_a_failed_machine_is_left_alone(driver, clock) -> None:
    body = sync_request()
    decorated(body)["status"] = {"currentStatus": {"phase": "Failed", "lastUpdateTime": "2026-11-25T10:00:00Z"}}
    class_name = decorated(body)["spec"]["class"]["name"]
    # Only the class label is written once (so its MachineClass relates it); nothing else, no API call.
    assert sync(body, driver, clock) == {"labels": {"metal-machine-hooks/class": class_name}}
    decorated(body)["metadata"].setdefault("labels", {})["metal-machine-hooks/class"] = class_name
    assert sync(body, driver, clock) == {}
    assert driver.calls == []


def test_without_a_target_cluster_an_active_device_is_available(driver, clock) -> None:
    body = created(driver, clock)
    driver.set_state(next(iter(driver.devices)), DeviceState.ACTIVE)
    response = sync(body, driver, clock, no_target_cluster=True)
    assert phase(response) == "Available"
    assert "labels" not in response
    assert "conditions" not in response["status"]


# -- owners being deleted (issue 13 item 5) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("owner", "reason"),
    [
        (None, f"its MachineSet {OWNER['name']} is not there (deleted, or not yet visible)"),
        ({"uid": "another-uid"}, f"its MachineSet {OWNER['name']} was replaced (UID another-uid, the Machine names "
                                 f"{OWNER['uid']})"),
        ({"deletionTimestamp": "2026-11-25T10:00:20Z"}, f"its MachineSet {OWNER['name']} is being deleted"),
    ],
)
def test_no_device_is_created_while_the_machineset_is_going(driver, clock, owner, reason) -> None:
    body = sync_request()
    if owner is None:
        del body["related"][MACHINESET_KEY][OWNER_KEY]
    else:
        body["related"][MACHINESET_KEY][OWNER_KEY]["metadata"].update(owner)
    response = sync(body, driver, clock)
    assert driver.ops() == ["get_machine_status"]
    assert driver.devices == {}
    assert phase(response) == "Pending"
    assert op(response)["description"] == f"Not creating a device: {reason}"
    assert op(response)["state"] == "Processing" and op(response)["type"] == "Create"
    assert response["resyncAfterSeconds"] == 5.0


def test_an_existing_device_is_still_managed_while_the_machineset_is_deleted(driver, clock) -> None:
    body = created(driver, clock)
    driver.set_state(next(iter(driver.devices)), DeviceState.ACTIVE)
    body["related"][MACHINESET_KEY][OWNER_KEY]["metadata"]["deletionTimestamp"] = "2026-11-25T10:00:40Z"
    driver.calls.clear()
    response = sync(with_node(body, node()), driver, clock)
    assert phase(response) == "Running"
    assert driver.ops() == ["get_machine_status"]


def test_a_machine_without_controller_is_created_without_a_machineset(driver, clock) -> None:
    body = sync_request()
    decorated(body)["metadata"]["ownerReferences"] = []
    body["related"].pop(MACHINESET_KEY)
    sync(body, driver, clock)
    assert driver.ops() == ["get_machine_status", "create_machine"]


# -- Node heartbeats (issue 13 item 5) --------------------------------------------------------------------------


def heartbeat(obj: dict, seconds: int) -> dict:
    """What a kubelet status report changes when health does not: every condition's lastHeartbeatTime."""
    obj = copy.deepcopy(obj)
    for condition in obj["status"]["conditions"]:
        condition["lastHeartbeatTime"] = f"2026-11-25T10:{seconds // 60:02d}:{seconds % 60:02d}Z"
    return obj


def running(driver: FakeDriver, clock: Clock) -> dict:
    body = created(driver, clock)
    driver.set_state(next(iter(driver.devices)), DeviceState.ACTIVE)
    body = apply(body, sync(with_node(body, heartbeat(node(), 100)), driver, clock))
    assert decorated(body)["status"]["currentStatus"]["phase"] == "Running"
    return body


def test_a_heartbeat_alone_leaves_the_machine_status_unchanged(driver, clock) -> None:
    body = running(driver, clock)
    clock.advance(seconds=40)
    response = sync(with_node(body, heartbeat(node(), 140)), driver, clock)
    assert response["status"] == decorated(body)["status"]  # no write, so no MachineSet or MachineClass sync
    conditions = response["status"]["conditions"]
    assert [c["type"] for c in conditions] == [c["type"] for c in node()["status"]["conditions"]]
    assert all("lastHeartbeatTime" not in c and c["lastTransitionTime"] for c in conditions)


def test_a_condition_that_changes_does_change_the_machine_status(driver, clock) -> None:
    body = running(driver, clock)
    changed = heartbeat(node(), 140)
    pressure = next(c for c in changed["status"]["conditions"] if c["type"] == "MemoryPressure")
    pressure.update(status="True", lastTransitionTime="2026-11-25T10:02:20Z", reason="KubeletHasInsufficientMemory")
    response = sync(with_node(body, changed), driver, clock)
    assert response["status"] != decorated(body)["status"]
    copied = next(c for c in response["status"]["conditions"] if c["type"] == "MemoryPressure")
    assert copied == {"type": "MemoryPressure", "status": "True", "lastTransitionTime": "2026-11-25T10:02:20Z",
                      "reason": "KubeletHasInsufficientMemory",
                      **({"message": pressure["message"]} if pressure.get("message") else {})}


# -- finalize ---------------------------------------------------------------------------------------------------


def past_drain(body: dict, driver: FakeDriver, clock: Clock) -> dict:
    """The first finalize call shows the drain outcome (no Node: nothing to drain) before deleting anything."""
    driver.calls.clear()
    response = finalize(body, driver, clock)
    assert response["finalized"] is False
    assert op(response)["description"] == "Skipping drain as node object does not exist. Initiate VM deletion"
    assert driver.ops() == ["delete_machine (dry run)"]
    driver.calls.clear()
    return apply(body, response)


def test_finalize_deletes_then_waits_until_gone(driver, clock) -> None:
    body = past_drain(finalize_request(created(driver, clock)), driver, clock)
    (device_id,) = driver.devices
    driver.slow_delete = True
    first = finalize(body, driver, clock)
    assert driver.ops() == ["delete_machine"]
    assert first["finalized"] is False
    assert op(first)["description"] == f"Initiate VM deletion: waiting for device(s) {device_id} to be deleted."
    assert first["resyncAfterSeconds"] == 5.0
    driver.devices.clear()
    second = finalize(apply(body, first), driver, clock)
    assert second["finalized"] is True
    # MCM's deleteNodeObject after the VM: no Node is observed, so there is none to remove (docs/nodes.md).
    name = body["object"]["metadata"]["name"] if "object" in body else body["parent"]["metadata"]["name"]
    assert op(second) | {"lastUpdateTime": ""} == {
        "description": f'No node object found for "{name}", continuing deletion flow. Initiate machine object '
                       "finalizer removal",
        "state": "Processing", "type": "Delete", "lastUpdateTime": ""}


def test_finalize_of_a_machine_without_device_lets_it_go_at_once(driver, clock) -> None:
    response = finalize(finalize_request(), driver, clock)
    assert driver.ops() == ["delete_machine (dry run)"]
    assert response["finalized"] is True


def test_finalize_without_access_keeps_the_machine_and_says_how_to_let_it_go(driver, clock) -> None:
    driver.validation = Validation(problems=("secretRef: Not found",), access_problems=("secretRef: Not found",))
    response = finalize(finalize_request(), driver, clock)
    assert driver.calls == []
    assert response["finalized"] is False
    assert op(response)["errorCode"] == "InvalidArgument"
    assert "metal-machine-hooks/skip-device-cleanup=\"true\"" in op(response)["description"]


def test_finalize_delete_error_is_retried_with_the_code(driver, clock) -> None:
    body = past_drain(finalize_request(created(driver, clock)), driver, clock)
    driver.fail("delete_machine", DriverError("HTTP 403: forbidden", "PermissionDenied"))
    response = finalize(body, driver, clock)
    assert response["finalized"] is False
    assert op(response)["errorCode"] == "PermissionDenied"
    assert op(response)["description"].startswith("VM deletion failed due to - HTTP 403: forbidden. However, will "
                                                  "re-try in the next resync.")
    assert len(driver.devices) == 1


def test_finalize_with_the_opt_out_touches_nothing(driver, clock) -> None:
    body = finalize_request(created(driver, clock))
    decorated(body)["metadata"]["annotations"]["metal-machine-hooks/skip-device-cleanup"] = "true"
    driver.calls.clear()
    response = finalize(body, driver, clock)
    assert driver.calls == []
    assert response["finalized"] is True and response["attachments"] == []
    assert len(driver.devices) == 1


def test_the_creation_timeout_fails_a_machine_that_never_got_a_device(driver, clock) -> None:
    driver.fail("create_machine", DriverError("HTTP 503", "Unavailable"))
    body = apply(sync_request(), sync(sync_request(), driver, clock))
    clock.advance(minutes=21)
    response = sync(body, driver, clock)
    assert phase(response) == "Failed"
    assert op(response)["description"] == f"Machine {NAME} failed to join the cluster in 20m0s minutes."
    assert "resyncAfterSeconds" not in response
    assert driver.devices == {}


def test_the_app_hands_its_driver_to_the_machine_hooks(driver, clock) -> None:
    """`create_app(driver=...)` is the seam a second provider (or this fake) plugs into; no Metal client is built."""
    from hooks.server.app import create_app

    built: list[str] = []
    app = create_app(Settings(), metal=lambda token: built.append(token), clock=clock, driver=driver)
    answer = app.test_client().post("/machine/sync", json=sync_request())
    assert answer.status_code == 200
    assert driver.ops() == ["get_machine_status", "create_machine"]
    assert answer.json["annotations"]["metal-machine-hooks/device-id"] == next(iter(driver.devices))
    assert built == []
