"""A rollout stepped through simulated child progress.

The world applies responses the way Metacontroller does: the deployment hook's desired MachineSets are created,
updated in place or deleted; each MachineSet hook's desired Machines are created or deleted (OnDelete: kept ones
are never changed); statuses are written back with observedGeneration. Between rounds new Machines get a device
(Pending) and then join (Running). Invariants are checked on the Machines that actually exist.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hooks.config import Settings
from hooks.context import HookContext
from hooks.mcm import machinedeployment, machineset
from tests.crd_schema import status_problems

NS = "shoot--demo"
COMPOSITE_KEYS = {"status", "children", "resyncAfterSeconds", "finalized"}


def template(class_name: str) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"name": "pool-a"}},
        "spec": {"class": {"apiGroup": "machine.sapcloud.io", "kind": "MachineClass", "name": class_name}},
    }


class World:
    def __init__(self, replicas: int, strategy: dict[str, Any], *, linger: bool = False, min_ready: int = 0) -> None:
        self.now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
        self.linger = linger
        self.serial = 0
        self.md: dict[str, Any] = {
            "apiVersion": "machine.sapcloud.io/v1alpha1",
            "kind": "MachineDeployment",
            "metadata": {"name": "pool-a", "namespace": NS, "uid": "md-uid", "generation": 1,
                         "creationTimestamp": "2026-11-25T11:00:00Z"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"name": "pool-a"}},
                     "template": template("class-v1"), "strategy": strategy, "minReadySeconds": min_ready},
            "status": {},
        }
        self.sets: dict[str, dict[str, Any]] = {}
        self.machines: dict[str, dict[str, Any]] = {}
        self.history: list[tuple[int, int, int]] = []  # (machines, non-terminating, available) after each phase
        self.shapes: dict[str, tuple[str, dict[str, Any]]] = {}  # one status per structure, for schema checks

    def ctx(self) -> HookContext:
        return HookContext(settings=Settings(), metal=lambda token: None, clock=lambda: self.now)

    def stamp(self) -> str:
        self.serial += 1
        return (self.now + timedelta(milliseconds=self.serial)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    # ------------------------------------------------------------------ hooks, applied like Metacontroller does

    def sync_deployment(self) -> dict[str, Any]:
        observed = {f"{NS}/{n}": copy.deepcopy(s) for n, s in self.sets.items()}
        body = {"controller": {"metadata": {"name": "metal-machinedeployments"}}, "parent": copy.deepcopy(self.md),
                "children": {machinedeployment.SET_KEY: observed}, "related": {}, "finalizing": False}
        response = machinedeployment.sync(body, self.ctx())
        assert set(response) <= COMPOSITE_KEYS
        desired = {c["metadata"]["name"]: c for c in response["children"]}
        for name in list(self.sets):
            if name not in desired:
                self.delete_set(name)
        for name, child in desired.items():
            assert child["metadata"]["labels"]["name"] == "pool-a"  # matches the deployment's selector
            if name not in self.sets:
                obj = copy.deepcopy(child)
                obj["metadata"].update(uid=f"uid-{name}", generation=1, creationTimestamp=self.stamp())
                obj["status"] = {}
                self.sets[name] = obj
            else:
                obj = self.sets[name]
                if obj["spec"] != child["spec"]:
                    obj["metadata"]["generation"] += 1
                obj["spec"] = copy.deepcopy(child["spec"])
                obj["metadata"]["labels"] = child["metadata"].get("labels", {})
                obj["metadata"]["annotations"] = child["metadata"].get("annotations", {})
        self.md["status"] = {**response["status"], "observedGeneration": self.md["metadata"]["generation"]}
        self.remember("MachineDeployment", response["status"])
        self.check()
        return response

    def delete_set(self, name: str) -> None:
        uid = self.sets.pop(name)["metadata"]["uid"]
        for machine_name in [n for n, m in self.machines.items() if m["metadata"]["ownerReferences"][0]["uid"] == uid]:
            self.delete_machine(machine_name)

    def delete_machine(self, name: str) -> None:
        machine = self.machines[name]
        if not self.linger:
            del self.machines[name]
        elif not machine["metadata"].get("deletionTimestamp"):
            machine["metadata"]["deletionTimestamp"] = self.stamp()
            machine["status"]["currentStatus"] = {"phase": "Terminating", "lastUpdateTime": self.stamp()}

    def sync_set(self, name: str) -> dict[str, Any]:
        ms = self.sets[name]
        uid = ms["metadata"]["uid"]
        owned = {f"{NS}/{n}": copy.deepcopy(m) for n, m in self.machines.items()
                 if m["metadata"]["ownerReferences"][0]["uid"] == uid}
        body = {"controller": {"metadata": {"name": "metal-machinesets"}}, "parent": copy.deepcopy(ms),
                "children": {machineset.MACHINE_KEY: owned}, "related": {}, "finalizing": False}
        response = machineset.sync(body, self.ctx())
        assert set(response) <= COMPOSITE_KEYS
        desired = {c["metadata"]["name"]: c for c in response["children"]}
        for key, machine in owned.items():
            name_ = key.split("/", 1)[1]
            if name_ not in desired and not machine["metadata"].get("deletionTimestamp"):
                self.delete_machine(name_)
        for child_name, child in desired.items():
            if child_name not in self.machines:
                obj = copy.deepcopy(child)
                obj["metadata"].update(uid=f"uid-{child_name}", creationTimestamp=self.stamp(),
                                       ownerReferences=[{"kind": "MachineSet", "name": name, "uid": uid,
                                                         "controller": True}])
                obj["status"] = {}
                self.machines[child_name] = obj
        ms["status"] = {**response["status"], "observedGeneration": ms["metadata"]["generation"]}
        self.remember("MachineSet", response["status"])
        self.check()
        return response

    def remember(self, kind: str, status: dict[str, Any]) -> None:
        def shape(value: Any) -> Any:
            if isinstance(value, dict):
                return {k: shape(v) for k, v in value.items()}
            if isinstance(value, list):
                return [shape(v) for v in value[:1]]
            return type(value).__name__

        self.shapes.setdefault(kind + json.dumps(shape(status), sort_keys=True), (kind, status))

    # ----------------------------------------------------------------------------------------- the world moves

    def progress(self) -> None:
        self.now += timedelta(minutes=1)
        for name, machine in list(self.machines.items()):
            phase = machine["status"].get("currentStatus", {}).get("phase", "")
            if machine["metadata"].get("deletionTimestamp"):
                del self.machines[name]  # the device is gone one round later
            elif phase == "":
                machine["status"]["currentStatus"] = {"phase": "Pending", "lastUpdateTime": self.stamp()}
            elif phase == "Pending":
                machine["status"]["currentStatus"] = {"phase": "Running", "lastUpdateTime": self.stamp()}

    def available(self) -> int:
        return sum(1 for m in self.machines.values() if not m["metadata"].get("deletionTimestamp")
                   and m["status"].get("currentStatus", {}).get("phase") == "Running")

    def check(self) -> None:
        live = sum(1 for m in self.machines.values() if not m["metadata"].get("deletionTimestamp"))
        self.history.append((len(self.machines), live, self.available()))

    def round(self) -> None:
        self.sync_deployment()
        for name in sorted(self.sets):
            self.sync_set(name)
        for name in sorted(self.sets):  # Metacontroller resyncs on child changes: statuses catch up
            self.sync_set(name)
        self.progress()
        self.check()

    def settle(self, rounds: int = 40) -> None:
        for _ in range(rounds):
            self.round()
            status = self.md["status"]
            replicas = self.md["spec"]["replicas"]
            if (status.get("updatedReplicas") == replicas == status.get("availableReplicas")
                    == status.get("replicas") and len(self.sets_with_machines()) <= 1
                    and len(self.machines) == replicas):
                self.round()  # one more round to let conditions settle
                return
        raise AssertionError(f"no convergence: {self.md['status']}")

    def sets_with_machines(self) -> list[str]:
        owners = {m["metadata"]["ownerReferences"][0]["name"] for m in self.machines.values()}
        return sorted(owners)

    def machine_classes(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for m in self.machines.values():
            class_name = m["spec"]["class"]["name"]
            found[class_name] = found.get(class_name, 0) + 1
        return found


ROLLING_1_1 = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}}


@pytest.mark.parametrize("linger", [False, True], ids=["deleted-at-once", "deletion-takes-a-round"])
def test_rolling_update_3_replicas_surge_1_unavailable_1(linger: bool) -> None:
    world = World(3, ROLLING_1_1, linger=linger)
    world.settle()
    assert world.machine_classes() == {"class-v1": 3}
    world.history.clear()

    world.md["spec"]["template"] = template("class-v2")
    world.md["metadata"]["generation"] += 1
    world.settle()

    assert world.machine_classes() == {"class-v2": 3}
    assert max(total for total, _, _ in world.history) <= 4, world.history
    assert min(available for _, _, available in world.history) >= 2, world.history
    status = world.md["status"]
    assert (status["updatedReplicas"], status["availableReplicas"], status["replicas"]) == (3, 3, 3)
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conditions == {"Available": ("True", "MinimumReplicasAvailable"),
                          "Progressing": ("True", "NewMachineSetAvailable")}
    # The old set stays (empty) as history; only the new one has machines.
    assert len(world.sets) == 2
    assert world.sets_with_machines() == [f"pool-a-{machinedeployment.template_hash(template('class-v2'))}"]


def test_rollout_never_surges_past_the_limit_with_percentages() -> None:
    world = World(4, {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "0%"}},
                  linger=True)
    world.settle()
    world.history.clear()
    world.md["spec"]["template"] = template("class-v2")
    world.settle()
    assert max(total for total, _, _ in world.history) <= 5
    assert min(available for _, _, available in world.history) >= 4
    assert world.machine_classes() == {"class-v2": 4}


def test_recreate_removes_every_old_machine_before_creating_new_ones() -> None:
    world = World(3, {"type": "Recreate"}, linger=True)
    world.settle()
    world.history.clear()
    world.md["spec"]["template"] = template("class-v2")
    for _ in range(30):
        world.round()
        classes = world.machine_classes()
        assert not ("class-v1" in classes and "class-v2" in classes), classes
        if classes == {"class-v2": 3} and world.md["status"].get("availableReplicas") == 3:
            break
    assert world.machine_classes() == {"class-v2": 3}


def test_revision_history_limit_deletes_the_oldest_empty_sets() -> None:
    world = World(1, ROLLING_1_1)
    world.md["spec"]["revisionHistoryLimit"] = 1
    world.settle()
    for version in ("class-v2", "class-v3", "class-v4"):
        world.md["spec"]["template"] = template(version)
        world.settle()
    hashes = {machinedeployment.template_hash(template(v)) for v in ("class-v3", "class-v4")}
    assert sorted(world.sets) == sorted(f"pool-a-{h}" for h in hashes)


def test_scaling_mid_rollout_is_proportional_and_converges() -> None:
    world = World(10, {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 3, "maxUnavailable": 2}})
    world.settle()
    world.md["spec"]["template"] = template("class-v2")
    world.round()
    world.round()
    world.md["spec"]["replicas"] = 20
    world.sync_deployment()
    sizes = {s["spec"]["template"]["spec"]["class"]["name"]: s["spec"]["replicas"] for s in world.sets.values()}
    assert sum(sizes.values()) == 23  # replicas + maxSurge, shared out between old and new
    assert sizes["class-v1"] > 0 and sizes["class-v2"] > 0
    world.settle(60)
    assert world.machine_classes() == {"class-v2": 20}


def test_paused_deployment_scales_but_does_not_roll_out() -> None:
    world = World(2, ROLLING_1_1)
    world.settle()
    world.md["spec"]["paused"] = True
    world.md["spec"]["template"] = template("class-v2")
    world.md["spec"]["replicas"] = 3
    for _ in range(5):
        world.round()
    assert world.machine_classes() == {"class-v1": 3}
    progressing = next(c for c in world.md["status"]["conditions"] if c["type"] == "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("Unknown", "DeploymentPaused")
    world.md["spec"]["paused"] = False
    world.settle()
    assert world.machine_classes() == {"class-v2": 3}


def test_mcm_integration_test_sequence() -> None:
    """MCM's IT: replicas 0 gives one set; at 1, exactly Available/MinimumReplicasAvailable and
    Progressing/NewMachineSetAvailable; 6, then 2; a class switch with replicas 4 ends fully updated."""
    world = World(0, {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 2, "maxUnavailable": 1}}, min_ready=500)
    world.round()
    world.round()
    assert len(world.sets) == 1
    world.md["spec"]["replicas"] = 1
    world.settle()
    status = world.md["status"]
    assert [(c["type"], c["status"], c["reason"]) for c in status["conditions"]] == [
        ("Available", "True", "MinimumReplicasAvailable"), ("Progressing", "True", "NewMachineSetAvailable")]
    assert status["availableReplicas"] == 1
    world.md["spec"]["replicas"] = 6
    world.settle()
    assert world.md["status"]["availableReplicas"] == 6
    world.md["spec"]["replicas"] = 2
    world.settle()
    assert len(world.machines) == 2
    world.md["spec"]["template"] = template("class-v2")
    world.md["spec"]["replicas"] = 4
    world.settle(80)
    status = world.md["status"]
    assert (status["updatedReplicas"], status["availableReplicas"]) == (4, 4)
    assert world.machine_classes() == {"class-v2": 4}
    # Every status written along the way fits MCM's CRDs (and ours), with nothing pruned.
    assert {kind for kind, _ in world.shapes.values()} == {"MachineDeployment", "MachineSet"}
    for kind, seen in world.shapes.values():
        assert status_problems(seen, kind) == [], (kind, seen)
