"""A MachineSet's status: replica counts, failed Machines, the ReplicaFailure condition and lastOperation.

Shaped as MCM's MachineSetStatus. Every timestamp is carried over while what it stamps is unchanged, so a set whose
Machines did not change gets the same status and Metacontroller writes nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from hooks import objects
from hooks.mcm import fail_permit
from hooks.mcm import vocabulary as mcm
from hooks.mcm.conditions import REPLICA_FAILURE, carried_time, clean_operation, condition
from hooks.mcm.text import NAMES_SHOWN, names_list, plural
from hooks.mcm.timefmt import format_time, parse_time
from hooks.mcm.validation import int_field

if TYPE_CHECKING:
    from hooks.mcm.machineset import Machine, Plan

FREEZE_LABELS_TEXT = "freeze or node.machine.sapcloud.io/scale-up-disabled"


def failure_conditions(machines: list[Machine], problems: list[str], observed: list[Any],
                       now: datetime) -> list[Any]:
    """MCM's ReplicaFailure: an unusable spec, or Machines that failed (creating, or later)."""
    if problems:
        return [condition(observed, REPLICA_FAILURE, "True", "InvalidSpec", "; ".join(problems), now)]
    failing = [m for m in machines if not m.deleting and m.phase in (mcm.FAILED, mcm.CRASH_LOOP)]
    if not failing:
        return []
    creating = [m for m in failing if m.phase == mcm.CRASH_LOOP or m.operation.get("type") == mcm.OP_CREATE]
    reason = "FailedCreate" if creating else "FailedMachines"
    details = [f"{m.name} ({m.phase}): {m.operation.get('description') or 'no description'}"
               for m in sorted(failing, key=lambda m: m.name)]
    message = f"{plural(len(failing), 'machine')} failing: " + "; ".join(details[:NAMES_SHOWN])
    if len(details) > NAMES_SHOWN:
        message += f"; and {len(details) - NAMES_SHOWN} more"
    return [condition(observed, REPLICA_FAILURE, "True", reason, message, now)]


def availability(machines: list[Machine]) -> int:
    """Available Machines, counted as MCM's `isMachineAvailable` (deployment_machineset_util.go) counts them.

    A Machine is available as soon as its phase is Running or Available: MCM's MachineSet does not wait
    `minReadySeconds` (that field only shapes the MachineDeployment's progress in Kubernetes; MCM ignores it here),
    so a set with `minReadySeconds: 500` reports its Machines available as soon as they run.
    """
    return sum(1 for m in machines if not m.deleting and m.phase in (mcm.RUNNING, mcm.AVAILABLE))


def _changes(plan: Plan) -> dict[str, Any]:
    """The operation of a sync that creates or removes Machines."""
    parts = []
    if plan.create:
        text = f"Creating {plural(len(plan.create), 'machine')}: {names_list(plan.create)}"
        if plan.throttled:
            text += f" ({plan.throttled} more after these get devices)"
        parts.append(text)
    if plan.remove:
        parts.append(f"Deleting {plural(len(plan.remove), 'machine')}: "
                     f"{names_list(sorted(m.name for m in plan.remove))}")
    return {"type": mcm.OP_CREATE if plan.create else mcm.OP_DELETE, "state": mcm.PROCESSING,
            "description": "; ".join(parts)}


