"""A MachineDeployment's status: replica counts and the Available, Progressing and ReplicaFailure conditions.

As MCM: the Progressing condition is always kept (Kubernetes only keeps it with a progress deadline) and only times
out when progressDeadlineSeconds is set. Condition timestamps move only when a condition's status or reason changes,
or (Progressing) when the rollout makes progress, so an unchanged deployment gets an unchanged status. The
functions follow Kubernetes' deployment controller (SetDeploymentCondition, checkPausedConditions,
syncRolloutStatus) and mutate the one conditions list a sync builds.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from hooks import objects
from hooks.mcm import rollout
from hooks.mcm.conditions import REPLICA_FAILURE, carried_time, clean_operation, condition
from hooks.mcm.deployment_sets import MachineSet, as_int
from hooks.mcm.timefmt import parse_time

MAX_INT32 = 2**31 - 1
AVAILABLE = "Available"
PROGRESSING = "Progressing"
CONDITION_ORDER = (AVAILABLE, PROGRESSING, REPLICA_FAILURE)
MIN_AVAILABLE = "MinimumReplicasAvailable"
MIN_UNAVAILABLE = "MinimumReplicasUnavailable"
NEW_SET_CREATED = "NewMachineSetCreated"
FOUND_NEW_SET = "FoundNewMachineSet"
SET_UPDATED = "MachineSetUpdated"
NEW_SET_AVAILABLE = "NewMachineSetAvailable"
TIMED_OUT = "ProgressDeadlineExceeded"
PAUSED = "DeploymentPaused"
RESUMED = "DeploymentResumed"
STATUS_ORDER = ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas", "unavailableReplicas",
                "failedMachines", "conditions")

Conditions = list[dict[str, Any]]


# -------------------------------------------------------------------------------------------------- conditions


def has_deadline(spec: dict[str, Any]) -> bool:
    value = spec.get("progressDeadlineSeconds")
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < MAX_INT32


def set_condition(conditions: Conditions, new: dict[str, Any]) -> None:
    """Kubernetes' SetDeploymentCondition: same status and reason keeps the old one untouched."""
    for index, old in enumerate(conditions):
        if old.get("type") != new["type"]:
            continue
        if old.get("status") == new["status"] and old.get("reason") == new["reason"]:
            return
        if old.get("status") == new["status"]:
            new = {**new, "lastTransitionTime": old.get("lastTransitionTime") or new["lastTransitionTime"]}
        conditions[index] = new
        return
    conditions.append(new)


def new_condition(type_: str, status: str, reason: str, message: str, now: datetime) -> dict[str, Any]:
    stamp = carried_time(None, False, now)
    return {"type": type_, "status": status, "lastUpdateTime": stamp, "lastTransitionTime": stamp,
            "reason": reason, "message": message}


def find(conditions: Conditions, type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)


def observed_conditions(observed: dict[str, Any]) -> Conditions:
    return [c for c in observed.get("conditions") or [] if isinstance(c, dict) and c.get("type")]


def invalid_spec(observed: Conditions, conditions: Conditions, problems: list[str], now: datetime) -> Conditions:
    """The conditions of a deployment whose spec cannot be used: ReplicaFailure says why."""
    reason = condition(observed, REPLICA_FAILURE, "True", "InvalidSpec",
                       "Spec cannot be used, no MachineSet changed: " + "; ".join(problems), now, update_time=True)
    return [c for c in conditions if c.get("type") != REPLICA_FAILURE] + [reason]


def check_paused(conditions: Conditions, paused: bool, now: datetime) -> None:
    """Kubernetes' checkPausedConditions: Progressing says paused or resumed, unless it already timed out."""
    progressing = find(conditions, PROGRESSING)
    if progressing and progressing.get("reason") == TIMED_OUT:
        return
    if paused and not (progressing and progressing.get("reason") == PAUSED):
        set_condition(conditions, new_condition(PROGRESSING, "Unknown", PAUSED, "Deployment is paused", now))
    elif not paused and progressing and progressing.get("reason") == PAUSED:
        set_condition(conditions, new_condition(PROGRESSING, "Unknown", RESUMED, "Deployment is resumed", now))


def note_new_set(conditions: Conditions, created: str | None, found: str | None, now: datetime) -> None:
    """Progressing when this sync creates the new set, or first finds one."""
    if created is not None:
        set_condition(conditions, new_condition(PROGRESSING, "True", NEW_SET_CREATED,
                                                f"Created new MachineSet \"{created}\"", now))
    elif found is not None and find(conditions, PROGRESSING) is None:
        set_condition(conditions, new_condition(PROGRESSING, "True", FOUND_NEW_SET,
                                                f"Found new MachineSet \"{found}\"", now))


