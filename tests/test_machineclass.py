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

from hooks.config import Settings
from hooks.context import BadRequest, HookContext, Runtime
from hooks.driver import DEVICE_ID_ANNOTATION, Device, DeviceState
from hooks.equinix import tags, tenancy
from hooks.equinix.client import MetalClient
from hooks.equinix.devices import recorded_device_id
from hooks.equinix.driver import EquinixDriver
from hooks.mcm import machineclass
from tests.clocks import ManualClock
from tests.conftest import MetalSim

FIXTURES = Path(__file__).parent / "fixtures" / "machineclass"
DECORATOR_KEYS = {"labels", "annotations", "status", "resyncAfterSeconds", "finalized"}
CLUSTER = "kubernetes.io/cluster/shoot--demo--cluster"
POOL_B_UID = "a0000000-0000-4000-8000-000000000003"
INSTALLATION = "7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d"  # the fixture's kube-system Namespace UID
TENANT = tenancy.tenant_tags(INSTALLATION, "shoot--demo--cluster")


def request() -> dict[str, Any]:
    return json.loads((FIXTURES / "sync-request.json").read_text())


def offline_ctx(now: datetime = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)) -> HookContext:
    def no_api(token: str) -> Any:
        raise AssertionError("this test must not reach the API")

    return HookContext(settings=Settings(), metal=no_api, clock=lambda: now)


def without_scan(body: dict[str, Any]) -> dict[str, Any]:
    body["object"]["provider"] = "SomethingElse"  # no scan: keeps these tests offline
    return body


KUBE_SYSTEM_RULE = {"apiVersion": "v1", "resource": "namespaces", "names": ["kube-system"]}
SECRETS_RULE = {"apiVersion": "v1", "resource": "secrets", "namespace": "shoot--demo--cluster",
                "labelSelector": {"matchLabels": {"metal-machine-hooks/credentials": "true"}}}
MACHINES_RULE = {"apiVersion": "machine.sapcloud.io/v1alpha1", "resource": "machines",
                 "namespace": "shoot--demo--cluster"}


def test_customize_asks_for_the_class_s_own_and_not_yet_labelled_machines_and_the_labelled_secrets() -> None:
    body = {"controller": request()["controller"], "parent": request()["object"]}
    assert machineclass.customize(body, offline_ctx()) == {"relatedResources": [
        {**MACHINES_RULE, "labelSelector": {"matchLabels": {"metal-machine-hooks/class": "metal-small"}}},
        {**MACHINES_RULE, "labelSelector": {"matchExpressions": [
            {"key": "metal-machine-hooks/class", "operator": "DoesNotExist"}]}},
        SECRETS_RULE, KUBE_SYSTEM_RULE,
    ]}


def test_customize_of_a_class_being_deleted_asks_for_every_machine_of_the_namespace() -> None:
    """Deletion bumps metadata.generation, so Metacontroller asks again: a stale label cannot hide a user."""
    parent = request()["object"]
    parent["metadata"]["deletionTimestamp"] = "2026-11-25T10:00:00Z"
    parent["metadata"]["generation"] = 2
    assert machineclass.customize({"parent": parent}, offline_ctx()) == {"relatedResources": [
        MACHINES_RULE, SECRETS_RULE, KUBE_SYSTEM_RULE]}


