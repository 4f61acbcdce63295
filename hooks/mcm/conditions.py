"""Status pieces the MachineSet and MachineDeployment hooks share: conditions, carried timestamps, operations.

An unchanged object must get an unchanged status (every status write wakes the owner's controller), so times are
carried over while what they stamp stays the same.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hooks import objects
from hooks.mcm.timefmt import format_time, parse_time

REPLICA_FAILURE = "ReplicaFailure"
# The lastOperation fields MCM's MachineSet/MachineDeployment status keeps of a failed Machine.
OP_FIELDS = ("description", "errorCode", "lastUpdateTime", "state", "type")


def carried_time(previous: Any, same: bool, now: datetime) -> str:
    """Keep a timestamp while what it stamps is unchanged, so an unchanged object gets an unchanged status."""
    if same and isinstance(previous, str) and parse_time(previous) is not None:
        return previous
    return format_time(now)


def condition(
    observed: list[Any], type_: str, status: str, reason: str, message: str, now: datetime, *, update_time: bool = False
) -> dict[str, Any]:
    """A condition whose lastTransitionTime only moves when its status or reason changes."""
    old = next((c for c in objects.mappings(observed) if c.get("type") == type_), None)
    same = old is not None and old.get("status") == status and old.get("reason") == reason
    out = {"type": type_, "status": status, "reason": reason, "message": message,
           "lastTransitionTime": carried_time(old.get("lastTransitionTime") if old else None, same, now)}
    if update_time:
        out["lastUpdateTime"] = carried_time(old.get("lastUpdateTime") if old else None, same, now)
    return out


def clean_operation(op: Any) -> dict[str, Any]:
    """A Machine's lastOperation with only the fields MCM's MachineSet/MachineDeployment status keeps."""
    if not isinstance(op, dict):
        return {}
    return {k: op[k] for k in OP_FIELDS if isinstance(op.get(k), str) and op.get(k)}
