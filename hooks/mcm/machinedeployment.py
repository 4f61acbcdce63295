"""MachineDeployment sync hook (CompositeController `metal-machinedeployments`, children MachineSets, InPlace).

Each sync is one step of the Kubernetes Deployment controller (see hooks/mcm/rollout.py), computed from the observed
MachineSets and their status alone:
- the new MachineSet is named `<deployment>-<hash>`, the hash of the template (sha256, stable across processes),
  and carries the label `machine-template-hash=<hash>` on itself, in its selector and in its template;
- RollingUpdate grows the new set within maxSurge and shrinks old ones while replicas - maxUnavailable stay
  available; Recreate empties old sets, waits until their Machines are gone, then fills the new one;
- a resize (spec.replicas differs from the sets' desired-replicas annotation) or a paused deployment only scales,
  in proportion to the sets' sizes during a rollout; a paused deployment makes no rollout progress;
- old, empty sets beyond revisionHistoryLimit (unset: keep all, as MCM) are left out, so Metacontroller deletes them.

Status follows MCM: the Progressing condition is always kept (MCM's behaviour; Kubernetes only keeps it with a
progress deadline) and only times out when progressDeadlineSeconds is set. Condition timestamps move only when a
condition's status or reason changes, or (Progressing) when the rollout makes progress, so an unchanged deployment
gets an unchanged status.
"""

from __future__ import annotations

import copy
import json
import math
from datetime import datetime, timedelta
from typing import Any

from hooks.context import BadRequest, HookContext
from hooks.mcm import labels, rollout
from hooks.mcm import vocabulary as mcm
from hooks.mcm.machineset import (
    LAST_APPLIED,
    MAX_MACHINE_NAME,
    REPLICA_FAILURE,
    SUFFIX_LENGTH,
    carried_time,
    child_object,
    clean_operation,
    condition,
    int_field,
    parent_and_children,
    short_hash,
    template_problems,
)
from hooks.mcm.timefmt import parse_time

SET_KEY = f"MachineSet.{mcm.API_VERSION}"
HASH_LABEL = "machine-template-hash"
HASH_LENGTH = 8
REVISION = "deployment.kubernetes.io/revision"
DESIRED = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
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


def _int(value: Any) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def template_hash(template: dict[str, Any], collision: int = 0) -> str:
    """The hash of a template without our own label, so a set's hash label never changes its hash.

    `collision` > 0 gives the next candidate when the name is held by a set with another template.
    """
    clean = copy.deepcopy(template)
    meta = clean.get("metadata") if isinstance(clean.get("metadata"), dict) else None
    if meta and isinstance(meta.get("labels"), dict):
        meta["labels"].pop(HASH_LABEL, None)
    text = json.dumps(clean, sort_keys=True, separators=(",", ":"))
    return short_hash(text + (f"#{collision}" if collision else ""), HASH_LENGTH)


def _same_template(a: Any, b: Any) -> bool:
    return isinstance(a, dict) and isinstance(b, dict) and template_hash(a) == template_hash(b)


class MachineSet:
    """One observed child set and the view the rollout arithmetic changes."""

    def __init__(self, obj: dict[str, Any]):
        self.obj = obj
        meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
        self.meta = meta
        self.spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
        self.status = obj.get("status") if isinstance(obj.get("status"), dict) else {}
        self.annotations = meta.get("annotations") if isinstance(meta.get("annotations"), dict) else {}
        self.deleting = bool(meta.get("deletionTimestamp"))
        replicas = _int(self.spec.get("replicas")) or 0
        self.view = rollout.SetView(
            name=str(meta.get("name") or ""),
            replicas=0 if self.deleting else replicas,
            status_replicas=_int(self.status.get("replicas")) or 0,
            available=_int(self.status.get("availableReplicas")) or 0,
            created=str(meta.get("creationTimestamp") or "") or None,
            revision=_int(self.annotations.get(REVISION)) or 0,
            desired_annotation=_int(self.annotations.get(DESIRED)),
            max_annotation=_int(self.annotations.get(MAX_REPLICAS)),
        )
        self.observed_replicas = replicas

    def status_int(self, key: str) -> int:
        return _int(self.status.get(key)) or 0

    def failure_condition(self) -> dict[str, Any] | None:
        for cond in self.status.get("machineSetCondition") or []:
            if isinstance(cond, dict) and cond.get("type") == REPLICA_FAILURE and cond.get("status") == "True":
                return cond
        return None


