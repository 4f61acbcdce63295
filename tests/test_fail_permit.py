"""At most one Machine of a MachineDeployment is marked Failed for health at a time.

Mirrors MCM's `canMarkMachineFailed` and `tryMarkingMachineFailed` (gardener/machine-controller-manager,
pkg/util/provider/machinecontroller/machine_util.go, maxReplacements = 1): the MachineSet hook, which relates every
Machine labelled `name=<deployment>`, names the one Unknown Machine that may fail; the Machine hook fails only that.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hooks.mcm import fail_permit, machineset

NS = "shoot--demo--cluster"
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def machine(name: str, phase: str, since: str = "2026-11-25T09:00:00Z", set_name: str = "pool-a-1",
            **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "machine.sapcloud.io/v1alpha1", "kind": "Machine",
            "metadata": {"name": name, "namespace": NS, "labels": {"name": "pool-a"},
                         "creationTimestamp": "2026-11-25T08:00:00Z",
                         "ownerReferences": [{"apiVersion": "machine.sapcloud.io/v1alpha1", "kind": "MachineSet",
                                              "name": set_name, "uid": f"uid-{set_name}", "controller": True}],
                         **meta},
            "spec": {"class": {"kind": "MachineClass", "name": "c"}},
            "status": {"currentStatus": {"phase": phase, "lastUpdateTime": since}}}


def machine_set(name: str) -> dict[str, Any]:
    labels = {"name": "pool-a", "machine-template-hash": name}
    return {"apiVersion": "machine.sapcloud.io/v1alpha1", "kind": "MachineSet",
            "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}"},
            "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"class": {"kind": "MachineClass", "name": "c"}}}}}


def permit_of(set_name: str, own: list[dict[str, Any]], everyone: list[dict[str, Any]]) -> str | None:
    """The machine a set's sync names, given its own Machines and the deployment's Machines it relates."""
    parent = machine_set(set_name)
    machines = [machineset.Machine.parse(m) for m in own]
    group = fail_permit.group_of(own, {f"{NS}/{m['metadata']['name']}": m for m in everyone}, parent)
    status = machineset.reconcile(parent, machines, NOW, group=group)["status"]
    permits = [c for c in status.get("machineSetCondition", []) if c["type"] == fail_permit.PERMIT_CONDITION]
    return permits[0]["message"] if permits else None


def test_can_mark_machine_failed_names_one_machine_across_the_sets_of_a_deployment() -> None:
    old = [machine("a", "Unknown", "2026-11-25T09:10:00Z", "pool-a-1"),
           machine("b", "Unknown", "2026-11-25T09:05:00Z", "pool-a-1")]
    new = [machine("c", "Unknown", "2026-11-25T09:01:00Z", "pool-a-2"),
           machine("d", "Running", set_name="pool-a-2")]
    everyone = old + new
    # The Machine Unknown longest is named, by its own set only; the other set names none.
    assert permit_of("pool-a-2", new, everyone) == "c"
    assert permit_of("pool-a-1", old, everyone) is None


def test_can_mark_machine_failed_names_none_while_another_machine_is_being_replaced() -> None:
    unknown = [machine("a", "Unknown"), machine("b", "Unknown")]
    for busy in ("Failed", "Pending", "CrashLoopBackOff", "Terminating", ""):
        assert permit_of("pool-a-1", unknown, [*unknown, machine("x", busy, set_name="pool-a-2")]) is None, busy
    being_deleted = machine("x", "Running", set_name="pool-a-2", deletionTimestamp="2026-11-25T09:59:00Z")
    assert permit_of("pool-a-1", unknown, [*unknown, being_deleted]) is None
    assert permit_of("pool-a-1", unknown, [*unknown, machine("x", "Running", set_name="pool-a-2")]) == "a"


def test_can_mark_machine_failed_counts_terminating_twice() -> None:
    """MCM counts a Terminating Machine twice in `inProgress` (its replacement may not be created yet)."""
    assert fail_permit.in_progress([machine("t", "Terminating")]) == 2
    assert fail_permit.in_progress([machine("p", "Pending"), machine("r", "Running"), machine("u", "Unknown")]) == 1


def test_a_machine_whose_health_timeout_is_disabled_takes_no_permit() -> None:
    stuck = machine("a", "Unknown", "2026-11-25T08:00:00Z")
    stuck["spec"]["disableHealthTimeout"] = True
    machines = [stuck, machine("b", "Unknown", "2026-11-25T09:00:00Z")]
    assert permit_of("pool-a-1", machines, machines) == "b"


def test_the_machine_hook_fails_only_the_machine_its_set_names() -> None:
    sets = {f"{NS}/pool-a-1": {**machine_set("pool-a-1"), "status": {"machineSetCondition": [
        {"type": fail_permit.PERMIT_CONDITION, "status": "True", "reason": fail_permit.PERMIT_REASON,
         "message": "a"}]}}}
    assert fail_permit.may_fail(machine("a", "Unknown"), sets)
    assert not fail_permit.may_fail(machine("b", "Unknown"), sets)
    assert fail_permit.may_fail(machine("b", "Unknown"), {})  # no set seen: nothing to coordinate with
    own = machine("c", "Unknown")
    own["metadata"].pop("ownerReferences")
    assert fail_permit.may_fail(own, sets)  # the user's own Machine: no deployment, no limit
