"""Machine status in MCM's shape, built so that the same observation always yields the same status.

Metacontroller writes back whatever a decorator returns, and every write triggers another sync; a timestamp that
moved on every call would loop forever. So `lastUpdateTime` only moves when the phase (currentStatus) or the
operation (lastOperation description/state/type/errorCode) changes, and is otherwise copied from the observed
status. Only fields MCM's Machine CRD defines are produced: anything else would be pruned by the API server.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hooks import objects
from hooks.mcm import vocabulary as mcm
from hooks.mcm.timefmt import format_time, parse_time

# lastHeartbeatTime is left out on purpose: a kubelet moves it on every status report without any change in
# health, and copying it made every heartbeat a Machine status write, and so a MachineSet and MachineClass sync
# (docs/machines.md, "Node conditions"). lastTransitionTime only moves when a condition's status does.
_CONDITION_FIELDS = ("type", "status", "lastTransitionTime", "reason", "message")


@dataclass(frozen=True)
class Operation:
    """An MCM lastOperation without its timestamp (which build_status decides)."""

    description: str
    state: str
    type: str
    error_code: str = ""

    def as_key(self) -> tuple[str, str, str, str]:
        return (self.description, self.state, self.type, self.error_code)


def observed_phase(status: Any) -> str:
    current = (status or {}).get("currentStatus") if isinstance(status, dict) else None
    phase = current.get("phase") if isinstance(current, dict) else None
    return phase if isinstance(phase, str) else ""


def observed_operation(status: Any) -> dict[str, Any]:
    op = status.get("lastOperation") if isinstance(status, dict) else None
    return op if isinstance(op, dict) else {}


def _op_key(op: dict[str, Any]) -> tuple[str, str, str, str]:
    return tuple(str(op.get(k) or "") for k in ("description", "state", "type", "errorCode"))  # type: ignore[return-value]


def operation_since(observed: Any, operation: Operation, now: datetime) -> str:
    """The lastUpdateTime `build_status` gives `operation`: the observed one when nothing changed, else now."""
    old_op = observed_operation(observed)
    if _op_key(old_op) == operation.as_key() and parse_time(old_op.get("lastUpdateTime")) is not None:
        return str(old_op["lastUpdateTime"])
    return format_time(now)


def build_status(
    observed: Any,
    *,
    phase: str,
    operation: Operation | None,
    now: datetime,
    last_known_state: str | None = None,
    addresses: list[dict[str, str]] | None = None,
    conditions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The full status to write; `operation=None` keeps the observed lastOperation as it is."""
    observed = observed if isinstance(observed, dict) else {}
    current = observed.get("currentStatus") if isinstance(observed.get("currentStatus"), dict) else {}
    same_phase = observed_phase(observed) == phase and parse_time(current.get("lastUpdateTime")) is not None
    status: dict[str, Any] = {
        "currentStatus": {
            "phase": phase,
            "timeoutActive": phase in (mcm.PENDING, mcm.CRASH_LOOP, mcm.UNKNOWN),
            "lastUpdateTime": current["lastUpdateTime"] if same_phase else format_time(now),
        }
    }
    old_op = observed_operation(observed)
    if operation is None and old_op:
        status["lastOperation"] = {
            k: old_op[k] for k in ("description", "state", "type", "errorCode", "lastUpdateTime") if old_op.get(k)
        }
    elif operation is not None:
        op: dict[str, Any] = {"description": operation.description, "state": operation.state, "type": operation.type}
        if operation.error_code:
            op["errorCode"] = operation.error_code
        op["lastUpdateTime"] = operation_since(observed, operation, now)
        status["lastOperation"] = op
    if last_known_state is None:
        kept = observed.get("lastKnownState")
        if isinstance(kept, str) and kept:
            status["lastKnownState"] = kept
    elif last_known_state:
        status["lastKnownState"] = last_known_state
    if addresses is None:
        addresses = _dicts(observed.get("addresses"))
    if addresses:
        status["addresses"] = addresses
    if conditions is None:
        conditions = _dicts(observed.get("conditions"))
    if conditions:
        status["conditions"] = conditions
    return status


def node_conditions(node: Any) -> list[dict[str, Any]]:
    """The Node's conditions, limited to the fields a Machine's status.conditions may hold."""
    result = []
    for cond in objects.mappings(node, "status", "conditions"):
        if cond.get("type") and cond.get("status"):
            result.append({k: cond[k] for k in _CONDITION_FIELDS if cond.get(k) not in (None, "")})
    return result


def describe_conditions(conditions: Iterable[dict[str, Any]]) -> str:
    text = ", ".join(f"{c.get('type')}={c.get('status')}" for c in conditions)
    return text or "none reported"


def unhealthy_condition_types(machine: Any) -> tuple[str, ...]:
    """The Node conditions that must be False: the Machine's `spec.nodeConditions` (comma-separated) when set,
    else MCM's default list (MCM's getEffectiveNodeConditions in machine_util.go: the Machine's list replaces the
    `--node-conditions` flag, it does not add to it)."""
    spec = machine.get("spec") if isinstance(machine, dict) else None
    value = spec.get("nodeConditions") if isinstance(spec, dict) else None
    if isinstance(value, str):
        return tuple(value.split(","))
    return mcm.UNHEALTHY_NODE_CONDITIONS


def node_is_healthy(node: Any, unhealthy: tuple[str, ...] = mcm.UNHEALTHY_NODE_CONDITIONS) -> bool:
    """MCM's isHealthy: Ready is True and none of the `unhealthy` conditions is anything but False."""
    conditions = node_conditions(node)
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
    bad = any(c["type"] in unhealthy and c["status"] != "False" for c in conditions)
    return ready and not bad


def node_has_critical_taint(node: Any) -> bool:
    spec = node.get("spec") if isinstance(node, dict) else None
    taints = _dicts(spec.get("taints")) if isinstance(spec, dict) else []
    return any(t.get("key") == mcm.CRITICAL_COMPONENTS_TAINT for t in taints)


def _dicts(value: Any) -> list[dict[str, Any]]:
    """The mappings in a list; anything else (a malformed field) counts as empty."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def backoff(now: datetime, since: Any, *, base: float = 5.0, cap: float = 300.0) -> float:
    """Seconds until the next try, growing with the time a problem has lasted, so no counter is needed."""
    started = parse_time(since)
    elapsed = (now - started).total_seconds() if started else 0.0
    return float(min(cap, max(base, elapsed)))
