"""MachineSet sync hook (CompositeController `metal-machinesets`): keep `spec.replicas` Machines from the template.

Decisions, each answering a Metacontroller or bare-metal constraint:
- Child names are `<set>-<suffix>`, the suffix a hash of (set uid, slot). A sync that needs k new Machines takes the
  first k slots whose names are free, so the same observed state always asks for the same names: a sync that runs
  on a stale cache asks again for the Machine it already created instead of a second one.
- Metacontroller deletes every observed child left out of the response, so the response lists every Machine that
  stays. Machines use update strategy OnDelete (as MCM, a MachineSet never rewrites an existing Machine; a template
  change rolls out through a new MachineSet), so a kept Machine is returned as observed.
- A Machine that is being deleted (deletionTimestamp, or phase Terminating) is left out: Metacontroller does not
  delete it twice, and it cannot be kept. It does not count towards `spec.replicas`, so its replacement is created at
  once (MCM does the same); it still counts in `status.replicas`, which the deployment uses to hold back its surge.
- Failed Machines are left out (deleted; the Machine finalizer deletes the device) and replaced.
- New Machines are created at a bounded rate: at most BURST_REPLICAS per sync, and a slow start: no more Machines
  may be waiting for their device than twice the number that already got one (at least one). A class that cannot
  create devices therefore holds one Machine in CrashLoopBackOff, not the whole set. MCM's labels `freeze: "True"`
  and `node.machine.sapcloud.io/scale-up-disabled` stop creation (removal goes on).
- Scale-down victims: lowest `machinepriority.machine.sapcloud.io` first, then phase (Terminating, Failed,
  CrashLoopBackOff, Unknown, Pending, Available, Running; an empty or unknown phase counts as not started and goes
  first), then the newest Machine first (MCM leaves this tie unordered; Kubernetes' ReplicaSet removes the newest,
  which has served least), then by name so the choice is repeatable.
- An unusable spec (selector not matching the template labels, no class, a name too long for its Machines) changes
  no Machine: all observed children are returned unchanged and the status says why.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hooks.context import BadRequest, HookContext
from hooks.mcm import labels
from hooks.mcm import vocabulary as mcm
from hooks.mcm.timefmt import format_time, parse_time

MACHINE_KEY = f"Machine.{mcm.API_VERSION}"
LAST_APPLIED = "metacontroller.k8s.io/last-applied-configuration"
SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # no vowels, no look-alikes: no words, no confusion
SUFFIX_LENGTH = 5
# A Machine's name is its device's hostname (and Node name): the Go provider's limit.
MAX_MACHINE_NAME = 63
BURST_REPLICAS = 20
SLOW_START_INITIAL = 1
STARTED_PHASES = (mcm.PENDING, mcm.RUNNING, mcm.AVAILABLE, mcm.UNKNOWN)
# Lower goes first when scaling down.
DELETE_ORDER = {
    mcm.TERMINATING: 0, mcm.FAILED: 1, mcm.CRASH_LOOP: 2, mcm.UNKNOWN: 3, mcm.PENDING: 4, mcm.AVAILABLE: 5,
    mcm.RUNNING: 6,
}
REPLICA_FAILURE = "ReplicaFailure"
FREEZE_LABEL = "freeze"
SCALE_UP_DISABLED_LABEL = "node.machine.sapcloud.io/scale-up-disabled"
OP_FIELDS = ("description", "errorCode", "lastUpdateTime", "state", "type")
NAMES_SHOWN = 5


# ------------------------------------------------------------------------------------------------------ helpers


def short_hash(text: str, length: int) -> str:
    """A stable (unlike hash()) short name part in a DNS-safe alphabet."""
    number = int.from_bytes(hashlib.sha256(text.encode()).digest()[:12], "big")
    chars = []
    for _ in range(length):
        number, digit = divmod(number, len(SUFFIX_ALPHABET))
        chars.append(SUFFIX_ALPHABET[digit])
    return "".join(chars)


def machine_name(set_name: str, set_uid: str, slot: int) -> str:
    return f"{set_name}-{short_hash(f'{set_uid}/{slot}', SUFFIX_LENGTH)}"


def new_names(set_name: str, set_uid: str, count: int, taken: Iterable[str]) -> list[str]:
    """The first `count` slot names not in `taken`: the same inputs always give the same names."""
    used = set(taken)
    names: list[str] = []
    slot = 0
    while len(names) < count:
        name = machine_name(set_name, set_uid, slot)
        if name not in used:
            names.append(name)
            used.add(name)
        slot += 1
    return names


def names_list(names: list[str]) -> str:
    shown = ", ".join(names[:NAMES_SHOWN])
    return shown + (f" and {len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else "")


def plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def int_field(value: Any, path: str, problems: list[str], default: int = 0) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        problems.append(f"{path}: Invalid value: {value!r}: must be a whole number (0 or more)")
        return default
    return value


def carried_time(previous: Any, same: bool, now: datetime) -> str:
    """Keep a timestamp while what it stamps is unchanged, so an unchanged object gets an unchanged status."""
    if same and isinstance(previous, str) and parse_time(previous) is not None:
        return previous
    return format_time(now)


def condition(
    observed: list[Any], type_: str, status: str, reason: str, message: str, now: datetime, *, update_time: bool = False
) -> dict[str, Any]:
    """A condition whose lastTransitionTime only moves when its status or reason changes."""
    old = next((c for c in observed if isinstance(c, dict) and c.get("type") == type_), None)
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


# ------------------------------------------------------------------------------------------------------ machines


@dataclass(frozen=True)
class Machine:
    """One observed child, with what scaling decisions read from it."""

    name: str
    obj: dict[str, Any] = field(repr=False)
    phase: str
    deleting: bool
    priority: int
    created: str
    became: datetime | None  # currentStatus.lastUpdateTime: when it reached its phase
    labels: dict[str, Any] = field(repr=False)

    @classmethod
    def parse(cls, obj: dict[str, Any]) -> Machine:
        meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
        status = obj.get("status") if isinstance(obj.get("status"), dict) else {}
        current = status.get("currentStatus") if isinstance(status.get("currentStatus"), dict) else {}
        annotations = meta.get("annotations") if isinstance(meta.get("annotations"), dict) else {}
        try:
            priority = int(str(annotations.get(mcm.PRIORITY_ANNOTATION, mcm.DEFAULT_PRIORITY)))
        except ValueError:
            priority = int(mcm.DEFAULT_PRIORITY)
        phase = current.get("phase") if isinstance(current.get("phase"), str) else ""
        return cls(
            name=str(meta.get("name") or ""),
            obj=obj,
            phase=phase,
            deleting=bool(meta.get("deletionTimestamp")) or phase == mcm.TERMINATING,
            priority=priority,
            created=str(meta.get("creationTimestamp") or ""),
            became=parse_time(current.get("lastUpdateTime")) or parse_time(meta.get("creationTimestamp")),
            labels=meta.get("labels") if isinstance(meta.get("labels"), dict) else {},
        )

    @property
    def operation(self) -> dict[str, Any]:
        status = self.obj.get("status") if isinstance(self.obj.get("status"), dict) else {}
        return status.get("lastOperation") if isinstance(status.get("lastOperation"), dict) else {}

    @property
    def provider_id(self) -> str:
        spec = self.obj.get("spec") if isinstance(self.obj.get("spec"), dict) else {}
        return spec["providerID"] if isinstance(spec.get("providerID"), str) else ""

    @property
    def failed_operation(self) -> bool:
        return self.operation.get("state") == mcm.STATE_FAILED


def deletion_order(machines: Iterable[Machine]) -> list[Machine]:
    """Scale-down victims first (see the module docstring for the order)."""
    ordered = sorted(machines, key=lambda m: m.name)
    ordered.sort(key=lambda m: m.created, reverse=True)  # newest first; stable sorts keep the name order in ties
    ordered.sort(key=lambda m: (m.priority, DELETE_ORDER.get(m.phase, 0)))
    return ordered


def kept_child(machine: Machine) -> dict[str, Any]:
    """An existing Machine as the desired list carries it: as observed, minus what the API server owns."""
    meta = machine.obj.get("metadata") if isinstance(machine.obj.get("metadata"), dict) else {}
    out_meta: dict[str, Any] = {"name": meta.get("name"), "namespace": meta.get("namespace")}
    if machine.labels:
        out_meta["labels"] = dict(machine.labels)
    observed = meta.get("annotations") if isinstance(meta.get("annotations"), dict) else {}
    annotations = {k: v for k, v in observed.items() if k != LAST_APPLIED}
    if annotations:
        out_meta["annotations"] = annotations
    out = {"apiVersion": mcm.API_VERSION, "kind": "Machine", "metadata": out_meta}
    if isinstance(machine.obj.get("spec"), dict):
        # Shared, not copied: the request is decoded for this call alone and the answer is encoded right away, and
        # nothing between the two changes a kept Machine. Copying a thousand specs was most of a large sync's time.
        out["spec"] = machine.obj["spec"]
    return out


def new_child(name: str, namespace: str, template: dict[str, Any], selector: dict[str, Any]) -> dict[str, Any]:
    tmeta = template.get("metadata") if isinstance(template.get("metadata"), dict) else {}
    child_labels = {**(tmeta.get("labels") or {}), **(selector.get("matchLabels") or {})}
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": child_labels}
    if tmeta.get("annotations"):
        meta["annotations"] = dict(tmeta["annotations"])
    return {"apiVersion": mcm.API_VERSION, "kind": "Machine", "metadata": meta,
            "spec": copy.deepcopy(template.get("spec") or {})}


# ---------------------------------------------------------------------------------------------------- the set


def spec_problems(machine_set: dict[str, Any]) -> list[str]:
    """Why this MachineSet's children cannot be managed; every problem at once."""
    meta = machine_set.get("metadata") or {}
    spec = machine_set.get("spec") if isinstance(machine_set.get("spec"), dict) else {}
    problems: list[str] = []
    int_field(spec.get("replicas"), "spec.replicas", problems)
    int_field(spec.get("minReadySeconds"), "spec.minReadySeconds", problems)
    selector = spec.get("selector")
    selector_issues = labels.selector_problems(selector)
    problems += selector_issues
    template = spec.get("template") if isinstance(spec.get("template"), dict) else {}
    tmeta = template.get("metadata") if isinstance(template.get("metadata"), dict) else {}
    template_labels = tmeta.get("labels") if isinstance(tmeta.get("labels"), dict) else {}
    if not selector_issues and not labels.matches(selector, template_labels):
        problems.append(
            f"spec.selector: Invalid value: {selector!r}: is not matching with spec.template.metadata.labels "
            f"{template_labels!r}; Machines created from this template would not belong to the set"
        )
    problems += template_problems(template)
    longest = len(str(meta.get("name") or "")) + 1 + SUFFIX_LENGTH
    if longest > MAX_MACHINE_NAME:
        problems.append(
            f"metadata.name: Too long: its Machines would be named like {machine_name(str(meta.get('name')), '', 0)!r} "
            f"({longest} characters), but a Machine name is its device's hostname and may have at most "
            f"{MAX_MACHINE_NAME}"
        )
    return problems