# -------------------------------------------------------------------------------------------------- validation


def _strategy(spec: dict[str, Any]) -> rollout.Strategy:
    raw = spec.get("strategy") if isinstance(spec.get("strategy"), dict) else {}
    kind = raw.get("type") or rollout.ROLLING
    rolling = raw.get("rollingUpdate") if isinstance(raw.get("rollingUpdate"), dict) else {}
    surge = rolling.get("maxSurge", rollout.DEFAULT_SURGE)
    unavailable = rolling.get("maxUnavailable", rollout.DEFAULT_UNAVAILABLE)
    return rollout.Strategy(type=str(kind), max_surge=surge, max_unavailable=unavailable)


def spec_problems(deployment: dict[str, Any]) -> list[str]:
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") if isinstance(deployment.get("spec"), dict) else {}
    problems: list[str] = []
    for key in ("replicas", "minReadySeconds"):
        int_field(spec.get(key), f"spec.{key}", problems)
    for key in ("revisionHistoryLimit", "progressDeadlineSeconds"):
        int_field(spec.get(key), f"spec.{key}", problems)
    if spec.get("paused") is not None and not isinstance(spec.get("paused"), bool):
        problems.append(f"spec.paused: Invalid value: {spec.get('paused')!r}: must be true or false")
    selector = spec.get("selector")
    selector_issues = labels.selector_problems(selector)
    problems += selector_issues
    template = spec.get("template")
    if not isinstance(template, dict):
        problems.append("spec.template: Required value")
        template = {}
    tmeta = template.get("metadata") if isinstance(template.get("metadata"), dict) else {}
    template_labels = tmeta.get("labels") if isinstance(tmeta.get("labels"), dict) else {}
    if not selector_issues and not labels.matches(selector, template_labels):
        problems.append(
            f"spec.selector: Invalid value: {selector!r}: is not matching with spec.template.metadata.labels "
            f"{template_labels!r}"
        )
    problems += template_problems(template)
    problems += rollout.strategy_problems(_strategy(spec))
    name = str(meta.get("name") or "")
    longest = len(name) + 1 + HASH_LENGTH + 1 + SUFFIX_LENGTH
    if longest > MAX_MACHINE_NAME:
        problems.append(
            f"metadata.name: Too long: its Machines would have names of {longest} characters (name-hash-suffix), "
            f"but a Machine name is its device's hostname and may have at most {MAX_MACHINE_NAME}; use at most "
            f"{MAX_MACHINE_NAME - (longest - len(name))} characters"
        )
    return problems


# ------------------------------------------------------------------------------------------------------ children


def _echo(ms: MachineSet, replicas: int, annotations: dict[str, str], extra_spec: dict[str, Any]) -> dict[str, Any]:
    """An existing set as desired: as observed, with new replicas (and annotations) where the step changed them."""
    meta: dict[str, Any] = {"name": ms.meta.get("name"), "namespace": ms.meta.get("namespace")}
    if isinstance(ms.meta.get("labels"), dict) and ms.meta["labels"]:
        meta["labels"] = dict(ms.meta["labels"])
    merged = {k: v for k, v in ms.annotations.items() if k != LAST_APPLIED}
    merged.update(annotations)
    if merged:
        meta["annotations"] = merged
    spec = copy.deepcopy(ms.spec)
    spec["replicas"] = replicas
    spec.update(extra_spec)
    return {"apiVersion": mcm.API_VERSION, "kind": "MachineSet", "metadata": meta, "spec": spec}


def _new_set(name: str, namespace: str, spec: dict[str, Any], hash_: str, replicas: int,
             annotations: dict[str, str]) -> dict[str, Any]:
    template = copy.deepcopy(spec["template"])
    tmeta = template.setdefault("metadata", {})
    tmeta["labels"] = {**(tmeta.get("labels") or {}), HASH_LABEL: hash_}
    set_spec: dict[str, Any] = {
        "replicas": replicas,
        "selector": labels.with_label(spec["selector"], HASH_LABEL, hash_),
        "template": template,
    }
    if spec.get("minReadySeconds"):
        set_spec["minReadySeconds"] = spec["minReadySeconds"]
    return {
        "apiVersion": mcm.API_VERSION,
        "kind": "MachineSet",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(tmeta["labels"]),
                     "annotations": annotations},
        "spec": set_spec,
    }


