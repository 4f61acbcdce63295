"""MachineSet sync hook: fixture-driven requests in Metacontroller's v2 composite shape."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hooks.config import Settings
from hooks.context import BadRequest, HookContext
from hooks.mcm import machineset
from tests.crd_schema import status_problems

FIXTURES = Path(__file__).parent / "fixtures" / "machineset"
KEY = machineset.MACHINE_KEY
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
COMPOSITE_KEYS = {"status", "children", "resyncAfterSeconds", "finalized"}


def ctx(now: datetime = NOW) -> HookContext:
    return HookContext(settings=Settings(), metal=lambda token: None, clock=lambda: now)


def request() -> dict[str, Any]:
    return json.loads((FIXTURES / "sync-request.json").read_text())


def names(response: dict[str, Any]) -> list[str]:
    return [c["metadata"]["name"] for c in response["children"]]


def child_map(body: dict[str, Any]) -> dict[str, Any]:
    return body["children"][KEY]


def assert_valid_status(status: dict[str, Any]) -> None:
    assert status_problems(status, "MachineSet") == []


# ------------------------------------------------------------------------------------------------ a small world


class SetWorld:
    """One MachineSet whose desired Machines are applied the way Metacontroller applies them."""

    def __init__(self, replicas: int) -> None:
        body = request()
        body["children"] = {KEY: {}}
        body["parent"]["spec"]["replicas"] = replicas
        body["parent"]["status"] = {}
        self.body = body
        self.now = NOW
        self.serial = 0
        self.statuses: dict[str, dict[str, Any]] = {}

    def sync(self) -> dict[str, Any]:
        response = machineset.sync(copy.deepcopy(self.body), ctx(self.now))
        assert set(response) <= COMPOSITE_KEYS
        self.statuses[json.dumps(response["status"], sort_keys=True)] = response["status"]
        desired = {c["metadata"]["name"]: c for c in response["children"]}
        observed = child_map(self.body)
        for key in list(observed):
            if key.split("/", 1)[1] not in desired:
                del observed[key]
        for name, child in desired.items():
            key = f"{child['metadata']['namespace']}/{name}"
            if key not in observed:
                self.serial += 1
                obj = copy.deepcopy(child)
                obj["metadata"]["uid"] = f"uid-{name}"
                obj["metadata"]["creationTimestamp"] = (self.now + timedelta(seconds=self.serial)).strftime(
                    "%Y-%m-%dT%H:%M:%SZ")
                obj["status"] = {}
                observed[key] = obj
        self.body["parent"]["status"] = response["status"]
        return response

    def progress(self) -> None:
        self.now += timedelta(minutes=1)
        for machine in child_map(self.body).values():
            phase = machine["status"].get("currentStatus", {}).get("phase", "")
            following = {"": "Pending", "Pending": "Running"}.get(phase)
            if following:
                machine["status"]["currentStatus"] = {"phase": following,
                                                      "lastUpdateTime": self.now.strftime("%Y-%m-%dT%H:%M:%SZ")}

    def settle(self) -> list[str]:
        for _ in range(20):
            before = sorted(child_map(self.body))
            self.sync()
            self.progress()
            if sorted(child_map(self.body)) == before and all(
                m["status"].get("currentStatus", {}).get("phase") == "Running" for m in child_map(self.body).values()
            ):
                break
        return sorted(m["metadata"]["name"] for m in child_map(self.body).values())

    def scale(self, replicas: int) -> None:
        self.body["parent"]["spec"]["replicas"] = replicas


def test_scale_0_to_5_to_2_gives_the_expected_children_with_stable_names() -> None:
    world = SetWorld(0)
    assert world.settle() == []
    world.scale(5)
    five = world.settle()
    assert len(five) == 5
    assert all(n.startswith("pool-a-x5xfgfj5-") and len(n) == len("pool-a-x5xfgfj5-") + 5 for n in five)
    # Names are a function of (set uid, slot): a second world builds the very same names.
    again = SetWorld(0)
    again.scale(5)
    assert again.settle() == five
    # Repeated syncs of the settled set never churn.
    for _ in range(3):
        assert names(world.sync()) == five
    world.scale(2)
    two = world.settle()
    assert len(two) == 2 and set(two) <= set(five)
    status = world.sync()["status"]
    assert (status["replicas"], status["readyReplicas"], status["availableReplicas"]) == (2, 2, 2)
    for seen in world.statuses.values():  # every status along the way fits MCM's schema, nothing pruned
        assert_valid_status(seen)


def test_slow_start_creates_one_machine_first_then_doubles() -> None:
    world = SetWorld(10)
    first = world.sync()
    assert len(first["children"]) == 1
    assert "9 more after these get devices" in first["status"]["lastOperation"]["description"]
    assert len(world.sync()["children"]) == 1  # the first one has no device yet: wait
    world.progress()  # it got a device (Pending)
    assert len(world.sync()["children"]) == 3  # window 2 x 1 started
    world.progress()
    world.progress()
    assert len(world.sync()["children"]) == 9
    world.progress()
    assert len(world.sync()["children"]) == 10


def test_a_class_that_cannot_create_devices_holds_one_machine() -> None:
    world = SetWorld(4)
    world.sync()
    for machine in child_map(world.body).values():
        machine["status"] = {"currentStatus": {"phase": "CrashLoopBackOff"},
                             "lastOperation": {"description": "Cloud provider message - no capacity", "state": "Failed",
                                               "type": "Create"}}
    response = world.sync()
    assert len(response["children"]) == 1
    failure = response["status"]["machineSetCondition"][0]
    assert (failure["type"], failure["status"], failure["reason"]) == ("ReplicaFailure", "True", "FailedCreate")
    assert "no capacity" in failure["message"]


def test_burst_limit_caps_creations_per_sync() -> None:
    body = request()
    body["parent"]["spec"]["replicas"] = 200
    # 60 running machines: the slow-start window would allow 120, the burst limit allows 20.
    running = child_map(body)[f"{body['parent']['metadata']['namespace']}/pool-a-x5xfgfj5-b2c4d"]
    body["children"][KEY] = {}
    for i in range(60):
        machine = copy.deepcopy(running)
        machine["metadata"]["name"] = f"pool-a-x5xfgfj5-r{i:04d}"
        body["children"][KEY][f"ns/{machine['metadata']['name']}"] = machine
    response = machineset.sync(body, ctx())
    assert len(response["children"]) == 60 + machineset.BURST_REPLICAS


# ------------------------------------------------------------------------------------------------ the fixture


def test_failed_machine_is_left_out_and_replaced_in_the_same_sync() -> None:
    response = machineset.sync(request(), ctx())
    kept = names(response)
    assert "pool-a-x5xfgfj5-z8x6w" not in kept  # Metacontroller deletes it; its finalizer deletes the device
    assert {"pool-a-x5xfgfj5-b2c4d", "pool-a-x5xfgfj5-k7m9q"} <= set(kept)
    assert len(kept) == 3
    new = next(c for c in response["children"] if c["metadata"]["name"] not in
               {"pool-a-x5xfgfj5-b2c4d", "pool-a-x5xfgfj5-k7m9q"})
    assert new["metadata"]["labels"] == {"name": "pool-a", "machine-template-hash": "x5xfgfj5"}
    assert new["metadata"]["annotations"] == {"example.com/owner": "team-a"}
    assert new["spec"]["class"]["name"] == "metal-small"
    assert new["metadata"]["namespace"] == "shoot--demo--cluster"


def test_kept_machines_are_returned_as_observed_without_server_fields() -> None:
    body = request()
    response = machineset.sync(body, ctx())
    kept = next(c for c in response["children"] if c["metadata"]["name"] == "pool-a-x5xfgfj5-b2c4d")
    observed = child_map(body)["shoot--demo--cluster/pool-a-x5xfgfj5-b2c4d"]
    assert kept["spec"] == observed["spec"]
    assert kept["metadata"]["labels"]["node"] == "pool-a-x5xfgfj5-b2c4d"
    assert machineset.LAST_APPLIED not in kept["metadata"]["annotations"]
    assert set(kept) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(kept["metadata"]) == {"name", "namespace", "labels", "annotations"}


def test_status_of_the_fixture() -> None:
    status = machineset.sync(request(), ctx())["status"]
    assert_valid_status(status)
    assert status["replicas"] == 3
    assert status["readyReplicas"] == 2
    assert status["availableReplicas"] == 2
    assert status["fullyLabeledReplicas"] == 3
    assert status["failedMachines"] == [{
        "name": "pool-a-x5xfgfj5-z8x6w",
        "providerID": "equinixmetal://da/2b3c4d5e-1111-4222-8333-944455556668",
        "lastOperation": {"description": "Machine pool-a-x5xfgfj5-z8x6w failed to join the cluster in 20 minutes.",
                          "lastUpdateTime": "2026-11-25T09:21:00Z", "state": "Failed", "type": "Create"},
        "ownerRef": "pool-a-x5xfgfj5",
    }]
    assert status["machineSetCondition"][0]["reason"] == "FailedCreate"
    assert status["lastOperation"]["type"] == "Create"
    assert "observedGeneration" not in status  # Metacontroller adds it


def test_same_request_twice_gives_the_same_response() -> None:
    first = machineset.sync(request(), ctx())
    second = machineset.sync(request(), ctx(NOW + timedelta(minutes=5)))
    assert first["children"] == second["children"]
    third = machineset.sync(request(), ctx())
    assert third == first


def test_status_is_unchanged_once_written_back() -> None:
    body = request()
    first = machineset.sync(body, ctx())
    body["parent"]["status"] = first["status"]
    later = machineset.sync(body, ctx(NOW + timedelta(hours=1)))
    assert later["status"] == first["status"]  # no timestamp moves while nothing changes


def test_active_machines_less_scale_down_picks_priority_then_phase_then_oldest() -> None:
    """Mirrors MCM's ActiveMachines.Less (pkg/controller/controller_utils.go): priority annotation, phase, then the
    older CreationTimestamp goes first."""
    body = request()
    template = child_map(body)["shoot--demo--cluster/pool-a-x5xfgfj5-b2c4d"]
    machines: dict[str, Any] = {}

    def add(name: str, phase: str, created: str, priority: str = "3") -> None:
        machine = copy.deepcopy(template)
        machine["metadata"].update(name=name, creationTimestamp=created)
        machine["metadata"]["annotations"][machineset.mcm.PRIORITY_ANNOTATION] = priority
        machine["status"]["currentStatus"]["phase"] = phase
        machines[f"ns/{name}"] = machine

    add("a-running-old", "Running", "2026-11-25T09:00:00Z")
    add("b-running-new", "Running", "2026-11-25T09:30:00Z")
    add("c-pending", "Pending", "2026-11-25T08:00:00Z")
    add("d-unknown", "Unknown", "2026-11-25T08:00:00Z")
    add("e-running-prio1", "Running", "2026-11-25T07:00:00Z", priority="1")
    add("f-crashloop", "CrashLoopBackOff", "2026-11-25T08:00:00Z")
    body["children"][KEY] = machines
    order = [m.name for m in machineset.deletion_order(machineset.Machine.parse(m) for m in machines.values())]
    assert order == ["e-running-prio1", "f-crashloop", "d-unknown", "c-pending", "a-running-old", "b-running-new"]
    body["parent"]["spec"]["replicas"] = 2
    assert names(machineset.sync(body, ctx())) == ["a-running-old", "b-running-new"]


def test_terminating_machines_are_left_out_and_replaced_without_overshoot() -> None:
    body = request()
    failed = child_map(body)["shoot--demo--cluster/pool-a-x5xfgfj5-z8x6w"]
    failed["metadata"]["deletionTimestamp"] = "2026-11-25T09:59:00Z"
    failed["status"]["currentStatus"]["phase"] = "Terminating"
    response = machineset.sync(body, ctx())
    assert len(response["children"]) == 3  # two kept, one replacement; the terminating one is not returned
    assert "pool-a-x5xfgfj5-z8x6w" not in names(response)
    assert response["status"]["replicas"] == 3  # it still exists, and still holds a device
    # The replacement, once observed, is kept: the next sync asks for nothing more.
    replacement = next(c for c in response["children"] if c["metadata"]["name"] not in child_map(body))
    replacement = {**replacement, "status": {"currentStatus": {"phase": "Pending"}}}
    child_map(body)[f"shoot--demo--cluster/{replacement['metadata']['name']}"] = replacement
    assert sorted(names(machineset.sync(body, ctx()))) == sorted(names(response))


def test_is_machine_available_counts_running_machines_at_once_despite_min_ready_seconds() -> None:
    """Mirrors MCM's isMachineAvailable (pkg/controller/deployment_machineset_util.go): Running or Available is
    available, whatever minReadySeconds says; no resync is asked for to wait it out."""
    body = request()
    body["parent"]["spec"]["minReadySeconds"] = 500  # as MCM's integration test; both Machines ran a few minutes
    response = machineset.sync(body, ctx(datetime(2026, 11, 25, 9, 14, tzinfo=UTC)))
    assert response["status"]["availableReplicas"] == 2
    assert response["status"]["readyReplicas"] == 2
    assert "resyncAfterSeconds" not in response
    pending = copy.deepcopy(body)
    first = next(iter(pending["children"][KEY].values()))
    first["status"]["currentStatus"]["phase"] = "Pending"
    assert machineset.sync(pending, ctx(datetime(2026, 11, 25, 9, 14, tzinfo=UTC)))["status"]["availableReplicas"] == 1


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda s: s["selector"].update(matchLabels={"name": "other"}), "is not matching with spec.template"),
        (lambda s: s["template"]["spec"].pop("class"), "spec.template.spec.class.name: Required value"),
        (lambda s: s.update(selector={}), "empty selector"),
        (lambda s: s.update(replicas=-1), "spec.replicas: Invalid value: -1"),
        (lambda s: s["selector"].update(matchExpressions=[{"key": "x", "operator": "Near"}]), "Unsupported value"),
    ],
)
def test_unusable_spec_changes_no_machine_and_says_why(change: Any, fragment: str) -> None:
    body = request()
    change(body["parent"]["spec"])
    response = machineset.sync(body, ctx())
    assert sorted(names(response)) == sorted(m["metadata"]["name"] for m in child_map(body).values())
    condition = response["status"]["machineSetCondition"][0]
    assert (condition["type"], condition["status"], condition["reason"]) == ("ReplicaFailure", "True", "InvalidSpec")
    assert fragment in condition["message"]
    assert response["status"]["lastOperation"]["state"] == "Failed"
    assert_valid_status(response["status"])


def test_a_name_too_long_for_its_machines_is_refused() -> None:
    body = request()
    body["parent"]["metadata"]["name"] = "x" * 60
    response = machineset.sync(body, ctx())
    assert "may have at most 63" in response["status"]["machineSetCondition"][0]["message"]


def test_a_set_being_deleted_creates_nothing() -> None:
    body = request()
    body["parent"]["metadata"]["deletionTimestamp"] = "2026-11-25T09:59:00Z"
    body["parent"]["spec"]["replicas"] = 6
    assert sorted(names(machineset.sync(body, ctx()))) == sorted(m["metadata"]["name"]
                                                                  for m in child_map(body).values())


@pytest.mark.parametrize("body", [{}, {"parent": "x"}, {"parent": {"metadata": {"name": "a"}}},
                                  {"parent": {"metadata": {"name": "a", "namespace": "b"}}, "children": []}])
def test_malformed_requests_are_bad_requests(body: dict[str, Any]) -> None:
    with pytest.raises(BadRequest):
        machineset.sync(body, ctx())


def test_names_skip_taken_slots() -> None:
    first = machineset.new_names("s", "uid", 3, ())
    assert machineset.new_names("s", "uid", 2, first[:1]) == first[1:]
    assert len(set(machineset.new_names("s", "uid", 500, ()))) == 500


@pytest.mark.parametrize("labels", [{"freeze": "True"}, {"node.machine.sapcloud.io/scale-up-disabled": ""}])
def test_mcm_freeze_labels_stop_creation_but_not_removal(labels: dict[str, str]) -> None:
    body = request()
    body["parent"]["metadata"]["labels"].update(labels)
    response = machineset.sync(body, ctx())
    assert sorted(names(response)) == ["pool-a-x5xfgfj5-b2c4d", "pool-a-x5xfgfj5-k7m9q"]  # failed one still goes
    assert "Scale-up disabled" not in response["status"]["lastOperation"]["description"]  # deleting is reported
    body["children"][KEY].pop("shoot--demo--cluster/pool-a-x5xfgfj5-z8x6w")
    later = machineset.sync(body, ctx())
    assert len(later["children"]) == 2
    assert "Scale-up disabled" in later["status"]["lastOperation"]["description"]