def template_problems(template: dict[str, Any]) -> list[str]:
    """What keeps Machines from being built from this template (shared with the MachineDeployment hook)."""
    problems: list[str] = []
    tmeta = template.get("metadata", {})
    if not isinstance(tmeta, dict):
        problems.append("spec.template.metadata: Invalid value: must be a mapping")
        tmeta = {}
    for key in ("labels", "annotations"):
        value = tmeta.get(key)
        if value is not None and not (isinstance(value, dict) and all(isinstance(v, str) for v in value.values())):
            problems.append(f"spec.template.metadata.{key}: Invalid value: must map keys to string values")
    tspec = template.get("spec")
    if tspec is not None and not isinstance(tspec, dict):
        problems.append("spec.template.spec: Invalid value: must be a mapping")
    tspec = tspec if isinstance(tspec, dict) else {}
    class_ref = tspec.get("class") if isinstance(tspec.get("class"), dict) else {}
    if not class_ref.get("kind") or not isinstance(class_ref.get("kind"), str):
        problems.append("spec.template.spec.class.kind: Required value: Kind is required")
    if not class_ref.get("name") or not isinstance(class_ref.get("name"), str):
        problems.append("spec.template.spec.class.name: Required value: Name is required")
    return problems


@dataclass
class Plan:
    keep: list[Machine] = field(default_factory=list)
    create: list[str] = field(default_factory=list)
    remove: list[Machine] = field(default_factory=list)  # left out on purpose (scale-down or failed)
    throttled: int = 0  # missing Machines not created in this sync


