"""At most one Machine of a MachineDeployment is marked Failed for health at a time (MCM's canMarkMachineFailed).

MCM (pkg/util/provider/machinecontroller/machine_util.go, `tryMarkingMachineFailed` and `canMarkMachineFailed`)
takes a per-deployment lock, lists the Machines labelled `name=<deployment>` and marks an Unknown Machine past its
health timeout Failed only while fewer than `maxReplacements` (1) of them are "being replaced": any phase but
Running and Unknown counts once, Terminating twice. Without the limit a network partition fails every Machine of
a pool at once and the whole pool is replaced together.

Parallel Machine syncs cannot take a lock, so the decision is made where all Machines of the deployment are seen:
the MachineSet hook relates the Machines that carry its template's `name` label (its customize hook), decides which
single Unknown Machine may be failed, and writes that as a condition of its own status (type MachineFailurePermit,
message the Machine's name) when the Machine is its own. The Machine hook relates its MachineSet already and fails
an Unknown Machine past its health timeout only when that condition names it. Every set of a deployment decides
from the same Machines with the same deterministic rule (the Machine Unknown longest, then by name), so two sets of a
rollout name the same Machine. A set whose template has no `name` label decides from its own Machines.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from hooks import objects
from hooks.mcm import vocabulary as mcm
from hooks.mcm.conditions import condition

PERMIT_CONDITION = "MachineFailurePermit"
PERMIT_REASON = "CanMarkMachineFailed"
MAX_REPLACEMENTS = 1  # MCM's maxReplacements
GROUP_LABEL = "name"  # MCM's GetMachineDeploymentName reads this label of a Machine


def group_rule(machine_set: Any) -> dict[str, Any] | None:
    """The customize rule relating every Machine of the set's deployment (MCM lists them by the `name` label)."""
    value = objects.mapping(machine_set, "spec", "template", "metadata", "labels").get(GROUP_LABEL)
    if not isinstance(value, str) or not value:
        return None
    return {"apiVersion": mcm.API_VERSION, "resource": "machines", "namespace": objects.namespace(machine_set),
            "labelSelector": {"matchLabels": {GROUP_LABEL: value}}}


def _phase(machine: Mapping[str, Any]) -> str:
    if objects.meta(machine).get("deletionTimestamp"):
        return mcm.TERMINATING
    return objects.string(machine, "status", "currentStatus", "phase")


def in_progress(machines: Iterable[Mapping[str, Any]]) -> int:
    """MCM's count of Machines "getting replaced": not Running or Unknown; Terminating counts twice."""
    count = 0
    for machine in machines:
        phase = _phase(machine)
        if phase in (mcm.RUNNING, mcm.UNKNOWN):
            continue
        count += 2 if phase == mcm.TERMINATING else 1
    return count


def permitted(machines: Iterable[Mapping[str, Any]]) -> str | None:
    """The one Unknown Machine that may be marked Failed now, or None while others are being replaced."""
    group = list(machines)
    if in_progress(group) >= MAX_REPLACEMENTS:
        return None
    candidates = [m for m in group if _phase(m) == mcm.UNKNOWN
                  and not objects.mapping(m, "spec").get("disableHealthTimeout")]
    if not candidates:
        return None
    since = min(candidates, key=lambda m: (objects.string(m, "status", "currentStatus", "lastUpdateTime"),
                                           objects.name(m)))
    return objects.name(since)


def group_of(own: list[dict[str, Any]], related: Mapping[str, Any], machine_set: Any) -> list[dict[str, Any]]:
    """The Machines the decision is made from: the related group when the set relates one, else its own."""
    if group_rule(machine_set) is None:
        return own
    by_key = {f"{objects.namespace(m)}/{objects.name(m)}": m for m in own}
    for key, machine in related.items():
        if isinstance(machine, dict):
            by_key.setdefault(key, machine)
    return list(by_key.values())


def permit_conditions(group: list[dict[str, Any]], own_names: set[str], observed: list[Any],
                      now: datetime) -> list[dict[str, Any]]:
    """The set's MachineFailurePermit condition, present only while it names one of the set's own Machines."""
    name = permitted(group)
    if name is None or name not in own_names:
        return []
    return [condition(observed, PERMIT_CONDITION, "True", PERMIT_REASON, name, now)]


def may_fail(machine: Mapping[str, Any], machinesets: Mapping[str, Any]) -> bool:
    """Whether the Machine hook may mark this Unknown Machine Failed for health (see the module docstring).

    A Machine without a controlling MachineSet is the user's own: MCM's limit is per deployment, and it has none. A
    MachineSet not seen at all (a controller without the customize hook, or a set already gone, whose Machines go
    with it) coordinates nothing either: the limit holds only while the set can be read.
    """
    ref = next((r for r in objects.mappings(objects.meta(machine), "ownerReferences")
                if r.get("controller") is True and r.get("kind") == "MachineSet"), None)
    if ref is None:
        return True
    owner = machinesets.get(f"{objects.namespace(machine)}/{ref.get('name')}")
    if not isinstance(owner, dict):
        return True
    conditions = objects.mappings(owner, "status", "machineSetCondition")
    return any(c.get("type") == PERMIT_CONDITION and c.get("status") == "True"
               and c.get("message") == objects.name(machine) for c in conditions)
