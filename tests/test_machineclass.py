"""MachineClass hooks: in-use protection and orphan collection (against the Equinix Metal simulator).

The fixture class `metal-small` is used by pool-a-1 and pool-a-2 (being deleted); pool-b-1 uses another class.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hooks import machineclass, tags
from hooks.config import Settings
from hooks.context import BadRequest, HookContext
from hooks.metal import MetalClient
from tests.clocks import ManualClock
from tests.conftest import MetalSim

FIXTURES = Path(__file__).parent / "fixtures" / "machineclass"
DECORATOR_KEYS = {"labels", "annotations", "status", "resyncAfterSeconds", "finalized"}
CLUSTER = "kubernetes.io/cluster/shoot--demo--cluster"
POOL_B_UID = "a0000000-0000-4000-8000-000000000003"


def request() -> dict[str, Any]:
    return json.loads((FIXTURES / "sync-request.json").read_text())


def offline_ctx(now: datetime = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)) -> HookContext:
    def no_api(token: str) -> Any:
        raise AssertionError("this test must not reach the API")

    return HookContext(settings=Settings(), metal=no_api, clock=lambda: now)


def without_scan(body: dict[str, Any]) -> dict[str, Any]:
    body["object"]["provider"] = "SomethingElse"  # no scan: keeps these tests offline
    return body


def test_customize_asks_for_every_machine_and_the_labelled_secrets_of_the_namespace() -> None:
    body = {"controller": request()["controller"], "parent": request()["object"]}
    assert machineclass.customize(body, offline_ctx()) == {"relatedResources": [
        {"apiVersion": "machine.sapcloud.io/v1alpha1", "resource": "machines", "namespace": "shoot--demo--cluster"},
        {"apiVersion": "v1", "resource": "secrets", "namespace": "shoot--demo--cluster",
         "labelSelector": {"matchLabels": {"metal-machine-hooks/credentials": "true"}}},
    ]}


def test_sync_shows_which_machines_use_the_class() -> None:
    response = machineclass.sync(without_scan(request()), offline_ctx())
    assert set(response) <= DECORATOR_KEYS and response["status"] is None
    assert response["annotations"][machineclass.IN_USE_ANNOTATION] == "2 machines: pool-a-1, pool-a-2"


def test_finalize_holds_the_class_while_machines_use_it() -> None:
    body = without_scan(request())
    body["finalizing"] = True
    response = machineclass.finalize(body, offline_ctx())
    assert response["finalized"] is False
    assert response["annotations"][machineclass.IN_USE_ANNOTATION] == "2 machines: pool-a-1, pool-a-2"
    assert set(response) <= DECORATOR_KEYS


def test_finalize_releases_the_class_when_no_machine_uses_it() -> None:
    body = without_scan(request())
    machines = body["related"][machineclass.MACHINE_KEY]
    for key in [k for k, m in machines.items() if m["spec"]["class"]["name"] == "metal-small"]:
        del machines[key]
    response = machineclass.finalize(body, offline_ctx())
    assert response["finalized"] is True
    assert response["annotations"][machineclass.IN_USE_ANNOTATION] is None  # removes the annotation


def test_in_use_text_shortens_long_lists() -> None:
    text = machineclass.in_use_text([f"m{i}" for i in range(8)])
    assert text == "8 machines: m0, m1, m2, m3, m4 and 3 more"
    assert machineclass.in_use_text(["only"]) == "1 machine: only"


@pytest.mark.parametrize("hook", [machineclass.sync, machineclass.finalize])
def test_composite_keys_are_refused_not_guessed(hook: Any) -> None:
    """Metacontroller sends the class under `object` (v1 and v2); a `parent`/`children` body is a 400."""
    body = without_scan(request())
    body["finalizing"] = hook is machineclass.finalize
    assert hook(body, offline_ctx())["annotations"][machineclass.IN_USE_ANNOTATION] == "2 machines: pool-a-1, pool-a-2"
    composite = {{"object": "parent", "attachments": "children"}.get(k, k): v for k, v in copy.deepcopy(body).items()}
    with pytest.raises(BadRequest, match="request has no `object`"):
        hook(composite, offline_ctx())


@pytest.mark.parametrize(("body", "message"), [
    ({}, "request has no `object`"),
    ({"parent": {"metadata": {"name": "x", "namespace": "y"}}}, "request has no `object`"),
    ({"object": {"metadata": {"name": "x"}}}, "object.metadata"),
    ({"object": {"metadata": {"name": "x", "namespace": "y"}}, "related": []}, "related"),
])
def test_malformed_requests_are_bad_requests(body: dict[str, Any], message: str) -> None:
    for hook in (machineclass.sync, machineclass.finalize):
        with pytest.raises(BadRequest, match=re.escape(message)):
            hook(body, offline_ctx())


# ------------------------------------------------------------------------------------------- orphan collection


@pytest.fixture
def world(metal_sim_factory: Callable[..., MetalSim]) -> dict[str, Any]:
    """A project with: an old orphan of ours, a fresh orphan, a foreign device, another cluster's orphan, and
    devices that belong to existing Machines (by UID tag, and by recorded device id)."""
    clock = ManualClock()
    sim = metal_sim_factory(clock=clock)
    project = sim.project

    def ours(uid: str, cluster: str = CLUSTER, hostname: str = "host") -> dict[str, Any]:
        return sim.sim.add_device(project, hostname=hostname, tags=[*tags.ownership_tags(uid), cluster,
                                                                     "kubernetes.io/role/node"], state="active")

    devices = {
        "old_orphan": ours("dead0000-0000-4000-8000-000000000001", hostname="gone-machine"),
        "foreign": sim.sim.add_device(project, hostname="someone-elses", tags=[CLUSTER], state="active"),
        "other_cluster": ours("dead0000-0000-4000-8000-000000000002", cluster="kubernetes.io/cluster/other"),
        "other_class_machine": ours(POOL_B_UID),  # its Machine uses another class: still not an orphan
        "recorded": ours("dead0000-0000-4000-8000-000000000003"),
    }
    clock.advance(30 * 60)  # the devices above are now 30 minutes old
    devices["fresh_orphan"] = ours("dead0000-0000-4000-8000-000000000004")
    created = datetime.fromisoformat(devices["fresh_orphan"]["created_at"].replace("Z", "+00:00"))
    body = request()
    body["related"][machineclass.MACHINE_KEY]["shoot--demo--cluster/pool-a-1"]["metadata"]["annotations"][
        machineclass.DEVICE_ID_ANNOTATION] = devices["recorded"]["id"]
    ctx = HookContext(settings=Settings(), metal=lambda token: MetalClient(token, base_url=sim.url),
                      clock=lambda: created + timedelta(minutes=1))
    return {"sim": sim, "devices": devices, "body": body, "ctx": ctx}


def remaining(sim: MetalSim) -> set[str]:
    return {d["id"] for d in sim.sim.devices() if d.get("state") not in ("deprovisioning", "deleted")}


def test_orphan_collection_deletes_only_an_old_orphan_of_this_cluster(world: dict[str, Any]) -> None:
    devices = world["devices"]
    response = machineclass.sync(world["body"], world["ctx"])
    left = remaining(world["sim"])
    assert devices["old_orphan"]["id"] not in left
    for keep in ("fresh_orphan", "foreign", "other_cluster", "other_class_machine", "recorded"):
        assert devices[keep]["id"] in left, keep
    annotations = response["annotations"]
    assert annotations[machineclass.ORPHANS_ANNOTATION] == "1"
    assert annotations[machineclass.ORPHANS_AT_ANNOTATION] == machineclass.format_time(world["ctx"].clock())
    assert annotations[machineclass.SCAN_PROBLEM_ANNOTATION] is None
    assert set(response) <= DECORATOR_KEYS


def test_a_scan_that_finds_nothing_changes_nothing_and_scans_are_rate_limited(world: dict[str, Any]) -> None:
    machineclass.sync(world["body"], world["ctx"])  # collects the old orphan
    lists_before = world["sim"].sim.calls["GET /projects/{id}/devices"]
    again = machineclass.sync(world["body"], world["ctx"])  # within SCAN_INTERVAL: no listing
    assert world["sim"].sim.calls["GET /projects/{id}/devices"] == lists_before
    assert machineclass.ORPHANS_ANNOTATION not in again["annotations"]
    later_ctx = HookContext(settings=Settings(), metal=world["ctx"].metal,
                            clock=lambda: world["ctx"].clock() + timedelta(seconds=machineclass.SCAN_INTERVAL),
                            extras=world["ctx"].extras)
    later = machineclass.sync(world["body"], later_ctx)
    assert world["sim"].sim.calls["GET /projects/{id}/devices"] == lists_before + 1
    assert set(later["annotations"]) == {machineclass.IN_USE_ANNOTATION, machineclass.SCAN_PROBLEM_ANNOTATION}
    assert later == again  # a quiet class gets the same answer whether or not a scan ran


def test_scan_problems_are_shown_not_raised(world: dict[str, Any]) -> None:
    body = world["body"]
    body["related"]["Secret.v1"] = {}
    response = machineclass.sync(body, world["ctx"])
    assert "not scanned" in response["annotations"][machineclass.SCAN_PROBLEM_ANNOTATION]
    assert world["devices"]["old_orphan"]["id"] in remaining(world["sim"])
    assert "test-token" not in json.dumps(response)


def test_a_class_without_a_cluster_tag_is_never_scanned() -> None:
    body = request()
    body["object"]["providerSpec"]["tags"] = ["kubernetes.io/role/node"]
    response = machineclass.sync(body, offline_ctx())
    assert "cannot be told apart" in response["annotations"][machineclass.SCAN_PROBLEM_ANNOTATION]


def test_orphans_is_a_pure_filter() -> None:
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    old = "2026-11-25T11:00:00Z"

    def device(id_: str, device_tags: list[str], created: str = old, state: str = "active") -> dict[str, Any]:
        return {"id": id_, "tags": device_tags, "created_at": created, "state": state}

    mine = [*tags.ownership_tags("u-gone"), CLUSTER]
    devices = [
        device("a", mine),
        device("b", mine, created="2026-11-25T11:50:00Z"),  # younger than 20 minutes
        device("c", [tags.MANAGED_TAG, CLUSTER]),  # no uid tag: not provably ours
        device("d", [*tags.ownership_tags("u-live"), CLUSTER]),
        device("e", mine, state="deprovisioning"),
        device("f", mine, created="not a time"),
        device("g", [*tags.ownership_tags("u-gone"), "kubernetes.io/cluster/other"]),
        device("h", mine),  # recorded on a Machine
    ]
    found = machineclass.orphans(devices, CLUSTER, {"u-live"}, {"h"}, now, 20 * 60)
    assert [d["id"] for d in found] == ["a"]


def test_same_request_twice_gives_the_same_response() -> None:
    ctx = offline_ctx()
    first = machineclass.sync(without_scan(request()), ctx)
    assert machineclass.sync(without_scan(request()), ctx) == first
    # A fresh process (no scan memory) answers the same for a class it cannot scan.
    assert machineclass.sync(without_scan(request()), offline_ctx()) == first