def creation_budget(active: list[Machine]) -> int:
    started = sum(1 for m in active if m.phase in STARTED_PHASES)
    waiting = sum(1 for m in active if m.phase not in STARTED_PHASES)
    window = max(SLOW_START_INITIAL, 2 * started)
    return max(0, min(BURST_REPLICAS, window - waiting))


def plan(replicas: int, set_name: str, set_uid: str, machines: list[Machine], *, frozen: bool = False,
         no_scale_up: bool = False) -> Plan:
    """Which observed Machines stay, which go, and which names to create (none when `no_scale_up`)."""
    result = Plan()
    active = [m for m in machines if not m.deleting]
    if frozen:
        result.keep = active
        return result
    failed = [m for m in active if m.phase == mcm.FAILED]
    healthy = [m for m in active if m.phase != mcm.FAILED]
    result.remove = list(failed)
    if len(healthy) > replicas:
        victims = deletion_order(healthy)[: len(healthy) - replicas]
        result.remove += victims
        healthy = [m for m in healthy if m not in victims]
    result.keep = healthy
    missing = replicas - len(healthy)
    if missing > 0:
        count = 0 if no_scale_up else min(missing, creation_budget(healthy))
        result.create = new_names(set_name, set_uid, count, (m.name for m in machines))
        result.throttled = missing - count
    return result


