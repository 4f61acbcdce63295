"""The Machine finalize hook: a Machine goes away only once none of its devices is left, and never takes another's."""

from __future__ import annotations

import pytest

from hooks.equinix.errors import Forbidden, ServerError, Unauthorized
from hooks.mcm import machine
from tests.crd_schema import status_problems
from tests.machine_support import (
    DECORATOR_KEYS,
    UID_TAG,
    apply,
    cached_crd_schemas,
    clock_fixture,
    context,
    fake_fixture,
    finalize_request,
    machine_class,
    set_secret_value,
    sync_request,
)

__all__ = ["cached_crd_schemas", "clock_fixture", "fake_fixture"]


def run(body, fake, clock, **settings):
    response = machine.finalize(body, context(fake, clock, **settings))
    assert set(response) <= DECORATOR_KEYS
    assert isinstance(response["finalized"], bool)
    assert status_problems(response["status"], "Machine") == []
    assert response["status"]["currentStatus"]["phase"] == "Terminating"
    assert response["status"]["lastOperation"]["type"] == "Delete"
    return response


def created(fake, clock) -> dict:
    body = sync_request()
    return apply(body, machine.sync(body, context(fake, clock)))


def past_drain(body, fake, clock) -> dict:
    """The first finalize call shows the drain outcome (no Node: nothing to drain) before touching a device."""
    fake.calls.clear()
    response = run(body, fake, clock)
    assert response["finalized"] is False
    assert response["status"]["lastOperation"]["description"] == (
        "Skipping drain as node object does not exist. Initiate VM deletion")
    assert "delete_device" not in fake.ops()
    fake.calls.clear()
    return apply(body, response)


def test_delete_then_wait_until_gone(fake, clock) -> None:
    body = past_drain(finalize_request(created(fake, clock)), fake, clock)
    (device_id,) = fake.devices
    fake.slow_delete = True
    first = run(body, fake, clock)
    assert fake.calls == [("get_device", device_id), ("list_devices", UID_TAG), ("delete_device", device_id)]
    assert first["finalized"] is False
    assert 0 < first["resyncAfterSeconds"] <= 10
    assert first["status"]["lastOperation"]["state"] == "Processing"
    assert device_id in first["status"]["lastOperation"]["description"]
    body = apply(body, first)
    fake.calls.clear()
    second = run(body, fake, clock)  # deprovisioning still counts as present; no second DELETE
    assert second["finalized"] is False
    assert "delete_device" not in fake.ops()
    del fake.devices[device_id]
    third = run(apply(body, second), fake, clock)
    assert third["finalized"] is True
    # MCM's deleteNodeObject: no Node observed, so none to remove; its state for the step is Processing.
    assert third["status"]["lastOperation"]["state"] == "Processing"
    assert third["status"]["lastOperation"]["description"].startswith("No node object found for ")
    assert "resyncAfterSeconds" not in third


def test_machine_without_device_finalizes_at_once(fake, clock) -> None:
    response = run(finalize_request(), fake, clock)
    assert response["finalized"] is True
    assert fake.ops() == ["list_devices"]


def test_device_found_only_by_tag_is_deleted(fake, clock) -> None:
    lost = fake.add(state="active")  # a create whose answer was lost: no id recorded on the Machine
    body = finalize_request()
    first = run(body, fake, clock)
    assert first["status"]["lastOperation"]["description"].startswith("Skipping drain as nodeName is not a valid one")
    body = apply(body, first)
    response = run(body, fake, clock)
    assert ("delete_device", lost["id"]) in fake.calls
    assert response["finalized"] is False
    assert run(apply(body, response), fake, clock)["finalized"] is True


def test_foreign_device_named_on_machine_is_never_deleted(fake, clock) -> None:
    foreign = fake.add(state="active", tags=["kubernetes.io/cluster/other: 1"])
    body = finalize_request()
    body["object"]["metadata"]["annotations"] = {"metal-machine-hooks/device-id": foreign["id"]}
    response = run(body, fake, clock)
    assert "delete_device" not in fake.ops()
    assert foreign["id"] in fake.devices
    assert response["finalized"] is True
    assert "was left alone" in response["status"]["lastOperation"]["description"]


def test_foreign_provider_id_with_own_device_by_tag(fake, clock) -> None:
    foreign = fake.add(state="active", tags=[])
    mine = fake.add(state="active")
    body = finalize_request()
    body["object"]["spec"]["providerID"] = f"equinixmetal://ny/{foreign['id']}"
    response = run(apply(body, run(body, fake, clock)), fake, clock)
    assert ("delete_device", mine["id"]) in fake.calls
    assert ("delete_device", foreign["id"]) not in fake.calls
    assert response["finalized"] is False


@pytest.mark.parametrize(
    "break_credentials",
    [
        lambda body: body["related"]["Secret.v1"].clear(),
        lambda body: set_secret_value(body, "apiToken", None),
        lambda body: body["related"]["MachineClass.machine.sapcloud.io/v1alpha1"].clear(),
        lambda body: machine_class(body)["providerSpec"].pop("projectID"),
    ],
    ids=["secret-missing", "token-missing", "class-missing", "project-missing"],
)
def test_lost_credentials_keep_machine_terminating(fake, clock, break_credentials) -> None:
    body = finalize_request(created(fake, clock))
    break_credentials(body)
    fake.calls.clear()
    response = run(body, fake, clock)
    assert response["finalized"] is False
    assert fake.calls == []
    description = response["status"]["lastOperation"]["description"]
    assert "stays Terminating" in description
    assert "metal-machine-hooks/skip-device-cleanup" in description
    assert response["status"]["lastOperation"]["errorCode"] == "InvalidArgument"
    assert response["resyncAfterSeconds"] > 0


def test_never_created_machine_without_credentials_does_not_finalize_blindly(fake, clock) -> None:
    body = finalize_request()
    body["related"]["Secret.v1"].clear()
    response = run(body, fake, clock)
    assert response["finalized"] is False
    assert "metal-machine-hooks/credentials" in response["status"]["lastOperation"]["description"]


@pytest.mark.parametrize(
    ("error", "code"),
    [(Unauthorized("401 Unauthorized", status=401), "Unauthenticated"),
     (Forbidden("403 Forbidden", status=403), "PermissionDenied"),
     (ServerError("503 Service Unavailable", status=503), "Unavailable")],
)
def test_api_errors_keep_machine_terminating(fake, clock, error, code) -> None:
    body = finalize_request(created(fake, clock))
    fake.fail("get_device", error)
    response = run(body, fake, clock)
    assert response["finalized"] is False
    assert response["status"]["lastOperation"]["errorCode"] == code
    assert response["status"]["lastOperation"]["state"] == "Failed"
    assert len(fake.devices) == 1
    if code != "Unavailable":
        assert "skip-device-cleanup" in response["status"]["lastOperation"]["description"]
