"""EquinixInventory: a MachineClass's devices behind the driver seam (class marks, re-reads, errors)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hooks.driver import Address, ClassRequest, Device, DeviceState, DriverError
from hooks.equinix import inventory, tags, tenancy
from hooks.equinix.driver import EquinixDriver
from hooks.equinix.errors import RateLimited, ServerError

FIXTURE = Path(__file__).parent / "fixtures" / "machineclass" / "sync-request.json"
CLUSTER = "kubernetes.io/cluster/shoot--demo--cluster"
INSTALLATION = "7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d"  # the fixture's kube-system Namespace UID
TENANT = tenancy.tenant_tags(INSTALLATION, "shoot--demo--cluster")


def class_request() -> ClassRequest:
    body = json.loads(FIXTURE.read_text())
    return ClassRequest(body["object"], body["related"]["Secret.v1"], installation_id=INSTALLATION)


class FakeClient:
    """Just the calls the inventory makes, over a dict of API-shaped devices."""

    def __init__(self, devices: list[dict[str, Any]], fail: Exception | None = None) -> None:
        self.devices = {d["id"]: d for d in devices}
        self.fail = fail
        self.calls: list[str] = []

    def list_devices(self, project_id: str, *, tag: str | None = None) -> list[dict[str, Any]]:
        self.calls.append(f"list {project_id} {tag}")
        if self.fail:
            raise self.fail
        return [d for d in self.devices.values() if tag is None or tag in d["tags"]]

    def get_device(self, device_id: str) -> dict[str, Any]:
        self.calls.append(f"get {device_id}")
        if self.fail:
            raise self.fail
        return self.devices[device_id]

    def update_tags(self, device_id: str, new_tags: list[str]) -> dict[str, Any]:
        self.calls.append(f"tags {device_id}")
        self.devices[device_id]["tags"] = list(new_tags)
        return self.devices[device_id]

    def delete_device(self, device_id: str) -> None:
        self.calls.append(f"delete {device_id}")
        self.devices.pop(device_id)


def api_device(id_: str, uid: str, *extra: str, state: str = "active") -> dict[str, Any]:
    return {"id": id_, "hostname": f"h-{id_}", "state": state, "created_at": "2026-11-25T09:00:00Z",
            "metro": {"code": "da"}, "tags": [*tags.ownership_tags(uid), CLUSTER, *TENANT, *extra]}


def test_class_tags_fit_the_api_and_stay_distinct() -> None:
    assert tags.class_tag("metal-small") == "metal-machine-hooks:class:metal-small"
    long_a, long_b = "pool-" + "a" * 120, "pool-" + "a" * 119 + "b"
    assert len(tags.class_tag(long_a)) <= tags.MAX_TAG_LENGTH
    assert tags.class_tag(long_a) != tags.class_tag(long_b)


def test_listing_gives_provider_neutral_devices_with_owner_and_class() -> None:
    client = FakeClient([
        api_device("a", "u1"),
        api_device("b", "u2", tags.class_tag("metal-small")),
        api_device("c", "u3", tags.class_tag("metal-large"), state="deprovisioning"),
        {"id": "d", "state": "active", "tags": [CLUSTER]},  # not ours
        {"id": "e", "state": "active", "tags": [*tags.ownership_tags("u5")]},  # another cluster's (no tag)
    ])
    devices = inventory.EquinixInventory(lambda token: client).list_machines(class_request())
    assert devices == [
        Device(id="a", provider_id="equinixmetal://da/a", state=DeviceState.ACTIVE, provider_state="active",
               hostname="h-a", addresses=(Address("h-a", "Hostname"),),
               created_at=datetime(2026, 11, 25, 9, 0, tzinfo=UTC), owner_uid="u1"),
        Device(id="b", provider_id="equinixmetal://da/b", state=DeviceState.ACTIVE, provider_state="active",
               hostname="h-b", addresses=(Address("h-b", "Hostname"),),
               created_at=datetime(2026, 11, 25, 9, 0, tzinfo=UTC), owner_uid="u2",
               owner_class="metal-small"),
        Device(id="c", provider_id="equinixmetal://da/c", state=DeviceState.GONE, provider_state="deprovisioning",
               hostname="h-c", addresses=(Address("h-c", "Hostname"),),
               created_at=datetime(2026, 11, 25, 9, 0, tzinfo=UTC), owner_uid="u3",
               owner_class="metal-large"),
    ]
    assert client.calls == [f"list 2f3c1a52-5d7e-4b8a-9c1d-2e3f4a5b6c7d {tags.MANAGED_TAG}"]


@pytest.mark.parametrize("method", ["list_machines", "delete_orphan", "claim_machine"])
def test_api_failures_become_driver_errors_with_mcm_codes(method: str) -> None:
    client = FakeClient([api_device("a", "u1")], fail=RateLimited("slow down", status=429))
    driver = inventory.EquinixInventory(lambda token: client)
    device = Device(id="a", provider_id="", state=DeviceState.ACTIVE, owner_uid="u1")
    args = (class_request(),) if method == "list_machines" else (class_request(), device)
    with pytest.raises(DriverError) as caught:
        getattr(driver, method)(*args)
    assert caught.value.code == "ResourceExhausted" and "slow down" in caught.value.message
    assert "test-token" not in caught.value.message


def test_a_class_that_cannot_be_scanned_says_why_without_calling_the_api() -> None:
    request = class_request()
    spec = dict(request.machine_class)
    spec["providerSpec"] = {**spec["providerSpec"], "projectID": ""}

    def no_api(token: str) -> Any:
        raise AssertionError("no API client may be built")

    with pytest.raises(DriverError, match="projectID is missing") as caught:
        inventory.EquinixInventory(no_api).list_machines(ClassRequest(spec, request.secrets))
    assert caught.value.code == "InvalidArgument"


def test_claims_re_mark_only_a_device_that_still_has_the_same_owner() -> None:
    client = FakeClient([api_device("a", "u1", tags.class_tag("metal-large"), "team: x"),
                         api_device("b", "u-new")])
    driver = inventory.EquinixInventory(lambda token: client)
    listed_a = Device(id="a", provider_id="", state=DeviceState.ACTIVE, owner_uid="u1", owner_class="metal-large")
    assert driver.claim_machine(class_request(), listed_a) is True
    assert client.devices["a"]["tags"] == [*tags.ownership_tags("u1"), CLUSTER, *TENANT, "team: x",
                                           tags.class_tag("metal-small")]
    calls = len(client.calls)
    assert driver.claim_machine(class_request(), listed_a) is True  # already marked: no write
    assert client.calls[calls:] == ["get a"]
    stale_b = Device(id="b", provider_id="", state=DeviceState.ACTIVE, owner_uid="u-old")
    assert driver.claim_machine(class_request(), stale_b) is False
    assert tags.class_tag("metal-small") not in client.devices["b"]["tags"]


def test_an_orphan_is_deleted_only_while_its_marks_are_what_was_listed() -> None:
    client = FakeClient([api_device("a", "u1"), api_device("b", "u2", state="deprovisioning")])
    driver = inventory.EquinixInventory(lambda token: client)
    listed = Device(id="a", provider_id="", state=DeviceState.ACTIVE, owner_uid="u1")
    client.devices["a"]["tags"] = [*tags.ownership_tags("u9"), CLUSTER, *TENANT]  # another Machine's now
    assert driver.delete_orphan(class_request(), listed) is False and "a" in client.devices
    client.devices["a"]["tags"] = [*tags.ownership_tags("u1"), CLUSTER]  # no tenant tags: not this tenant's
    assert driver.delete_orphan(class_request(), listed) is False and "a" in client.devices
    client.devices["a"]["tags"] = [*tags.ownership_tags("u1"), CLUSTER, *TENANT]
    assert driver.delete_orphan(class_request(), listed) is True and "a" not in client.devices
    going = Device(id="b", provider_id="", state=DeviceState.ACTIVE, owner_uid="u2")
    assert driver.delete_orphan(class_request(), going) is False  # already being deleted: no second DELETE
    assert "delete b" not in client.calls


def test_a_server_error_while_deleting_keeps_the_candidate_and_reports_it() -> None:
    from hooks.config import Settings
    from hooks.context import HookContext
    from hooks.mcm import machineclass

    client = FakeClient([api_device("a", "u-gone")])
    body = json.loads(FIXTURE.read_text())
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    body["object"]["metadata"]["annotations"] = {machineclass.CANDIDATES_ANNOTATION: "a=2026-11-25T11:00:00Z"}

    def delete_fails(device_id: str) -> None:
        raise ServerError("bad gateway", status=502)

    client.delete_device = delete_fails  # type: ignore[method-assign]
    ctx = HookContext(settings=Settings(), metal=lambda token: client, clock=lambda: now,
                      driver=EquinixDriver(Settings(), lambda token: client))
    annotations = machineclass.sync(body, ctx)["annotations"]
    assert "deleting orphaned device a failed" in annotations[machineclass.SCAN_PROBLEM_ANNOTATION]
    assert annotations[machineclass.CANDIDATES_ANNOTATION] == "a=2026-11-25T11:00:00Z"
    assert machineclass.ORPHANS_ANNOTATION not in annotations