def _failure_condition(machines: list[Machine], problems: list[str], observed: list[Any], now: datetime) -> list[Any]:
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


def availability(machines: list[Machine], min_ready: int, now: datetime) -> tuple[int, float | None]:
    """(available count, seconds until the next Machine becomes available, if one is waiting for minReadySeconds)."""
    available = 0
    soonest: float | None = None
    for m in machines:
        if m.deleting or m.phase not in (mcm.RUNNING, mcm.AVAILABLE):
            continue
        if min_ready <= 0:
            available += 1
            continue
        since = m.became
        waited = (now - since).total_seconds() if since else 0.0
        if since is not None and waited >= min_ready:
            available += 1
        else:
            left = min_ready - waited
            soonest = left if soonest is None else min(soonest, left)
    return available, soonest


def _operation(plan_: Plan, problems: list[str], machines: list[Machine], replicas: int, available: int,
               observed: Any, now: datetime, no_scale_up: bool = False) -> dict[str, Any]:
    terminating = sum(1 for m in machines if m.deleting)
    if problems:
        op = {"type": "Update", "state": mcm.STATE_FAILED,
              "description": "Spec cannot be used, no Machine changed: " + "; ".join(problems)}
    elif plan_.create or plan_.remove:
        parts = []
        if plan_.create:
            text = f"Creating {plural(len(plan_.create), 'machine')}: {names_list(plan_.create)}"
            if plan_.throttled:
                text += f" ({plan_.throttled} more after these get devices)"
            parts.append(text)
        if plan_.remove:
            parts.append(f"Deleting {plural(len(plan_.remove), 'machine')}: "
                         f"{names_list(sorted(m.name for m in plan_.remove))}")
        op = {"type": mcm.OP_CREATE if plan_.create else mcm.OP_DELETE, "state": mcm.PROCESSING,
              "description": "; ".join(parts)}
    elif plan_.throttled and no_scale_up:
        op = {"type": mcm.OP_CREATE, "state": mcm.PROCESSING,
              "description": f"Scale-up disabled by label ({FREEZE_LABEL} or {SCALE_UP_DISABLED_LABEL}): "
                             f"{plan_.throttled} missing machines not created"}
    elif plan_.throttled:
        op = {"type": mcm.OP_CREATE, "state": mcm.PROCESSING,
              "description": f"Waiting for new machines to get devices before creating {plan_.throttled} more"}
    elif available < replicas or terminating:
        waiting = [f"{available} of {plural(replicas, 'machine')} available"]
        if terminating:
            waiting.append(f"{terminating} terminating")
        op = {"type": "Update", "state": mcm.PROCESSING, "description": "Waiting: " + ", ".join(waiting)}
    else:
        op = {"type": "Update", "state": mcm.SUCCESSFUL,
              "description": f"{available} of {plural(replicas, 'machine')} available"}
    old = observed if isinstance(observed, dict) else {}
    same = all(old.get(k) == op[k] for k in ("type", "state", "description"))
    op["lastUpdateTime"] = carried_time(old.get("lastUpdateTime"), same, now)
    return op


