"""The Machine hooks with the real Metal client against the Equinix Metal simulator (zero delays)."""

from __future__ import annotations

import pytest

from hooks.config import Settings
from hooks.context import HookContext
from hooks.equinix.client import MetalClient
from hooks.equinix.driver import EquinixDriver
from hooks.mcm import machine
from tests.crd_schema import status_problems
from tests.machine_support import (
    DECORATOR_KEYS,
    NAME,
    UID_TAG,
    Clock,
    apply,
    cached_crd_schemas,
    finalize_request,
    node_of,
    observe_jobs,
    provider_spec,
    set_secret_value,
    sync_request,
    with_node,
)

__all__ = ["cached_crd_schemas"]


@pytest.fixture
def ctx(metal_sim) -> HookContext:
    def build(token: str) -> MetalClient:
        return MetalClient(token, base_url=metal_sim.url, sleep=lambda _: None, retry_budget=1.0)

    return HookContext(settings=Settings(), metal=build, clock=Clock(), driver=EquinixDriver(Settings(), build))


def request_for(metal_sim) -> dict:
    body = sync_request()
    provider_spec(body)["projectID"] = metal_sim.project
    set_secret_value(body, "apiToken", metal_sim.token)
    return body


def sync(body, ctx) -> dict:
    response = machine.sync(body, ctx)
    assert set(response) <= DECORATOR_KEYS
    assert status_problems(response["status"], "Machine") == []
    return response


def finalize(body, ctx) -> dict:
    response = machine.finalize(body, ctx)
    assert set(response) <= DECORATOR_KEYS
    assert status_problems(response["status"], "Machine") == []
    return response


def ours(metal_sim) -> list[dict]:
    return [d for d in metal_sim.sim.devices() if UID_TAG in d.get("tags", [])]


def test_lifecycle_pending_running_deleted_finalized(metal_sim, ctx) -> None:
    body = request_for(metal_sim)
    response = sync(body, ctx)
    assert response["status"]["currentStatus"]["phase"] == "Pending"
    (device,) = ours(metal_sim)
    assert device["hostname"] == NAME
    assert response["annotations"]["metal-machine-hooks/device-id"] == device["id"]
    assert response["annotations"]["metal-machine-hooks/provider-id"] == f"equinixmetal://ny/{device['id']}"
    body = apply(body, response)

    ctx.clock.advance(minutes=3)
    response = sync(with_node(body, node_of(device)), ctx)
    assert response["status"]["currentStatus"]["phase"] == "Running"
    assert {"address": NAME, "type": "Hostname"} in response["status"]["addresses"]
    assert any(a["type"] == "InternalIP" for a in response["status"]["addresses"])
    body = apply(body, response)

    metal_sim.sim.calls.clear()
    ctx.clock.advance(minutes=2)
    assert sync(body, ctx)["status"] == body["object"]["status"]
    assert dict(metal_sim.sim.calls) == {"GET /devices/{id}": 1}

    # Deleted: the Node is drained by a Job first, then the device goes, then the Machine.
    gone = finalize_request(body)
    drain = finalize(gone, ctx)
    assert drain["status"]["lastOperation"]["description"] == "Initiate node drain"
    assert len(ours(metal_sim)) == 1
    gone = observe_jobs(apply(gone, drain), drain["attachments"], complete=True)
    announced = finalize(gone, ctx)
    assert announced["status"]["lastOperation"]["description"] == "Drain successful. Initiate VM deletion"
    assert len(ours(metal_sim)) == 1
    gone = apply(gone, announced)
    deleting = finalize(gone, ctx)
    assert deleting["finalized"] is False and deleting["resyncAfterSeconds"] > 0
    assert ours(metal_sim) == []
    gone = apply(gone, deleting)
    removing = finalize(gone, ctx)
    # MCM's deleteNodeObject, with our proof: the Node is this device's, so a Job removes it before the Machine goes.
    assert removing["finalized"] is False
    (remove,) = [j for j in removing["attachments"] if "node-remove" in j["metadata"]["name"]]
    done = finalize(observe_jobs(apply(gone, removing), [remove], complete=True), ctx)
    assert done["finalized"] is True


def test_lost_create_answer_yields_one_device(metal_sim, ctx) -> None:
    metal_sim.sim.set_faults(rate_lost_create=1.0, only_methods=["POST"])
    body = request_for(metal_sim)
    response = sync(body, ctx)
    assert "unknown" in response["status"]["lastOperation"]["description"]
    metal_sim.sim.clear_faults()
    body = apply(body, response)
    response = sync(body, ctx)
    assert response["status"]["currentStatus"]["phase"] == "Pending"
    assert len(ours(metal_sim)) == 1
    assert metal_sim.sim.calls["POST /projects/{id}/devices"] == 1


def test_reservations_in_order_then_first_provisionable(metal_sim, ctx) -> None:
    blocked = metal_sim.sim.add_reservation(metal_sim.project, plan="c3.small.x86", metro="ny", provisionable=False)
    free = metal_sim.sim.add_reservation(metal_sim.project, plan="c3.small.x86", metro="ny")
    body = request_for(metal_sim)
    provider_spec(body)["reservationIDs"] = [blocked["id"], free["id"]]
    provider_spec(body)["reservedDevicesOnly"] = True
    response = sync(body, ctx)
    assert response["status"]["currentStatus"]["phase"] == "Pending", response["status"]
    (device,) = ours(metal_sim)
    assert free["id"] in str(device.get("hardware_reservation"))
    assert metal_sim.sim.calls["POST /projects/{id}/devices"] == 2


def test_reserved_only_without_usable_reservation(metal_sim, ctx) -> None:
    blocked = metal_sim.sim.add_reservation(metal_sim.project, plan="c3.small.x86", metro="ny", provisionable=False)
    body = request_for(metal_sim)
    provider_spec(body)["reservationIDs"] = [blocked["id"]]
    provider_spec(body)["reservedDevicesOnly"] = True
    response = sync(body, ctx)
    assert response["status"]["lastOperation"]["errorCode"] == "ResourceExhausted"
    assert ours(metal_sim) == []


def test_wrong_token_is_unauthenticated_and_never_shown(metal_sim, ctx) -> None:
    body = request_for(metal_sim)
    set_secret_value(body, "apiToken", "not-the-right-token-123")
    response = sync(body, ctx)
    assert response["status"]["lastOperation"]["errorCode"] == "Unauthenticated"
    assert "not-the-right-token-123" not in str(response)
    assert metal_sim.sim.devices() == []


def test_foreign_device_named_on_machine_survives_finalize(metal_sim, ctx) -> None:
    foreign = metal_sim.sim.add_device(metal_sim.project, hostname=NAME, tags=["someone-else"], metro="ny")
    body = finalize_request(request_for(metal_sim))
    body["object"]["metadata"]["annotations"] = {"metal-machine-hooks/device-id": foreign["id"]}
    response = finalize(body, ctx)
    assert response["finalized"] is True
    assert [d["id"] for d in metal_sim.sim.devices()] == [foreign["id"]]