@pytest.mark.parametrize(("name", "value"), [
    ("metal-small", "metal-small"),
    ("a" * 63, "a" * 63),
    ("pool." + "x" * 70, None),  # too long for a label value: prefix and hash, still a valid label value
])
def test_class_label_values_are_valid_label_values(name: str, value: str | None) -> None:
    got = machineclass.class_label_value(name)
    assert len(got) <= 63 and re.fullmatch(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?", got)
    if value is not None:
        assert got == value
    else:
        assert got.startswith("pool.xxx") and got != machineclass.class_label_value(name + "y")


def test_a_machine_is_labelled_with_its_class_and_one_naming_no_class_with_an_empty_value() -> None:
    machine = request()["related"][machineclass.MACHINE_KEY]["shoot--demo--cluster/pool-b-1"]
    assert machineclass.machine_class_label(machine) == "metal-large"
    machine["spec"]["class"] = {"kind": "AWSMachineClass", "name": "metal-large"}
    assert machineclass.machine_class_label(machine) == ""  # not ours: related by no class
    del machine["spec"]["class"]
    assert machineclass.machine_class_label(machine) == ""


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

OTHER_CLASS = "metal-large"
MOVED_UID = "a0000000-0000-4000-8000-000000000009"


def apply(body: dict[str, Any], response: dict[str, Any]) -> None:
    """Merge a decorator response's annotations into the class, as Metacontroller does (null deletes)."""
    annotations = body["object"]["metadata"].setdefault("annotations", {})
    for key, value in response["annotations"].items():
        if value is None:
            annotations.pop(key, None)
        else:
            annotations[key] = value


class World:
    """A simulator project, the class `metal-small` (request fixture) and `metal-large`, a movable wall clock."""

    def __init__(self, sim: MetalSim, devices: dict[str, dict[str, Any]], now: datetime) -> None:
        self.sim = sim
        self.devices = devices
        self.now = now
        self.body = request()
        machines = self.body["related"][machineclass.MACHINE_KEY]
        machines["shoot--demo--cluster/pool-a-1"]["metadata"]["annotations"][DEVICE_ID_ANNOTATION] = \
            devices["recorded"]["id"]
        # pool-b-1 uses metal-large and carries its label: Metacontroller no longer relates it to metal-small.
        self.pool_b = machines.pop("shoot--demo--cluster/pool-b-1")
        self.pool_b["metadata"]["labels"][machineclass.CLASS_LABEL] = OTHER_CLASS
        self.runtime = Runtime()
        self.large_runtime = Runtime()

    def ctx(self, runtime: Runtime | None = None) -> HookContext:
        def metal(token: str) -> MetalClient:
            return MetalClient(token, base_url=self.sim.url)

        return HookContext(settings=Settings(), metal=metal, clock=lambda: self.now,
                           runtime=self.runtime if runtime is None else runtime,
                           driver=EquinixDriver(Settings(), metal))

    def scan(self) -> dict[str, Any]:
        """One sync of metal-small at the current time; its annotations are applied like Metacontroller would."""
        response = machineclass.sync(self.body, self.ctx())
        apply(self.body, response)
        return response

    def large_body(self, *machines: dict[str, Any]) -> dict[str, Any]:
        body = request()
        body["object"]["metadata"].update(name=OTHER_CLASS, uid="c1a55000-0000-4000-8000-000000000002")
        body["related"][machineclass.MACHINE_KEY] = {f"{m['metadata']['namespace']}/{m['metadata']['name']}": m
                                                     for m in (self.pool_b, *machines)}
        return body

    def scan_large(self, *machines: dict[str, Any]) -> dict[str, Any]:
        return machineclass.sync(self.large_body(*machines), self.ctx(self.large_runtime))

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def retag(self, device_id: str, new_tags: list[str]) -> None:
        """Someone else changes a device's tags (through the API, as the hooks would)."""
        MetalClient(self.sim.token, base_url=self.sim.url).update_tags(device_id, new_tags)

    def tags_of(self, name: str) -> list[str]:
        return next(d["tags"] for d in self.sim.sim.devices() if d["id"] == self.devices[name]["id"])


@pytest.fixture
def world(metal_sim_factory: Callable[..., MetalSim]) -> World:
    """A project with: an old unmarked orphan of ours, a fresh orphan, a foreign device, another cluster's orphan,
    a device of metal-large's Machine (marked for it), one recorded on a Machine, and an unmarked device of a
    deleting metal-small Machine."""
    clock = ManualClock()
    sim = metal_sim_factory(clock=clock)
    project = sim.project

    def ours(uid: str, cluster: str = CLUSTER, hostname: str = "host", marks: tuple[str, ...] = ()) -> dict[str, Any]:
        return sim.sim.add_device(project, hostname=hostname, state="active",
                                  tags=[*tags.ownership_tags(uid), cluster, "kubernetes.io/role/node", *TENANT,
                                        *marks])

    devices = {
        "old_orphan": ours("dead0000-0000-4000-8000-000000000001", hostname="gone-machine"),
        "foreign": sim.sim.add_device(project, hostname="someone-elses", tags=[CLUSTER], state="active"),
        "other_cluster": ours("dead0000-0000-4000-8000-000000000002", cluster="kubernetes.io/cluster/other"),
        "other_class_machine": ours(POOL_B_UID, hostname="pool-b-1", marks=(tags.class_tag(OTHER_CLASS),)),
        "recorded": ours("dead0000-0000-4000-8000-000000000003"),
        "own_unmarked": ours("a0000000-0000-4000-8000-000000000002", hostname="pool-a-2"),
    }
    clock.advance(30 * 60)  # the devices above are now 30 minutes old
    devices["fresh_orphan"] = ours("dead0000-0000-4000-8000-000000000004")
    created = datetime.fromisoformat(devices["fresh_orphan"]["created_at"].replace("Z", "+00:00"))
    return World(sim, devices, created + timedelta(minutes=1))


def remaining(sim: MetalSim) -> set[str]:
    return {d["id"] for d in sim.sim.devices() if d.get("state") not in ("deprovisioning", "deleted")}


def test_an_orphan_seen_once_is_remembered_not_deleted(world: World) -> None:
    response = world.scan()
    assert world.devices["old_orphan"]["id"] in remaining(world.sim)
    annotations = response["annotations"]
    assert annotations[machineclass.CANDIDATES_ANNOTATION] == \
        f"{world.devices['old_orphan']['id']}={machineclass.format_time(world.now)}"
    assert machineclass.ORPHANS_ANNOTATION not in annotations
    assert annotations[machineclass.SCAN_PROBLEM_ANNOTATION] is None
    assert set(response) <= DECORATOR_KEYS


def test_an_orphan_seen_twice_minutes_apart_is_deleted_and_nothing_else(world: World) -> None:
    world.scan()
    world.advance(machineclass.ORPHAN_CONFIRM_SECONDS)
    response = world.scan()
    left = remaining(world.sim)
    assert world.devices["old_orphan"]["id"] not in left
    for keep in ("fresh_orphan", "foreign", "other_cluster", "other_class_machine", "recorded", "own_unmarked"):
        assert world.devices[keep]["id"] in left, keep
    annotations = response["annotations"]
    assert annotations[machineclass.ORPHANS_ANNOTATION] == "1"
    assert annotations[machineclass.ORPHANS_AT_ANNOTATION] == machineclass.format_time(world.now)
    assert annotations[machineclass.CANDIDATES_ANNOTATION] is None  # nothing left to confirm


def test_two_sightings_closer_than_the_confirmation_time_do_not_delete(world: World) -> None:
    first = world.scan()
    world.advance(machineclass.SCAN_INTERVAL)  # a scan is due, but the orphan was first seen only 4 minutes ago
    second = world.scan()
    assert world.devices["old_orphan"]["id"] in remaining(world.sim)
    assert second["annotations"][machineclass.CANDIDATES_ANNOTATION] == \
        first["annotations"][machineclass.CANDIDATES_ANNOTATION]  # the first sighting's time is kept


def test_a_device_whose_machine_moved_to_another_class_in_between_is_not_deleted(world: World) -> None:
    moved = world.sim.sim.add_device(world.sim.project, hostname="pool-a-9", state="active", tags=[
        *tags.ownership_tags(MOVED_UID), CLUSTER, *TENANT, tags.class_tag("metal-small")])
    world.devices["moved"] = moved
    world.advance(30 * 60)  # old enough to be collected if it were an orphan
    machine = copy.deepcopy(world.pool_b)
    machine["metadata"].update(name="pool-a-9", uid=MOVED_UID, annotations={})
    machine["spec"]["class"]["name"] = OTHER_CLASS  # moved: the Machine hook relabelled it, metal-small lost it
    first = world.scan()
    assert moved["id"] in first["annotations"][machineclass.CANDIDATES_ANNOTATION]
    world.scan_large(machine)  # the class it uses now claims the device
    assert tags.class_tag(OTHER_CLASS) in world.tags_of("moved")
    assert tags.class_tag("metal-small") not in world.tags_of("moved")
    world.advance(machineclass.ORPHAN_CONFIRM_SECONDS)
    second = world.scan()
    assert moved["id"] in remaining(world.sim)
    assert moved["id"] not in (second["annotations"][machineclass.CANDIDATES_ANNOTATION] or "")


def test_a_machine_of_another_class_never_has_its_device_collected(world: World) -> None:
    for _ in range(3):
        world.scan()
        world.advance(machineclass.ORPHAN_CONFIRM_SECONDS)
    assert world.devices["other_class_machine"]["id"] in remaining(world.sim)
    assert world.devices["other_class_machine"]["id"] not in (
        world.body["object"]["metadata"]["annotations"].get(machineclass.CANDIDATES_ANNOTATION) or "")


def test_an_unmarked_device_of_another_class_s_machine_is_claimed_by_that_class_before_a_second_sighting(
        world: World) -> None:
    """A device from before class marks: both classes see it; its own class marks it within a scan period."""
    world.retag(world.devices["other_class_machine"]["id"], [
        t for t in world.tags_of("other_class_machine") if not t.startswith(tags.CLASS_TAG_PREFIX)])
    first = world.scan()
    assert world.devices["other_class_machine"]["id"] in first["annotations"][machineclass.CANDIDATES_ANNOTATION]
    world.scan_large()
    world.advance(machineclass.ORPHAN_CONFIRM_SECONDS)
    world.scan()
    assert world.devices["other_class_machine"]["id"] in remaining(world.sim)
    assert world.tags_of("other_class_machine")[-1] == tags.class_tag(OTHER_CLASS)


def test_a_class_claims_the_unmarked_devices_of_its_own_machines(world: World) -> None:
    world.scan()
    assert world.tags_of("own_unmarked")[-1] == tags.class_tag("metal-small")
    assert not any(t.startswith(tags.CLASS_TAG_PREFIX) for t in world.tags_of("recorded"))  # not its Machine's


def test_a_device_re_marked_between_listing_and_deletion_is_left_alone(world: World) -> None:
    driver = world.ctx().driver
    assert driver is not None
    class_request = machineclass.ClassRequest(world.body["object"], world.body["related"]["Secret.v1"],
                                              installation_id=INSTALLATION)
    listed = {d.id: d for d in driver.list_machines(class_request)}
    orphan = listed[world.devices["old_orphan"]["id"]]
    assert orphan.owner_uid == "dead0000-0000-4000-8000-000000000001" and orphan.owner_class is None
    assert listed[world.devices["other_class_machine"]["id"]].owner_class == OTHER_CLASS
    assert listed[world.devices["own_unmarked"]["id"]].owner_class is None
    assert world.devices["foreign"]["id"] not in listed and world.devices["other_cluster"]["id"] not in listed
    world.retag(orphan.id, [*world.tags_of("old_orphan"), tags.class_tag(OTHER_CLASS)])
    assert driver.delete_orphan(class_request, orphan) is False
    assert orphan.id in remaining(world.sim)
    world.retag(orphan.id, world.tags_of("old_orphan")[:-1])
    assert driver.delete_orphan(class_request, orphan) is True
    assert driver.delete_orphan(class_request, orphan) is False  # already gone


def test_a_scan_that_finds_nothing_new_changes_nothing_and_scans_are_rate_limited(world: World) -> None:
    first = world.scan()
    lists_before = world.sim.sim.calls["GET /projects/{id}/devices"]
    again = world.scan()  # within SCAN_INTERVAL: no listing, the last scan's annotations repeated
    assert world.sim.sim.calls["GET /projects/{id}/devices"] == lists_before
    assert again["annotations"] == first["annotations"]
    world.advance(machineclass.SCAN_INTERVAL)
    later = world.scan()
    assert world.sim.sim.calls["GET /projects/{id}/devices"] == lists_before + 1
    assert later == again  # a quiet class gets the same answer whether or not a scan ran


def test_finalize_holds_a_class_until_its_orphan_candidates_are_collected(world: World) -> None:
    machines = world.body["related"][machineclass.MACHINE_KEY]
    machines.clear()  # no Machine uses the class any more
    world.body["finalizing"] = True
    held = machineclass.finalize(world.body, world.ctx())
    apply(world.body, held)
    assert held["finalized"] is False and held["resyncAfterSeconds"] == machineclass.FINALIZE_RESYNC
    world.advance(machineclass.ORPHAN_CONFIRM_SECONDS)
    released = machineclass.finalize(world.body, world.ctx())
    assert released["finalized"] is True
    assert world.devices["old_orphan"]["id"] not in remaining(world.sim)
    assert world.devices["own_unmarked"]["id"] not in remaining(world.sim)  # its Machine is gone too


def test_scan_problems_are_shown_not_raised(world: World) -> None:
    world.body["related"]["Secret.v1"] = {}
    response = world.scan()
    assert "not scanned" in response["annotations"][machineclass.SCAN_PROBLEM_ANNOTATION]
    assert world.devices["old_orphan"]["id"] in remaining(world.sim)
    assert "test-token" not in json.dumps(response)


def test_a_class_without_a_cluster_tag_is_never_scanned() -> None:
    body = request()
    body["object"]["providerSpec"]["tags"] = ["kubernetes.io/role/node"]
    ctx = offline_ctx()
    ctx = HookContext(settings=ctx.settings, metal=ctx.metal, clock=ctx.clock,
                      driver=EquinixDriver(Settings(), ctx.metal))
    response = machineclass.sync(body, ctx)
    assert "cannot be told apart" in response["annotations"][machineclass.SCAN_PROBLEM_ANNOTATION]


def test_without_a_driver_the_class_says_it_cannot_scan() -> None:
    response = machineclass.sync(request(), offline_ctx())
    assert response["annotations"][machineclass.SCAN_PROBLEM_ANNOTATION] == \
        "not scanned: no provider driver is configured"


def _device(id_: str, uid: str, created: str = "2026-11-25T11:00:00Z", state: DeviceState = DeviceState.ACTIVE,
            owner_class: str | None = None) -> Device:
    return Device(id=id_, provider_id=f"p://x/{id_}", state=state, owner_uid=uid, owner_class=owner_class,
                  created_at=datetime.fromisoformat(created.replace("Z", "+00:00")))


def test_plan_scan_is_a_pure_decision() -> None:
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    body = request()
    machines = list(body["related"][machineclass.MACHINE_KEY].values())
    machines[0]["metadata"]["annotations"][DEVICE_ID_ANNOTATION] = "h"
    devices = [
        _device("a", "u-gone"),
        _device("b", "u-gone", created="2026-11-25T11:50:00Z"),  # younger than 20 minutes
        _device("d", "a0000000-0000-4000-8000-000000000003"),  # pool-b-1's (related here): known
        _device("e", "u-gone", state=DeviceState.GONE),
        _device("g", "u-gone", owner_class="metal-large"),  # another class's
        _device("h", "u-gone"),  # recorded on a Machine
        _device("i", "u-gone", owner_class="metal-small"),
        _device("j", "a0000000-0000-4000-8000-000000000002", owner_class="metal-large"),  # pool-a-2's: claim
    ]
    seen = {"a": now - timedelta(minutes=11), "i": now - timedelta(minutes=2), "g": now - timedelta(hours=1)}
    plan = machineclass.plan_scan(body["object"], devices, machines, seen, now, 20 * 60, recorded_device_id)
    assert [d.id for d in plan.confirmed] == ["a"]
    assert plan.candidates == {"i": seen["i"]}
    assert [d.id for d in plan.claims] == ["j"]


def test_a_sighting_before_the_device_existed_or_in_the_future_does_not_count() -> None:
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    devices = [_device("early", "u1"), _device("future", "u2")]  # created 11:00
    seen = {"early": now - timedelta(hours=5), "future": now + timedelta(hours=1)}
    plan = machineclass.plan_scan(request()["object"], devices, [], seen, now, 60, recorded_device_id)
    assert plan.confirmed == [] and plan.candidates == {"early": now, "future": now}


def test_orphan_candidates_are_bounded_and_oldest_first() -> None:
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    devices = [_device(f"d{i:03}", f"u{i}") for i in range(machineclass.MAX_CANDIDATES + 50)]
    seen = {"d149": now - timedelta(minutes=1)}
    plan = machineclass.plan_scan(request()["object"], devices, [], seen, now, 60, recorded_device_id)
    assert len(plan.candidates) == machineclass.MAX_CANDIDATES and plan.candidates["d149"] == seen["d149"]
    text = machineclass.format_candidates(plan.candidates)
    assert text is not None and machineclass.parse_candidates(text) == plan.candidates
    assert len(text) < 8 * 1024


def test_parse_candidates_drops_what_it_cannot_read() -> None:
    assert machineclass.parse_candidates("a=2026-11-25T10:00:00Z,b=yesterday,=2026-11-25T10:00:00Z,junk") == {
        "a": datetime(2026, 11, 25, 10, 0, tzinfo=UTC)}
    assert machineclass.parse_candidates(None) == {}


def test_the_class_hook_names_no_provider_module() -> None:
    """machineclass.py decides from hooks.driver values only; hooks.equinix stays behind the seam."""
    import ast

    tree = ast.parse(Path(machineclass.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m.startswith("hooks.equinix")}


def test_same_request_twice_gives_the_same_response() -> None:
    ctx = offline_ctx()
    first = machineclass.sync(without_scan(request()), ctx)
    assert machineclass.sync(without_scan(request()), ctx) == first
    # A fresh process (no scan memory) answers the same for a class it cannot scan.
    assert machineclass.sync(without_scan(request()), offline_ctx()) == first