def _parse(body: Any) -> tuple[dict[str, Any], list[Machine]]:
    parent, children = parent_and_children(body)
    group = children.get(MACHINE_KEY) or {}
    if not isinstance(group, dict):
        raise BadRequest(f"children[{MACHINE_KEY!r}] must be a map")
    machines = [Machine.parse(child_object(obj, key)) for key, obj in group.items()]
    return parent, sorted(machines, key=lambda m: m.name)


def parent_and_children(body: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The parent and children map of a CompositeController sync (shared with the MachineDeployment hook).

    A parent without a name or namespace, or a children value that is not a map, is a malformed request: HTTP 400.
    """
    if not isinstance(body, dict) or not isinstance(body.get("parent"), dict):
        raise BadRequest("request has no parent object")
    parent = body["parent"]
    meta = parent.get("metadata")
    if not isinstance(meta, dict) or not meta.get("name") or not meta.get("namespace"):
        raise BadRequest("parent.metadata must have a name and a namespace")
    children = {} if body.get("children") is None else body["children"]
    if not isinstance(children, dict):
        raise BadRequest("children must be a map")
    return parent, children


def child_object(obj: Any, key: str) -> dict[str, Any]:
    """An observed child; Metacontroller never sends one without a name, so one is a malformed request."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        raise BadRequest(f"child {key!r} has no metadata.name")
    return obj


def sync(body: dict[str, Any], ctx: HookContext) -> dict[str, Any]:
    parent, machines = _parse(body)
    return reconcile(parent, machines, ctx.clock())


def reconcile(parent: dict[str, Any], machines: list[Machine], now: datetime) -> dict[str, Any]:
    meta = parent["metadata"]
    spec = parent.get("spec") if isinstance(parent.get("spec"), dict) else {}
    observed = parent.get("status") if isinstance(parent.get("status"), dict) else {}
    problems = spec_problems(parent)
    scratch: list[str] = []
    replicas = int_field(spec.get("replicas"), "", scratch)
    min_ready = int_field(spec.get("minReadySeconds"), "", scratch)
    deleting_set = bool(meta.get("deletionTimestamp"))
    set_labels = meta.get("labels") if isinstance(meta.get("labels"), dict) else {}
    # MCM's switches, honoured as MCM does: a frozen set, or one with scale-up disabled, creates no Machine.
    no_scale_up = set_labels.get(FREEZE_LABEL) == "True" or SCALE_UP_DISABLED_LABEL in set_labels
    the_plan = plan(replicas, str(meta["name"]), str(meta.get("uid") or meta["name"]), machines,
                    frozen=bool(problems) or deleting_set, no_scale_up=no_scale_up)
    template = spec.get("template") if isinstance(spec.get("template"), dict) else {}
    children = [kept_child(m) for m in the_plan.keep]
    if not problems:
        children += [new_child(n, str(meta["namespace"]), template, spec.get("selector") or {})
                     for n in the_plan.create]
    children.sort(key=lambda c: c["metadata"]["name"])

    available, soonest = availability(machines, min_ready, now)
    tmeta = template.get("metadata") if isinstance(template.get("metadata"), dict) else {}
    template_labels = tmeta.get("labels") if isinstance(tmeta.get("labels"), dict) else {}
    live = [m for m in machines if not m.deleting]
    status: dict[str, Any] = {
        "replicas": len(machines),
        "fullyLabeledReplicas": sum(
            1 for m in live if all(m.labels.get(k) == v for k, v in template_labels.items())
        ),
        "readyReplicas": sum(1 for m in live if m.phase == mcm.RUNNING),
        "availableReplicas": available,
    }
    failed = [
        {"name": m.name, "providerID": m.provider_id,
         "lastOperation": clean_operation(m.operation), "ownerRef": str(meta["name"])}
        for m in machines if m.failed_operation
    ]
    if failed:
        status["failedMachines"] = failed
    observed_conditions = observed.get("machineSetCondition")
    conditions = _failure_condition(
        machines, problems, observed_conditions if isinstance(observed_conditions, list) else [], now
    )
    if conditions:
        status["machineSetCondition"] = conditions
    status["lastOperation"] = _operation(the_plan, problems, machines, replicas, available,
                                         observed.get("lastOperation"), now, no_scale_up)
    response: dict[str, Any] = {"status": status, "children": children}
    if soonest is not None:
        response["resyncAfterSeconds"] = float(max(1, math.ceil(soonest)))
    return response
