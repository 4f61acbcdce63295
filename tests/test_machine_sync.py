"""The Machine sync hook against an in-memory Metal API: what gets created, and the status a user sees."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest

from hooks.context import BadRequest
from hooks.equinix.errors import (
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
from hooks.mcm import machine
from tests.crd_schema import status_problems
from tests.machine_support import (
    CREATED,
    DECORATOR_KEYS,
    NAME,
    PROJECT,
    TENANT_TAGS,
    TOKEN,
    UID_TAG,
    USERDATA_SECRET_LINE,
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
    assert response["labels"] == {"node": NAME, "metal-machine-hooks/class": "metal-small"}
    assert 0 < response["resyncAfterSeconds"] <= 10
    assert fake.tokens == [TOKEN, TOKEN]  # one client per driver call: the status lookup, the create


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
        "metal-machine-hooks:class:metal-small",  # its class's mark from birth
        *TENANT_TAGS,  # this installation's and namespace's marks: orphan collection stays inside its tenant
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
    assert fake.tokens == ["alt-token-123", "alt-token-123"]  # the status lookup, the create


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
    # The message names the adoption proof that failed (hooks.equinix.adoption), not just "not ours".
    assert "cannot be adopted" in op(response)["description"]
    assert "hostname" in op(response)["description"] or "project" in op(response)["description"]


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
    text = "Could not create machine: could not get a device with the provided reservation IDs, and reservedOnly"
    assert text in op(response)["description"]


def test_unrelated_unprocessable_stops_reservation_attempts(fake, clock) -> None:
    body = sync_request()
    provider_spec(body)["reservationIDs"] = ["res-1", "res-2"]
    fake.fail("create_device", Unprocessable("plan is not valid", status=422))
    response = run(body, fake, clock)
    assert fake.ops().count("create_device") == 1
    assert op(response)["errorCode"] == "Unavailable"  # the Go provider's code for a failed create
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
