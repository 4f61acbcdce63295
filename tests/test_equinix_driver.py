"""EquinixDriver at its edge: the providerID format, the neutral Device it builds from an API device, and the
translation of the client's exceptions into DriverError with MCM's codes."""

from __future__ import annotations

import pytest

from hooks.config import Settings
from hooks.driver import Address, DeviceState, DriverError, MachineRequest
from hooks.equinix import devices
from hooks.equinix.driver import EquinixDriver
from hooks.equinix.errors import (
    CapacityError,
    Forbidden,
    RateLimited,
    ServerError,
    TransportError,
    Unauthorized,
    UnexpectedResponse,
    Unprocessable,
)
from tests.machine_support import CLASS_ID, INSTALLATION, NAME, TOKEN, UID, FakeMetal, sync_request


def request(body: dict | None = None) -> MachineRequest:
    body = body or sync_request()
    return MachineRequest(body["object"], body["related"]["MachineClass.machine.sapcloud.io/v1alpha1"][CLASS_ID],
                          body["related"]["Secret.v1"], installation_id=INSTALLATION)


def driver(fake: FakeMetal) -> EquinixDriver:
    return EquinixDriver(Settings(), fake.factory)


@pytest.mark.parametrize(
    ("provider_id", "device_id"),
    [
        ("equinixmetal://5f1c", "5f1c"),
        ("equinixmetal://ny/5f1c", "5f1c"),
        ("equinixmetal://ny/5f1c/", None),
        ("equinixmetal://", None),
        ("equinixmetal://ny/", None),
        ("equinixmetal://a/b/c", None),
        ("aws:///eu-west-1a/i-0abc", None),
        (None, None),
    ],
)
def test_provider_id_is_parsed_in_one_place(provider_id: str | None, device_id: str | None) -> None:
    assert devices.parse_provider_id(provider_id) == device_id
    machine = {"metadata": {"name": NAME}, "spec": {"providerID": provider_id}}
    assert EquinixDriver(Settings(), FakeMetal().factory).recorded_device_id(machine) == device_id


def test_the_annotation_wins_over_the_provider_id() -> None:
    machine = {"metadata": {"annotations": {"metal-machine-hooks/device-id": " d-7 "}},
               "spec": {"providerID": "equinixmetal://ny/d-8"}}
    assert devices.recorded_device_id(machine) == "d-7"


def test_an_api_device_becomes_a_neutral_device() -> None:
    raw = {"id": "d-1", "state": "deprovisioning", "hostname": "h", "created_at": "2026-11-25T10:00:05Z",
           "tags": ["metal-machine-hooks:managed", f"metal-machine-hooks:uid:{UID}"],
           "ip_addresses": [{"address_family": 6, "public": True, "address": "2604::1"},
                            {"address_family": 4, "public": False, "address": "10.0.0.3"},
                            {"address_family": 4, "public": True, "address": "198.51.100.1", "enabled": False}]}
    device = devices.to_device(raw, fallback_metro="da", hostname=NAME)
    assert device.state is DeviceState.GONE and device.provider_state == "deprovisioning"
    assert device.provider_id == "equinixmetal://da/d-1"
    assert device.owner_uid == UID
    assert device.addresses == (Address("10.0.0.3", "InternalIP"), Address("2604::1", "ExternalIP"),
                                Address("h", "Hostname"))
    assert device.created_at is not None and device.created_at.isoformat() == "2026-11-25T10:00:05+00:00"
    assert devices.to_device({"id": "d-2", "state": "queued", "metro": {"code": "ny"}}, fallback_metro="da",
                             hostname=NAME).state is DeviceState.PROVISIONING


@pytest.mark.parametrize(
    ("error", "code", "ambiguous"),
    [
        (TransportError("read timed out", operation="create_device"), "Unavailable", True),
        (ServerError("HTTP 502", status=502), "Unavailable", True),
        (UnexpectedResponse("HTTP 409", status=409), "Unavailable", True),
        (Unauthorized("HTTP 401", status=401), "Unauthenticated", False),
        (Forbidden("HTTP 403", status=403), "PermissionDenied", False),
        (Unprocessable("HTTP 422: plan is not valid", status=422), "Unavailable", False),  # as the Go provider
        (CapacityError("HTTP 503: no provisionable", status=503), "ResourceExhausted", False),
    ],
)
def test_create_errors_carry_mcm_codes_and_mark_unknown_outcomes(error, code: str, ambiguous: bool) -> None:
    fake = FakeMetal()
    fake.fail("create_device", error)
    with pytest.raises(DriverError) as caught:
        driver(fake).create_machine(request())
    assert (caught.value.code, caught.value.ambiguous) == (code, ambiguous)
    assert fake.ops().count("create_device") == 1  # never repeated
    assert TOKEN not in caught.value.message


def test_rate_limits_carry_retry_after_and_lookups_are_never_ambiguous() -> None:
    fake = FakeMetal()
    fake.fail("list_devices", RateLimited("HTTP 429", status=429, retry_after=42.0))
    with pytest.raises(DriverError) as caught:
        driver(fake).get_machine_status(request())
    assert (caught.value.code, caught.value.retry_after, caught.value.ambiguous) == ("ResourceExhausted", 42.0, False)


def test_validation_is_exposed_without_a_call() -> None:
    fake = FakeMetal()
    body = sync_request()
    body["related"]["MachineClass.machine.sapcloud.io/v1alpha1"][CLASS_ID]["providerSpec"]["facilities"] = ["ny5"]
    found = driver(fake).validate(request(body))
    assert found.problems == () and found.access_problems == ()
    assert found.ignored_keys == ("facilities",)
    assert fake.calls == [] and fake.tokens == []


def test_delete_dry_run_only_reports() -> None:
    fake = FakeMetal()
    device = fake.add()
    result = driver(fake).delete_machine(request(), dry_run=True)
    assert result.present == (device["id"],)
    assert "delete_device" not in fake.ops()
    fake.slow_delete = True
    assert driver(fake).delete_machine(request()).present == (device["id"],)  # deprovisioning: still there
    assert fake.ops().count("delete_device") == 1
    assert driver(fake).delete_machine(request()).present == (device["id"],)
    assert fake.ops().count("delete_device") == 1  # never a second DELETE while it deprovisions


def test_list_machines_is_the_inventory_s_and_refuses_a_class_it_cannot_scan() -> None:
    """ListMachines (MCM's driver.go) is answered by hooks/equinix/inventory.py behind the same driver."""
    from hooks.driver import ClassRequest

    with pytest.raises(DriverError) as caught:
        driver(FakeMetal()).list_machines(ClassRequest({"metadata": {"name": "c", "namespace": "n"}}))
    assert caught.value.code == "InvalidArgument"
    assert "projectID is missing" in caught.value.message