def sets_moment(sets: list[MachineSet], now: datetime) -> datetime:
    """When the sets last reported a change (their newest lastOperation.lastUpdateTime, never after `now`).

    A set's time is derived from its Machines (hooks/mcm/machineset_status.py), so every view of the same sets gives
    the same moment; a condition stamped with it is the same whichever sync, stale or fresh, creates it."""
    moments = [parse_time(objects.mapping(ms.status, "lastOperation").get("lastUpdateTime")) for ms in sets]
    known = [m for m in moments if m is not None]
    return min(max(known), now) if known else now


def note_availability(conditions: Conditions, available: int, min_available: int, moment: datetime) -> None:
    """Available, stamped with the sets' moment (`sets_moment`), and never later than that moment while it holds.

    Why: two syncs that saw the deployment at different times (a trailing informer cache) could each create the
    condition at their own `now`; each later sync carries the time it observed, Metacontroller writes it back over
    the other, and the status alternated between the two for as long as the cache trailed (docs/reliability.md).
    Lowering a carried time to the sets' moment makes both views answer the same."""
    if available >= min_available:
        cond = new_condition(AVAILABLE, "True", MIN_AVAILABLE, "Deployment has minimum availability.", moment)
    else:
        cond = new_condition(AVAILABLE, "False", MIN_UNAVAILABLE, "Deployment does not have minimum availability.",
                             moment)
    set_condition(conditions, cond)
    _no_later_than(find(conditions, AVAILABLE), moment)


def _no_later_than(cond: dict[str, Any] | None, moment: datetime) -> None:
    """Lower a carried condition's times to `moment` when they are later (see note_availability for why)."""
    if cond is None:
        return
    stamp = carried_time(None, False, moment)
    for key in ("lastTransitionTime", "lastUpdateTime"):
        carried = parse_time(cond.get(key))
        if carried is not None and carried > moment:
            cond[key] = stamp


def with_failure(conditions: Conditions, new: MachineSet | None, sets: list[MachineSet],
                 now: datetime) -> Conditions:
    """ReplicaFailure copied from the new set's, else from the first set that has one; removed when none has."""
    failure = new.failure_condition() if new is not None else None
    if failure is None:
        failure = next((ms.failure_condition() for ms in sets if ms.failure_condition() is not None), None)
    out = [c for c in conditions if c.get("type") != REPLICA_FAILURE]
    if failure is not None:
        stamp = carried_time(failure.get("lastTransitionTime"), True, now)  # the set's own time, when it has one
        out.append({"type": REPLICA_FAILURE, "status": "True", "reason": str(failure.get("reason") or ""),
                    "message": str(failure.get("message") or ""), "lastUpdateTime": stamp,
                    "lastTransitionTime": stamp})
    return out


# ---------------------------------------------------------------------------------------------------- progress


def complete(replicas: int, status: dict[str, Any]) -> bool:
    return status["updatedReplicas"] == replicas and status["replicas"] == replicas and \
        status["availableReplicas"] == replicas


def _progressing(observed: dict[str, Any], new: dict[str, Any]) -> bool:
    def old_count(s: dict[str, Any]) -> int:
        return (as_int(s.get("replicas")) or 0) - (as_int(s.get("updatedReplicas")) or 0)

    return (
        new["updatedReplicas"] > (as_int(observed.get("updatedReplicas")) or 0)
        or old_count(new) < old_count(observed)
        or new["readyReplicas"] > (as_int(observed.get("readyReplicas")) or 0)
        or new["availableReplicas"] > (as_int(observed.get("availableReplicas")) or 0)
    )


def _timed_out(spec: dict[str, Any], cond: dict[str, Any] | None, now: datetime) -> bool:
    if not has_deadline(spec) or cond is None or cond.get("reason") == NEW_SET_AVAILABLE:
        return False
    if cond.get("reason") == TIMED_OUT:
        return True
    since = parse_time(cond.get("lastUpdateTime"))
    return since is not None and since + timedelta(seconds=spec["progressDeadlineSeconds"]) < now


def _finished(cond: dict[str, Any] | None, moment: datetime, started: datetime | None) -> None:
    """A finished rollout's Progressing times, from the sets alone: True since the new set was created, updated at
    the sets' moment. No deadline runs any more, and every view of the same sets answers the same (a time carried
    from a stale view and written back made the status alternate: note_availability)."""
    if cond is None or cond.get("reason") != NEW_SET_AVAILABLE or cond.get("status") != "True":
        return
    since = min(started, moment) if started is not None else None
    if since is not None:
        cond["lastTransitionTime"] = carried_time(None, False, since)
    cond["lastUpdateTime"] = carried_time(None, False, moment)


