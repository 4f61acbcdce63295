"""The Machine finalize hook against the fake Driver: drain first, then DeleteMachine, and a Machine goes away only
once none of its devices is left (moved here from test_machine_finalize.py, which keeps what the Metal API sees)."""

from __future__ import annotations

import pytest

from hooks.driver import DriverError, Validation
from tests.fake_driver import FakeDriver
from tests.machine_support import (
    NAME,
    UID,
    Clock,
    apply,
    cached_crd_schemas,
    clock_fixture,
    finalize_request,
    node,
    observe_jobs,
    with_node,
)
from tests.test_machine_hook import created, driver_fixture, past_drain
from tests.test_machine_hook import finalize as run

__all__ = ["cached_crd_schemas", "clock_fixture", "driver_fixture"]

NO_SECRET = ("secretRef: Not found: Secret \"ns/metal-credentials\" is not visible to the hooks; it must exist in "
             "namespace \"ns\" and carry the label metal-machine-hooks/credentials: \"true\"",)


def test_finalize_is_idempotent_after_finalized(driver: FakeDriver, clock: Clock) -> None:
    body = finalize_request()
    first = run(body, driver, clock)
    body = apply(body, first)
    clock.advance(seconds=30)
    second = run(body, driver, clock)  # Metacontroller calls again while another finalizer holds the object
    assert first["finalized"] is True and second["finalized"] is True
    assert second["status"] == body["object"]["status"]


def test_machine_without_device_finalizes_at_once(driver: FakeDriver, clock: Clock) -> None:
    response = run(finalize_request(), driver, clock)
    assert response["finalized"] is True
    assert driver.ops() == ["delete_machine (dry run)"]


def test_never_created_machine_without_credentials_does_not_finalize_blindly(driver, clock) -> None:
    driver.validation = Validation(problems=NO_SECRET, access_problems=NO_SECRET)
    response = run(finalize_request(), driver, clock)
    assert response["finalized"] is False
    assert "metal-machine-hooks/credentials" in response["status"]["lastOperation"]["description"]
    assert driver.calls == []


def test_skip_cleanup_annotation_lets_machine_go(driver: FakeDriver, clock: Clock) -> None:
    body = finalize_request(created(driver, clock))
    driver.validation = Validation(problems=NO_SECRET, access_problems=NO_SECRET)
    body["object"]["metadata"]["annotations"]["metal-machine-hooks/skip-device-cleanup"] = "true"
    driver.calls.clear()
    response = run(body, driver, clock)
    assert response["finalized"] is True
    assert driver.calls == []
    assert "skip-device-cleanup" in response["status"]["lastOperation"]["description"]


@pytest.mark.parametrize("code", ["Unauthenticated", "PermissionDenied", "Unavailable"])
def test_api_errors_keep_machine_terminating(driver: FakeDriver, clock: Clock, code: str) -> None:
    body = finalize_request(created(driver, clock))
    driver.fail("delete_machine", DriverError(f"get_device failed: {code}", code))
    response = run(body, driver, clock)
    assert response["finalized"] is False
    assert response["status"]["lastOperation"]["errorCode"] == code
    assert response["status"]["lastOperation"]["state"] == "Failed"
    assert len(driver.devices) == 1
    if code != "Unavailable":
        assert "skip-device-cleanup" in response["status"]["lastOperation"]["description"]
    else:
        assert "skip-device-cleanup" not in response["status"]["lastOperation"]["description"]


def test_terminating_status_is_stable(driver: FakeDriver, clock: Clock) -> None:
    body = past_drain(finalize_request(created(driver, clock)), driver, clock)
    driver.slow_delete = True
    body = apply(body, run(body, driver, clock))
    clock.advance(seconds=5)
    first = run(body, driver, clock)
    clock.advance(seconds=5)
    assert first == run(body, driver, clock)
    assert first["status"]["currentStatus"] == body["object"]["status"]["currentStatus"]


def test_finalize_message_names_machine(driver: FakeDriver, clock: Clock) -> None:
    driver.validation = Validation(problems=NO_SECRET, access_problems=NO_SECRET)
    assert NAME in run(finalize_request(), driver, clock)["status"]["lastOperation"]["description"]


def test_ready_node_is_drained_before_the_device_is_deleted(driver: FakeDriver, clock: Clock) -> None:
    """The drain Job comes back under `attachments`, as Metacontroller sends a decorator's observed attachments."""
    body = with_node(finalize_request(created(driver, clock)), node())
    (device_id,) = driver.devices
    driver.calls.clear()
    first = run(body, driver, clock)
    # Only the lookup that proves the Node is the device's (hooks/mcm/node_proof.py); nothing deleted before the drain.
    assert first["finalized"] is False and driver.calls == [("get_machine_status", UID)]
    assert first["status"]["lastOperation"]["description"] == "Initiate node drain"
    (job,) = first["attachments"]
    assert job["kind"] == "Job" and job["metadata"]["name"] == f"{NAME}-drain"
    body = observe_jobs(apply(body, first), first["attachments"], complete=False)
    running = run(body, driver, clock)
    assert running["attachments"] == first["attachments"] and driver.calls == [("get_machine_status", UID)] * 2
    body = observe_jobs(body, first["attachments"], complete=True)
    announced = run(body, driver, clock)
    assert announced["status"]["lastOperation"]["description"] == "Drain successful. Initiate VM deletion"
    assert driver.ops()[2:] == ["get_machine_status", "delete_machine (dry run)"]
    assert announced["attachments"] == first["attachments"]
    assert device_id in driver.devices
    body = apply(body, announced)
    deleting = run(body, driver, clock)
    assert driver.ops()[-1] == "delete_machine" and device_id not in driver.devices
    assert deleting["attachments"] == first["attachments"]
    done = run(apply(body, deleting), driver, clock)
    assert done["finalized"] is True


def test_force_deletion_label_skips_the_drain(driver: FakeDriver, clock: Clock) -> None:
    body = with_node(finalize_request(created(driver, clock)), node())
    body["object"]["metadata"]["labels"]["force-deletion"] = "True"
    response = run(body, driver, clock)
    assert response["attachments"] == []
    assert response["status"]["lastOperation"]["description"].startswith("Skipping drain as")


def test_drain_settings_come_from_the_settings_read_at_start_not_the_environment(driver, clock, monkeypatch) -> None:
    # A bad DRAIN_* value is refused at start-up (tests/test_app_basics.py); later environment changes do nothing.
    monkeypatch.setenv("DRAIN_SERVICE_ACCOUNT", "Not A Name")
    monkeypatch.setenv("DRAIN_ENABLED", "false")
    body = with_node(finalize_request(created(driver, clock)), node())
    response = run(body, driver, clock, drain_service_account="drainer")
    assert response["finalized"] is False
    [job] = response["attachments"]
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "drainer"
    skipped = run(body, driver, clock, drain_enabled=False)
    assert skipped["status"]["lastOperation"]["description"].startswith("Skipping drain as draining is disabled")
