"""One sync's step of a MachineDeployment: which set is new, how every set is sized, which sets are declared.

Each sync is one step of the Kubernetes Deployment controller (hooks/mcm/rollout.py), computed from the observed
MachineSets alone:
- plan: the new set is the oldest live one with the deployment's template, whatever its name; a set to create takes
  the hash name, or the next candidate if a set with another template holds it. A resize (spec.replicas differs
  from the sets' desired-replicas annotation) or a paused deployment only scales, in proportion during a rollout;
  otherwise RollingUpdate or Recreate takes one step;
- children: every live set as observed with its new size, the new set to create, and old empty sets beyond
  revisionHistoryLimit (unset: keep all, as MCM) left out once the rollout is done, so Metacontroller deletes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hooks.mcm import rollout
from hooks.mcm.deployment_sets import (
    DESIRED,
    MAX_REPLICAS,
    REVISION,
    MachineSet,
    as_int,
    echo,
    new_set,
    same_template,
    template_hash,
)
from hooks.mcm.rollback import REVISION_HISTORY, revision_history

# After a sync that found every set gone (see sets_vanished), look again this soon even if no event comes.
VANISHED_RECHECK_SECONDS = 1.0


def sets_vanished(observed_status: dict[str, Any], sets: list[MachineSet]) -> bool:
    """No live set, yet the last status counted Machines: the sets were deleted under the deployment (see the
    machinedeployment module docstring), so this sync must not create one."""
    return (as_int(observed_status.get("replicas")) or 0) > 0 and not any(not ms.deleting for ms in sets)


@dataclass
class Step:
    """What a sync decided before declaring children: the new set (observed or to create) and everyone's size."""

    replicas: int
    new: MachineSet | None  # the observed set with the deployment's template, if any
    olds: list[MachineSet]
    new_name: str
    hash_: str
    created: rollout.SetView | None  # the set this sync creates, if any
    scaling_only: bool
    max_old_revision: int
    surge: int


def find_new(name: str, template: dict[str, Any], sets: list[MachineSet]) -> tuple[MachineSet | None, str, str]:
    """(the observed new set or None, its name, the template hash a created set gets) after name collisions."""
    live = [ms for ms in sets if not ms.deleting]
    new = next((ms for ms in sorted(live, key=lambda ms: rollout.created_key(ms.view))
                if same_template(ms.spec.get("template"), template)), None)
    taken = {ms.view.name for ms in sets}
    collision = 0
    while f"{name}-{template_hash(template, collision)}" in taken and new is None:
        collision += 1
    hash_ = template_hash(template, collision)
    return new, (new.view.name if new is not None else f"{name}-{hash_}"), hash_


def plan(name: str, spec: dict[str, Any], sets: list[MachineSet], strategy: rollout.Strategy,
         observed_replicas: int) -> Step:
    """One rollout step: sizes are written into the sets' views; a set to create is returned in Step.created."""
    replicas: int = spec.get("replicas") or 0
    new, new_name, hash_ = find_new(name, spec["template"], sets)
    olds = [ms for ms in sets if ms is not new]
    old_views = [ms.view for ms in olds]
    max_old_revision = max((v.revision for v in old_views), default=0)
    new_view = new.view if new is not None else None
    created: rollout.SetView | None = None
    scaling_only = bool(spec.get("paused")) or rollout.is_scaling_event(replicas, [*old_views, new_view])
    if scaling_only:
        rollout.scale(replicas, strategy, new_view, old_views, observed_replicas)
    elif strategy.type == rollout.RECREATE:
        _, may_create = rollout.recreate_step(replicas, new_view, old_views)
        if new_view is None and may_create:
            created = rollout.SetView(name=new_name, replicas=replicas, revision=max_old_revision + 1)
    else:
        if new_view is None:
            created = rollout.SetView(name=new_name, replicas=0, revision=max_old_revision + 1)
            created.replicas = rollout.new_set_replicas(replicas, strategy, [*old_views, created], created)
        stepping = created if created is not None else new_view
        assert stepping is not None
        rollout.rolling_step(replicas, strategy, stepping, old_views)
    return Step(replicas, new, olds, new_name, hash_, created, scaling_only, max_old_revision,
                rollout.max_surge(replicas, strategy))


def children(step: Step, spec: dict[str, Any], namespace: str) -> list[dict[str, Any]]:
    """Every live set as desired: resized ones annotated with the deployment's size, the new one last."""
    sized = {DESIRED: str(step.replicas), MAX_REPLICAS: str(step.replicas + step.surge)}
    out: list[dict[str, Any]] = []
    for ms in step.olds:
        if ms.deleting:
            continue
        changed = ms.view.replicas != ms.observed_replicas or (step.scaling_only and ms.view.replicas > 0)
        out.append(echo(ms, ms.view.replicas, dict(sized) if changed else {}, {}))
    new = step.new
    if new is not None:
        changed = new.view.replicas != new.observed_replicas or (step.scaling_only and new.view.replicas > 0)
        annotations = dict(sized) if changed else {}
        revision = max(new.view.revision, step.max_old_revision + 1)
        if revision != new.view.revision:
            # An old set becomes the new one again (a rollback, or a template changed back): it takes the next
            # revision and remembers the ones it had, as Kubernetes' SetNewReplicaSetAnnotations.
            annotations[REVISION] = str(revision)
            history = revision_history(new.annotations, new.view.revision)
            if history:
                annotations[REVISION_HISTORY] = history
        min_ready = spec.get("minReadySeconds") or 0
        extra = {"minReadySeconds": min_ready} if min_ready != (new.spec.get("minReadySeconds") or 0) else {}
        out.append(echo(new, new.view.replicas, annotations, extra))
    if step.created is not None:
        annotations = {REVISION: str(step.created.revision), **sized}
        out.append(new_set(step.new_name, namespace, spec, step.hash_, step.created.replicas, annotations))
    return out


def without_history(declared: list[dict[str, Any]], step: Step, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The declared sets minus old, empty ones beyond revisionHistoryLimit (run once the rollout is done)."""
    doomed = set(rollout.history_to_delete([ms.view for ms in step.olds if not ms.deleting],
                                           as_int(spec.get("revisionHistoryLimit"))))
    return [c for c in declared if c["metadata"]["name"] not in doomed]


def unchanged(sets: list[MachineSet]) -> list[dict[str, Any]]:
    """Every live set as observed: what a deployment that is being deleted or cannot be used declares."""
    return [echo(ms, ms.observed_replicas, {}, {}) for ms in sets if not ms.deleting]
