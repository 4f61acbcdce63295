"""MachineDeployment sync hook (CompositeController `metal-machinedeployments`, children MachineSets, InPlace).

A sync runs in stages, each a module of its own:
- plan (hooks/mcm/deployment_plan.py): which set is new (name collisions), pause, one rollout step of the
  Kubernetes Deployment controller (hooks/mcm/rollout.py);
- children (same module): the desired MachineSets and the revision history;
- conditions and status (hooks/mcm/deployment_status.py): counts, Available, Progressing, ReplicaFailure, and when
  to look at the progress deadline again.
The sets themselves (naming, hashing, reading, checking, declaring) are in hooks/mcm/deployment_sets.py.

A deployment that is being deleted, or whose spec cannot be used, creates and resizes nothing: every live set is
declared as observed and only the status is written (Kubernetes' syncDeployment and MCM's
reconcileClusterMachineDeployment call syncStatusOnly for a deployment with a deletionTimestamp).

One more guard, ours: when every set is gone although the last status counted Machines, the sets were deleted under
the deployment, most often by the garbage collector after the deployment itself was deleted, seen here from a cache
that lags. That sync writes the status only (replicas 0) and the next one, woken by that write, creates the new set;
if the deployment is really gone the write fails and nothing was created. A set deleted by hand is replaced one sync
later than in Kubernetes, which has no such guard.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

from hooks import objects
from hooks.composite_request import LAST_APPLIED, child_objects, parent_and_children
from hooks.context import HookContext
from hooks.mcm import deployment_plan as steps
from hooks.mcm import deployment_status as conds
from hooks.mcm import rollback
from hooks.mcm.deletion_request import (
    SCALER_TIME_ANNOTATION,
    SET_DELETION_ANNOTATION,
    TRIGGER_DELETION_ANNOTATION,
    entries,
)
from hooks.mcm.deployment_sets import (
    DESIRED,
    HASH_LABEL,
    MAX_REPLICAS,
    REVISION,
    SET_KEY,
    MachineSet,
    as_int,
    spec_problems,
    strategy,
    template_hash,
)
from hooks.mcm.timefmt import parse_time

# The names callers and tests know this module by.
__all__ = ["DESIRED", "HASH_LABEL", "LAST_APPLIED", "MAX_REPLICAS", "REVISION", "SET_KEY", "MachineSet",
           "reconcile", "spec_problems", "sync", "template_hash"]


def _parse(body: Any) -> tuple[dict[str, Any], list[MachineSet]]:
    parent, children = parent_and_children(body)
    sets = [MachineSet(obj) for obj in child_objects(children.get(SET_KEY), SET_KEY)]
    return parent, sorted(sets, key=lambda ms: ms.view.name)


def sync(body: dict[str, Any], ctx: HookContext) -> dict[str, Any]:
    parent, sets = _parse(body)
    return reconcile(parent, sets, ctx.clock())


def reconcile(parent: dict[str, Any], sets: list[MachineSet], now: datetime) -> dict[str, Any]:
    """The desired MachineSets and the status of one MachineDeployment: plan, children, conditions, status."""
    spec = objects.mapping(parent, "spec")
    observed = objects.mapping(parent, "status")
    observed_conditions = conds.observed_conditions(observed)
    conditions = copy.deepcopy(observed_conditions)
    problems = spec_problems(parent)
    if problems or objects.meta(parent).get("deletionTimestamp"):
        return _status_only(sets, problems, observed_conditions, conditions, now)
    if steps.sets_vanished(observed, sets):
        return {**_status_only(sets, [], observed_conditions, conditions, now),
                "resyncAfterSeconds": steps.VANISHED_RECHECK_SECONDS}

    # spec.rollbackTo: the template rolled back to becomes the effective one, applied once (hooks/mcm/rollback.py).
    spec, rolled_back = rollback.effective(parent, sets, observed_conditions, now)
    conditions = [c for c in conditions if c.get("type") != rollback.CONDITION] + rolled_back
    how = strategy(spec)
    conds.check_paused(conditions, bool(spec.get("paused")), now)
    step = steps.plan(str(parent["metadata"]["name"]), spec, sets, how, as_int(observed.get("replicas")) or 0)
    children = steps.children(step, spec, str(parent["metadata"]["namespace"]))
    conds.note_new_set(conditions, step.created.name if step.created is not None else None,
                       step.new.view.name if step.new is not None else None, now)

    status = conds.counts(sets, step.new, sum(int(c["spec"]["replicas"]) for c in children))
    done = conds.complete(step.replicas, status)
    if done or spec.get("paused"):  # revision history only once the rollout is done (or paused), as Kubernetes
        children = steps.without_history(children, step, spec)
    children.sort(key=lambda c: c["metadata"]["name"])
    _pass_deletion_request(parent, children)

    moment = conds.sets_moment(sets, now)
    conds.note_availability(conditions, status["availableReplicas"], conds.min_available(step.replicas, how), moment)
    started = parse_time(step.new.meta.get("creationTimestamp")) if step.new is not None else None
    resync = None if step.scaling_only else conds.estimate_progress(conditions, observed, status, spec, done,
                                                                    step.new_name, now, moment, started)
    conditions = conds.with_failure(conditions, step.new, sets, now)
    response: dict[str, Any] = {"status": conds.shaped(status, conditions), "children": children}
    if resync is not None:
        response["resyncAfterSeconds"] = resync
    return response


def _pass_deletion_request(parent: dict[str, Any], children: list[dict[str, Any]]) -> None:
    """Delete on request (docs/nodes.md): the deployment's `trigger-deletion-by-mcm` list, normalised, and its
    scaler time go to every set it declares (the set's hook orders its scale-down by them); removed with the list.

    The scaler time is the deployment's, else the newest entry's time: never "now", which would change the sets on
    every sync."""
    notes = objects.annotations(parent)
    scaler = str(notes.get(SCALER_TIME_ANNOTATION) or "")
    found = entries(notes.get(TRIGGER_DELETION_ANNOTATION), scaler)
    scaler = scaler or max((e.marked_at for e in found), default="")
    for child in children:
        annotations = child["metadata"].setdefault("annotations", {})
        if found:
            annotations[SET_DELETION_ANNOTATION] = ",".join(e.text() for e in found)
            annotations[SCALER_TIME_ANNOTATION] = scaler
        else:
            annotations.pop(SET_DELETION_ANNOTATION, None)
            annotations.pop(SCALER_TIME_ANNOTATION, None)
        if not annotations:
            del child["metadata"]["annotations"]


def _status_only(sets: list[MachineSet], problems: list[str], observed_conditions: list[dict[str, Any]],
                 conditions: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    """Every live set as observed, and the status: a deployment being deleted or with an unusable spec."""
    live = [ms for ms in sets if not ms.deleting]
    status = conds.counts(sets, None, sum(ms.observed_replicas for ms in live))
    if problems:
        conditions = conds.invalid_spec(observed_conditions, conditions, problems, now)
    return {"status": conds.shaped(status, conditions), "children": steps.unchanged(sets)}
