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
  first), then the OLDEST Machine first, then by name so the choice is repeatable: MCM's `ActiveMachines.Less`
  (pkg/controller/controller_utils.go) ends on `CreationTimestamp.Before` (Kubernetes' ReplicaSet removes the newest;
  MCM users rely on MCM's order).
- An unusable spec (selector not matching the template labels, no class, a name too long for its Machines) changes
  no Machine: all observed children are returned unchanged and the status says why.
- A set that is being deleted creates and removes nothing (MCM's reconcileClusterMachineSet calls manageReplicas
  only without a deletionTimestamp; so does Kubernetes' ReplicaSet controller). Nor does a set whose controlling
  MachineDeployment is being deleted or gone: with informer lag, Metacontroller can sync a set from a cache that
  has not seen its own deletion yet while its Machines are already going, and MCM avoids that with an uncached GET
  a hook cannot make. The customize hook relates the owner instead (hooks/mcm/set_owner.py).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from hooks import objects
from hooks.composite_request import LAST_APPLIED, child_objects, parent_and_children, without_last_applied
from hooks.context import HookContext
from hooks.mcm import fail_permit, labels, set_owner
from hooks.mcm import vocabulary as mcm
from hooks.mcm.deletion_request import (
    MARKED_PRIORITY,
    SCALER_TIME_ANNOTATION,
    deletion_marks,
    marked_for_deletion,
    with_marks,
)
from hooks.mcm.machineset_status import set_status
from hooks.mcm.naming import MAX_MACHINE_NAME, SUFFIX_LENGTH, machine_name, new_names
from hooks.mcm.text import names_list, plural
from hooks.mcm.validation import int_field, template_problems
from hooks.mcm.vocabulary import MACHINE_KEY

# `names_list` and `plural` are re-exported for hooks/mcm/machineclass.py (it imports them from here) until the
# MachineClass work merges and imports them from hooks.mcm.text; no other module should import them from here.
__all__ = ["LAST_APPLIED", "MACHINE_KEY", "Machine", "Plan", "customize", "names_list", "plural", "sync"]

BURST_REPLICAS = 20
SLOW_START_INITIAL = 1
STARTED_PHASES = (mcm.PENDING, mcm.RUNNING, mcm.AVAILABLE, mcm.UNKNOWN)
# Lower goes first when scaling down.
DELETE_ORDER = {
    mcm.TERMINATING: 0, mcm.FAILED: 1, mcm.CRASH_LOOP: 2, mcm.UNKNOWN: 3, mcm.PENDING: 4, mcm.AVAILABLE: 5,
    mcm.RUNNING: 6,
}
FREEZE_LABEL = "freeze"
SCALE_UP_DISABLED_LABEL = "node.machine.sapcloud.io/scale-up-disabled"
# While creation is held for an owner that is not seen (gone, or not in the cache yet), look again this often.
OWNER_RECHECK_SECONDS = 30.0


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
    labels: dict[str, Any] = field(repr=False)

    @classmethod
    def parse(cls, obj: dict[str, Any]) -> Machine:
        meta = objects.meta(obj)
        current = objects.mapping(obj, "status", "currentStatus")
        try:
            priority = int(str(objects.annotations(obj).get(mcm.PRIORITY_ANNOTATION, mcm.DEFAULT_PRIORITY)))
        except ValueError:
            priority = int(mcm.DEFAULT_PRIORITY)
        phase = objects.string(current, "phase")
        return cls(
            name=str(meta.get("name") or ""),
            obj=obj,
            phase=phase,
            deleting=bool(meta.get("deletionTimestamp")) or phase == mcm.TERMINATING,
            priority=priority,
            created=str(meta.get("creationTimestamp") or ""),
            labels=objects.labels(obj),
        )

    @property
    def operation(self) -> dict[str, Any]:
        return objects.mapping(self.obj, "status", "lastOperation")

    @property
    def provider_id(self) -> str:
        return objects.string(self.obj, "spec", "providerID")

    @property
    def failed_operation(self) -> bool:
        return self.operation.get("state") == mcm.STATE_FAILED


def deletion_order(machines: Iterable[Machine]) -> list[Machine]:
    """Scale-down victims first (see the module docstring for the order)."""
    ordered = sorted(machines, key=lambda m: (m.created, m.name))  # oldest first, as MCM's ActiveMachines.Less
    ordered.sort(key=lambda m: (m.priority, DELETE_ORDER.get(m.phase, 0)))
    return ordered


def kept_child(machine: Machine) -> dict[str, Any]:
    """An existing Machine as the desired list carries it: as observed, minus what the API server owns."""
    meta = objects.meta(machine.obj)
    out_meta: dict[str, Any] = {"name": meta.get("name"), "namespace": meta.get("namespace")}
    if machine.labels:
        out_meta["labels"] = dict(machine.labels)
    annotations = without_last_applied(objects.annotations(machine.obj))
    if annotations:
        out_meta["annotations"] = annotations
    out = {"apiVersion": mcm.API_VERSION, "kind": "Machine", "metadata": out_meta}
    if isinstance(machine.obj.get("spec"), dict):
        # Shared, not copied: the request is decoded for this call alone and the answer is encoded right away, and
        # nothing between the two changes a kept Machine. Copying a thousand specs was most of a large sync's time.
        out["spec"] = machine.obj["spec"]
    return out


def new_child(name: str, namespace: str, template: dict[str, Any], selector: dict[str, Any]) -> dict[str, Any]:
    tmeta = objects.mapping(template, "metadata")
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
    spec = objects.mapping(machine_set, "spec")
    problems: list[str] = []
    int_field(spec.get("replicas"), "spec.replicas", problems)
    int_field(spec.get("minReadySeconds"), "spec.minReadySeconds", problems)
    selector = spec.get("selector")
    selector_issues = labels.selector_problems(selector)
    problems += selector_issues
    template = objects.mapping(spec, "template")
    template_labels = objects.mapping(template, "metadata", "labels")
    if not selector_issues and not labels.matches(objects.mapping(spec, "selector"), template_labels):
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
         no_scale_up: bool = False, first: frozenset[str] = frozenset()) -> Plan:
    """Which observed Machines stay, which go, and which names to create (none when `no_scale_up`); `first` names
    Machines marked for deletion (MCM's getMachinesMarkedForDeletion): victims before any other."""
    result = Plan()
    active = [m for m in machines if not m.deleting]
    if frozen:
        result.keep = active
        return result
    failed = [m for m in active if m.phase == mcm.FAILED]
    healthy = [m for m in active if m.phase != mcm.FAILED]
    result.remove = list(failed)
    if len(healthy) > replicas:
        victims = sorted(deletion_order(healthy), key=lambda m: m.name not in first)[: len(healthy) - replicas]
        result.remove += victims
        healthy = [m for m in healthy if m not in victims]
    result.keep = healthy
    missing = replicas - len(healthy)
    if missing > 0:
        count = 0 if no_scale_up else min(missing, creation_budget(healthy))
        result.create = new_names(set_name, set_uid, count, (m.name for m in machines))
        result.throttled = missing - count
    return result


# ---------------------------------------------------------------------------------------------------- the hooks


def customize(body: dict[str, Any], ctx: HookContext) -> dict[str, Any]:
    """Related objects: the set's controlling MachineDeployment, so a sync can see it being deleted, and every Machine
    of its deployment, so it can decide which one may be marked Failed (hooks/mcm/fail_permit.py)."""
    parent, _ = parent_and_children(body)  # a customize request has no children: an empty map
    rules = set_owner.related_rules(parent)
    group = fail_permit.group_rule(parent)
    if group is not None:
        rules.append(group)
    return {"relatedResources": rules}


def _parse(body: Any) -> tuple[dict[str, Any], list[Machine]]:
    parent, children = parent_and_children(body)
    group = children.get(MACHINE_KEY) or {}  # any empty value counts as no Machines, as it always has
    machines = [Machine.parse(obj) for obj in child_objects(group, MACHINE_KEY)]
    return parent, sorted(machines, key=lambda m: m.name)


def sync(body: dict[str, Any], ctx: HookContext) -> dict[str, Any]:
    parent, machines = _parse(body)
    related = objects.children(body, "related", MACHINE_KEY)
    group = fail_permit.group_of([m.obj for m in machines], related, parent)
    return reconcile(parent, machines, ctx.clock(), owner_problem=set_owner.owner_problem(parent, body), group=group)


def held_reason(parent: dict[str, Any], owner_problem: str | None) -> str | None:
    """Why this set must neither create nor remove Machines now: it, or its owner, is going away."""
    if objects.meta(parent).get("deletionTimestamp"):
        return "the MachineSet is being deleted"
    return owner_problem


def marked(parent: dict[str, Any], machines: list[Machine], now: datetime) -> tuple[list[Machine], frozenset[str]]:
    """Delete on request (hooks/mcm/deletion_request.py): the Machines as MCM's marks would leave them (priority 1
    for the named ones) and those marked at or before the set's scaler time. The marks are a view for the deletion
    order only: the Machines themselves are not rewritten (they are OnDelete children)."""
    notes = objects.annotations(parent)
    marks = deletion_marks(notes, [m.obj for m in machines], now)
    if marks is None or not marks.remaining:
        return machines, frozenset()
    viewed = with_marks([m.obj for m in machines], marks)
    names = {objects.name(obj) for obj in viewed
             if objects.annotations(obj).get(mcm.PRIORITY_ANNOTATION) == MARKED_PRIORITY}
    first = frozenset(marked_for_deletion(viewed, notes.get(SCALER_TIME_ANNOTATION) or marks.scaler_time))
    return [replace(m, priority=int(MARKED_PRIORITY)) if m.name in names else m for m in machines], first


def reconcile(parent: dict[str, Any], machines: list[Machine], now: datetime,
              owner_problem: str | None = None, group: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The desired Machines and the status of one MachineSet (`owner_problem`: see hooks/mcm/set_owner.py; `group`:
    the Machines of its deployment, see hooks/mcm/fail_permit.py; None: its own)."""
    meta = parent["metadata"]
    spec = objects.mapping(parent, "spec")
    problems = spec_problems(parent)
    scratch: list[str] = []
    replicas = int_field(spec.get("replicas"), "", scratch)
    held = held_reason(parent, owner_problem)
    set_labels = objects.labels(parent)
    # MCM's switches, honoured as MCM does: a frozen set, or one with scale-up disabled, creates no Machine.
    no_scale_up = set_labels.get(FREEZE_LABEL) == "True" or SCALE_UP_DISABLED_LABEL in set_labels
    viewed, first = marked(parent, machines, now)
    the_plan = plan(replicas, str(meta["name"]), str(meta.get("uid") or meta["name"]), viewed,
                    frozen=bool(problems) or held is not None, no_scale_up=no_scale_up, first=first)
    template = objects.mapping(spec, "template")
    children = [kept_child(m) for m in the_plan.keep]
    if not problems:
        children += [new_child(n, str(meta["namespace"]), template, spec.get("selector") or {})
                     for n in the_plan.create]
    children.sort(key=lambda c: c["metadata"]["name"])
    status = set_status(parent, machines, the_plan, problems, now, no_scale_up=no_scale_up, held=held,
                        group=[m.obj for m in machines] if group is None else group)
    response: dict[str, Any] = {"status": status, "children": children}
    if owner_problem is not None and not objects.meta(parent).get("deletionTimestamp"):
        # An owner not seen may only be missing from a lagging cache: look again (a related event also wakes us).
        response["resyncAfterSeconds"] = min(response.get("resyncAfterSeconds", OWNER_RECHECK_SECONDS),
                                             OWNER_RECHECK_SECONDS)
    return response