def _note_progress(conditions: Conditions, observed: dict[str, Any], status: dict[str, Any], spec: dict[str, Any],
                   done: bool, set_name: str, now: datetime, moment: datetime, started: datetime | None) -> None:
    """Kubernetes' syncRolloutStatus for the Progressing condition (a finished rollout's times: `_finished`)."""
    current = find(conditions, PROGRESSING)
    if status["replicas"] == status["updatedReplicas"] and current is not None and \
            current.get("reason") == NEW_SET_AVAILABLE:
        _finished(current, moment, started)
        return
    if done:
        set_condition(conditions, new_condition(PROGRESSING, "True", NEW_SET_AVAILABLE,
                                                f"MachineSet \"{set_name}\" has successfully progressed.", moment))
        _finished(find(conditions, PROGRESSING), moment, started)
    elif _progressing(observed, status):
        fresh = new_condition(PROGRESSING, "True", SET_UPDATED, f"MachineSet \"{set_name}\" is progressing.", now)
        if current is not None and current.get("status") == "True" and current.get("lastTransitionTime"):
            fresh["lastTransitionTime"] = current["lastTransitionTime"]
        conditions[:] = [c for c in conditions if c.get("type") != PROGRESSING] + [fresh]
    elif _timed_out(spec, current, now):
        set_condition(conditions, new_condition(PROGRESSING, "False", TIMED_OUT,
                                                f"MachineSet \"{set_name}\" has timed out progressing.", now))


def estimate_progress(conditions: Conditions, observed: dict[str, Any], status: dict[str, Any],
                      spec: dict[str, Any], done: bool, set_name: str, now: datetime,
                      moment: datetime | None = None, started: datetime | None = None) -> float | None:
    """Update Progressing; returns when to check the progress deadline again (None: no deadline to watch).
    `moment` (sets_moment) and `started` (the new set's creation) stamp a finished rollout; `now` when not given."""
    _note_progress(conditions, observed, status, spec, done, set_name, now, moment or now, started)
    current = find(conditions, PROGRESSING)
    if not has_deadline(spec) or current is None or done or current.get("reason") in (TIMED_OUT, NEW_SET_AVAILABLE):
        return None
    since = parse_time(current.get("lastUpdateTime"))
    if since is None:
        return None
    left = (since + timedelta(seconds=spec["progressDeadlineSeconds"]) - now).total_seconds()
    return float(max(1, math.ceil(left) + 1))


# ------------------------------------------------------------------------------------------------------ status


def counts(sets: list[MachineSet], new: MachineSet | None, desired_total: int) -> dict[str, Any]:
    """Replica counts summed over the observed sets, and their failed Machines."""
    available = sum(ms.status_int("availableReplicas") for ms in sets)
    status: dict[str, Any] = {
        "replicas": sum(ms.status_int("replicas") for ms in sets),
        "updatedReplicas": new.status_int("replicas") if new is not None else 0,
        "readyReplicas": sum(ms.status_int("readyReplicas") for ms in sets),
        "availableReplicas": available,
        "unavailableReplicas": max(0, desired_total - available),
    }
    failed = []
    for ms in sets:
        for entry in ms.status.get("failedMachines") or []:
            if isinstance(entry, dict):
                item = {k: entry[k] for k in ("name", "providerID", "ownerRef") if isinstance(entry.get(k), str)}
                item["lastOperation"] = clean_operation(entry.get("lastOperation"))
                failed.append(item)
    if failed:
        status["failedMachines"] = sorted(failed, key=lambda f: (f.get("ownerRef", ""), f.get("name", "")))
    return status


def min_available(replicas: int, strategy: rollout.Strategy) -> int:
    return replicas - rollout.max_unavailable(replicas, strategy)


def ordered(conditions: Conditions) -> Conditions:
    def key(c: dict[str, Any]) -> tuple[int, str]:
        type_ = str(c.get("type"))
        return (CONDITION_ORDER.index(type_) if type_ in CONDITION_ORDER else len(CONDITION_ORDER), type_)

    return sorted(conditions, key=key)


def shaped(status: dict[str, Any], conditions: Conditions) -> dict[str, Any]:
    """The status in a fixed key order (the API server does not care; people reading diffs do)."""
    full = {**status, "conditions": ordered(conditions)}
    return {k: full[k] for k in STATUS_ORDER if k in full}