def operation(plan: Plan, problems: list[str], machines: list[Machine], replicas: int, available: int,
              observed: Any, now: datetime, no_scale_up: bool = False, held: str | None = None,
              since: datetime | None = None) -> dict[str, Any]:
    """lastOperation: what this sync changes, or what the set waits for.

    Its lastUpdateTime is the latest change among the set's Machines (their phase times and creation), or `since`
    (the set's creation) without any: a function of the Machines alone, never of the set's own observed status.
    Metacontroller may sync from a cache one write behind; an answer that depended on the observed status would
    differ between the stale and the fresh view, be written again and again, and starve the MachineDeployment's
    updates of the set (tests/test_stale_view.py).
    """
    terminating = sum(1 for m in machines if m.deleting)
    if problems:
        op = {"type": "Update", "state": mcm.STATE_FAILED,
              "description": "Spec cannot be used, no Machine changed: " + "; ".join(problems)}
    elif plan.create or plan.remove:
        op = _changes(plan)
    elif held is not None:
        op = {"type": "Update", "state": mcm.PROCESSING,
              "description": f"No machine created or deleted: {held}"}
    elif plan.throttled and no_scale_up:
        op = {"type": mcm.OP_CREATE, "state": mcm.PROCESSING,
              "description": f"Scale-up disabled by label ({FREEZE_LABELS_TEXT}): "
                             f"{plan.throttled} missing machines not created"}
    elif plan.throttled:
        op = {"type": mcm.OP_CREATE, "state": mcm.PROCESSING,
              "description": f"Waiting for new machines to get devices before creating {plan.throttled} more"}
    elif available < replicas or terminating:
        waiting = [f"{available} of {plural(replicas, 'machine')} available"]
        if terminating:
            waiting.append(f"{terminating} terminating")
        op = {"type": "Update", "state": mcm.PROCESSING, "description": "Waiting: " + ", ".join(waiting)}
    else:
        op = {"type": "Update", "state": mcm.SUCCESSFUL,
              "description": f"{available} of {plural(replicas, 'machine')} available"}
    phase_times = (parse_time(objects.string(m.obj, "status", "currentStatus", "lastUpdateTime")) for m in machines)
    times = [t for t in (*phase_times, *(parse_time(m.created) for m in machines)) if t is not None]
    moment = max(times) if times else since
    if moment is not None:
        op["lastUpdateTime"] = format_time(moment)
    else:
        old = observed if isinstance(observed, dict) else {}
        same = all(old.get(k) == op[k] for k in ("type", "state", "description"))
        op["lastUpdateTime"] = carried_time(old.get("lastUpdateTime"), same, now)
    return op


def set_status(parent: dict[str, Any], machines: list[Machine], plan: Plan, problems: list[str], now: datetime, *,
               no_scale_up: bool, held: str | None, group: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The status MCM's calculateMachinesetStatus would write for these Machines."""
    spec = objects.mapping(parent, "spec")
    observed = objects.mapping(parent, "status")
    scratch: list[str] = []
    replicas = int_field(spec.get("replicas"), "", scratch)
    available = availability(machines)
    template_labels = objects.mapping(spec, "template", "metadata", "labels")
    live = [m for m in machines if not m.deleting]
    status: dict[str, Any] = {
        "replicas": len(machines),
        "fullyLabeledReplicas": sum(
            1 for m in live if all(m.labels.get(k) == v for k, v in template_labels.items())
        ),
        "readyReplicas": sum(1 for m in live if m.phase == mcm.RUNNING),
        "availableReplicas": available,
    }
    owner = str(objects.meta(parent).get("name"))
    failed = [{"name": m.name, "providerID": m.provider_id, "lastOperation": clean_operation(m.operation),
               "ownerRef": owner} for m in machines if m.failed_operation]
    if failed:
        status["failedMachines"] = failed
    observed_conditions = observed.get("machineSetCondition")
    seen_conditions = observed_conditions if isinstance(observed_conditions, list) else []
    conditions = failure_conditions(machines, problems, seen_conditions, now)
    conditions += fail_permit.permit_conditions([m.obj for m in machines] if group is None else group,
                                                {m.name for m in machines}, seen_conditions, now)
    if conditions:
        status["machineSetCondition"] = conditions
    status["lastOperation"] = operation(plan, problems, machines, replicas, available,
                                        observed.get("lastOperation"), now, no_scale_up, held,
                                        since=parse_time(objects.string(parent, "metadata", "creationTimestamp")))
    return status