# ------------------------------------------------------------------------------------------------------ status


def _has_deadline(spec: dict[str, Any]) -> bool:
    value = spec.get("progressDeadlineSeconds")
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < MAX_INT32


def _set_condition(conditions: list[dict[str, Any]], new: dict[str, Any], now: datetime) -> None:
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


def _new_condition(type_: str, status: str, reason: str, message: str, now: datetime) -> dict[str, Any]:
    stamp = carried_time(None, False, now)
    return {"type": type_, "status": status, "lastUpdateTime": stamp, "lastTransitionTime": stamp,
            "reason": reason, "message": message}


def _find(conditions: list[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)


def _complete(replicas: int, status: dict[str, Any]) -> bool:
    return status["updatedReplicas"] == replicas and status["replicas"] == replicas and \
        status["availableReplicas"] == replicas


def _progressing(observed: dict[str, Any], new: dict[str, Any]) -> bool:
    def old_count(s: dict[str, Any]) -> int:
        return (_int(s.get("replicas")) or 0) - (_int(s.get("updatedReplicas")) or 0)

    return (
        new["updatedReplicas"] > (_int(observed.get("updatedReplicas")) or 0)
        or old_count(new) < old_count(observed)
        or new["readyReplicas"] > (_int(observed.get("readyReplicas")) or 0)
        or new["availableReplicas"] > (_int(observed.get("availableReplicas")) or 0)
    )


def _timed_out(spec: dict[str, Any], cond: dict[str, Any] | None, now: datetime) -> bool:
    if not _has_deadline(spec) or cond is None or cond.get("reason") == NEW_SET_AVAILABLE:
        return False
    if cond.get("reason") == TIMED_OUT:
        return True
    since = parse_time(cond.get("lastUpdateTime"))
    return since is not None and since + timedelta(seconds=spec["progressDeadlineSeconds"]) < now


def _counts(sets: list[MachineSet], new: MachineSet | None, desired_total: int) -> dict[str, Any]:
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


# ---------------------------------------------------------------------------------------------------- the hook


def _parse(body: Any) -> tuple[dict[str, Any], list[MachineSet]]:
    parent, children = parent_and_children(body)
    group = children.get(SET_KEY)
    if group is not None and not isinstance(group, dict):
        raise BadRequest(f"children[{SET_KEY!r}] must be a map")
    sets = [MachineSet(child_object(obj, key)) for key, obj in (group or {}).items()]
    return parent, sorted(sets, key=lambda ms: ms.view.name)


def sync(body: dict[str, Any], ctx: HookContext) -> dict[str, Any]:
    parent, sets = _parse(body)
    return reconcile(parent, sets, ctx.clock())


def reconcile(parent: dict[str, Any], sets: list[MachineSet], now: datetime) -> dict[str, Any]:
    meta = parent["metadata"]
    spec = parent.get("spec") if isinstance(parent.get("spec"), dict) else {}
    observed = parent.get("status") if isinstance(parent.get("status"), dict) else {}
    observed_conditions = [c for c in observed.get("conditions") or [] if isinstance(c, dict) and c.get("type")]
    conditions = copy.deepcopy(observed_conditions)
    problems = spec_problems(parent)
    strategy = _strategy(spec)
    live = [ms for ms in sets if not ms.deleting]

    if problems or meta.get("deletionTimestamp"):
        children = [_echo(ms, ms.observed_replicas, {}, {}) for ms in live]
        status = _counts(sets, None, sum(ms.observed_replicas for ms in live))
        if problems:
            reason_cond = condition(observed_conditions, REPLICA_FAILURE, "True", "InvalidSpec",
                                    "Spec cannot be used, no MachineSet changed: " + "; ".join(problems), now,
                                    update_time=True)
            conditions = [c for c in conditions if c.get("type") != REPLICA_FAILURE] + [reason_cond]
        status["conditions"] = _ordered(conditions)
        return {"status": _shaped(status), "children": children}

    replicas: int = spec.get("replicas") or 0
    paused = bool(spec.get("paused"))
    name, namespace = str(meta["name"]), str(meta["namespace"])
    # The new set is the oldest live one with this template, whatever its name (one MCM made, say). A new one
    # takes the hash name, or the next candidate if a set with another template holds that name.
    new = next((ms for ms in sorted(live, key=lambda ms: rollout.created_key(ms.view))
                if _same_template(ms.spec.get("template"), spec["template"])), None)
    taken = {ms.view.name for ms in sets}
    collision = 0
    while f"{name}-{template_hash(spec['template'], collision)}" in taken and new is None:
        collision += 1
    hash_ = template_hash(spec["template"], collision)
    new_name = new.view.name if new is not None else f"{name}-{hash_}"
    olds = [ms for ms in sets if ms is not new]
    old_views = [ms.view for ms in olds]
    max_old_revision = max((v.revision for v in old_views), default=0)
    surge = rollout.max_surge(replicas, strategy)

    # Progressing bookkeeping that happens before any step (Kubernetes' checkPausedConditions).
    progressing = _find(conditions, PROGRESSING)
    if not (progressing and progressing.get("reason") == TIMED_OUT):
        if paused and not (progressing and progressing.get("reason") == PAUSED):
            _set_condition(conditions, _new_condition(PROGRESSING, "Unknown", PAUSED, "Deployment is paused", now),
                           now)
        elif not paused and progressing and progressing.get("reason") == PAUSED:
            _set_condition(conditions, _new_condition(PROGRESSING, "Unknown", RESUMED, "Deployment is resumed", now),
                           now)

    new_view = new.view if new is not None else None
    created_view: rollout.SetView | None = None
    all_views: list[rollout.SetView | None] = [*old_views, new_view]
    scaling_only = paused or rollout.is_scaling_event(replicas, all_views)
    if scaling_only:
        rollout.scale(replicas, strategy, new_view, old_views, _int(observed.get("replicas")) or 0)
    elif strategy.type == rollout.RECREATE:
        _, may_create = rollout.recreate_step(replicas, new_view, old_views)
        if new_view is None and may_create:
            created_view = rollout.SetView(name=new_name, replicas=replicas, revision=max_old_revision + 1)
    else:
        if new_view is None:
            created_view = rollout.SetView(name=new_name, replicas=0, revision=max_old_revision + 1)
            created_view.replicas = rollout.new_set_replicas(replicas, strategy, [*old_views, created_view],
                                                             created_view)
        stepping = created_view if created_view is not None else new_view
        assert stepping is not None
        rollout.rolling_step(replicas, strategy, stepping, old_views)

    # Desired children.
    sized = {DESIRED: str(replicas), MAX_REPLICAS: str(replicas + surge)}

    children: list[dict[str, Any]] = []
    for ms in olds:
        if ms.deleting:
            continue
        changed = ms.view.replicas != ms.observed_replicas or (scaling_only and ms.view.replicas > 0)
        children.append(_echo(ms, ms.view.replicas, dict(sized) if changed else {}, {}))
    if new is not None:
        changed = new.view.replicas != new.observed_replicas or (scaling_only and new.view.replicas > 0)
        annotations = dict(sized) if changed else {}
        revision = max(new.view.revision, max_old_revision + 1)
        if revision != new.view.revision:
            annotations[REVISION] = str(revision)
        min_ready = spec.get("minReadySeconds") or 0
        extra = {"minReadySeconds": min_ready} if min_ready != (new.spec.get("minReadySeconds") or 0) else {}
        children.append(_echo(new, new.view.replicas, annotations, extra))
    if created_view is not None:
        annotations = {REVISION: str(created_view.revision), **sized}
        children.append(_new_set(new_name, namespace, spec, hash_, created_view.replicas, annotations))
        _set_condition(conditions, _new_condition(PROGRESSING, "True", NEW_SET_CREATED,
                                                  f"Created new MachineSet \"{new_name}\"", now), now)
    elif new is not None and _find(conditions, PROGRESSING) is None:
        _set_condition(conditions, _new_condition(PROGRESSING, "True", FOUND_NEW_SET,
                                                  f"Found new MachineSet \"{new.view.name}\"", now), now)

    desired_total = sum(int(c["spec"]["replicas"]) for c in children)
    status = _counts(sets, new, desired_total)

    complete = _complete(replicas, status)
    # Revision history: only once the rollout is done (or paused), as Kubernetes does.
    if complete or paused:
        doomed = set(rollout.history_to_delete([ms.view for ms in olds if not ms.deleting],
                                               _int(spec.get("revisionHistoryLimit"))))
        children = [c for c in children if c["metadata"]["name"] not in doomed]
    children.sort(key=lambda c: c["metadata"]["name"])

    min_available = replicas - rollout.max_unavailable(replicas, strategy)
    if status["availableReplicas"] >= min_available:
        available_cond = _new_condition(AVAILABLE, "True", MIN_AVAILABLE, "Deployment has minimum availability.", now)
    else:
        available_cond = _new_condition(AVAILABLE, "False", MIN_UNAVAILABLE,
                                        "Deployment does not have minimum availability.", now)
    _set_condition(conditions, available_cond, now)

    resync: float | None = None
    if not scaling_only:
        resync = _estimate_progress(conditions, observed, status, spec, replicas, complete, new_name, now)

    failure = None
    if new is not None:
        failure = new.failure_condition()
    if failure is None:
        failure = next((ms.failure_condition() for ms in sets if ms.failure_condition() is not None), None)
    conditions = [c for c in conditions if c.get("type") != REPLICA_FAILURE]
    if failure is not None:
        stamp = carried_time(failure.get("lastTransitionTime"), True, now)  # the set's own time, when it has one
        conditions.append({"type": REPLICA_FAILURE, "status": "True", "reason": str(failure.get("reason") or ""),
                           "message": str(failure.get("message") or ""), "lastUpdateTime": stamp,
                           "lastTransitionTime": stamp})
    status["conditions"] = _ordered(conditions)
    response: dict[str, Any] = {"status": _shaped(status), "children": children}
    if resync is not None:
        response["resyncAfterSeconds"] = resync
    return response


def _estimate_progress(conditions: list[dict[str, Any]], observed: dict[str, Any], status: dict[str, Any],
                       spec: dict[str, Any], replicas: int, complete: bool, set_name: str,
                       now: datetime) -> float | None:
    """Kubernetes' syncRolloutStatus for the Progressing condition; returns when to check the deadline again."""
    current = _find(conditions, PROGRESSING)
    done = status["replicas"] == status["updatedReplicas"] and current is not None and \
        current.get("reason") == NEW_SET_AVAILABLE
    if not done:
        if complete:
            _set_condition(conditions, _new_condition(PROGRESSING, "True", NEW_SET_AVAILABLE,
                                                      f"MachineSet \"{set_name}\" has successfully progressed.", now),
                           now)
        elif _progressing(observed, status):
            fresh = _new_condition(PROGRESSING, "True", SET_UPDATED, f"MachineSet \"{set_name}\" is progressing.",
                                   now)
            if current is not None and current.get("status") == "True" and current.get("lastTransitionTime"):
                fresh["lastTransitionTime"] = current["lastTransitionTime"]
            conditions[:] = [c for c in conditions if c.get("type") != PROGRESSING] + [fresh]
        elif _timed_out(spec, current, now):
            _set_condition(conditions, _new_condition(PROGRESSING, "False", TIMED_OUT,
                                                      f"MachineSet \"{set_name}\" has timed out progressing.", now),
                           now)
    current = _find(conditions, PROGRESSING)
    if not _has_deadline(spec) or current is None or complete or current.get("reason") in (TIMED_OUT,
                                                                                            NEW_SET_AVAILABLE):
        return None
    since = parse_time(current.get("lastUpdateTime"))
    if since is None:
        return None
    left = (since + timedelta(seconds=spec["progressDeadlineSeconds"]) - now).total_seconds()
    return float(max(1, math.ceil(left) + 1))


def _ordered(conditions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def key(c: dict[str, Any]) -> tuple[int, str]:
        type_ = str(c.get("type"))
        return (CONDITION_ORDER.index(type_) if type_ in CONDITION_ORDER else len(CONDITION_ORDER), type_)

    return sorted(conditions, key=key)


def _shaped(status: dict[str, Any]) -> dict[str, Any]:
    """The status in a fixed key order (the API server does not care; people reading diffs do)."""
    order = ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas", "unavailableReplicas",
             "failedMachines", "conditions")
    return {k: status[k] for k in order if k in status}
