"""`spec.rollbackTo`: roll a MachineDeployment back to the template of an earlier revision, once.

MCM (pkg/controller/deployment_rollback.go, `rollback` and `rollbackToTemplate`, from Kubernetes' extensions/v1beta1
Deployment) copies the template of the MachineSet with `deployment.kubernetes.io/revision` = `rollbackTo.revision`
(0: the last revision before the current one) into the deployment's spec and clears `rollbackTo`. A
CompositeController hook writes only status and children, so neither can be done here. Instead:

- the rolled-back template becomes the *effective* template: the rollout proceeds to it exactly as it would after
  MCM's spec change (the old set with that template is scaled up and gets the next revision);
- the application is recorded in a status condition (type RollbackApplied, MCM's event reasons DeploymentRollback,
  DeploymentRollbackTemplateUnchanged, DeploymentRollbackRevisionNotFound) with the requested revision, the hash of
  `spec.template` at that moment and the hash of the template rolled back to, so a later sync, of this or a later
  generation (a replicas change), keeps the rolled-back template without applying the request again;
- once the user changes `spec.template`, it wins; a `rollbackTo` with another revision is a new request. Leaving
  the same `rollbackTo` in place never rolls back twice.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hooks import objects
from hooks.mcm.conditions import condition
from hooks.mcm.deployment_sets import HASH_LABEL, REVISION, MachineSet, as_int, template_hash

__all__ = ["CONDITION", "REVISION", "REVISION_HISTORY", "effective", "revision_history"]

REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
CONDITION = "RollbackApplied"
ROLLED_BACK = "DeploymentRollback"
UNCHANGED = "DeploymentRollbackTemplateUnchanged"
NOT_FOUND = "DeploymentRollbackRevisionNotFound"
_RECORD = re.compile(r"\(rollbackTo\.revision (\d+), generation (\d+), spec template ([0-9a-z]+), "
                     r"template ([0-9a-z]*)\)$")


@dataclass(frozen=True)
class Record:
    """What an applied rollbackTo left in the status condition."""
    revision: int
    generation: int
    spec_hash: str
    target_hash: str  # "" : nothing rolled back (revision not found)


def _record(observed_conditions: list[dict[str, Any]]) -> Record | None:
    for cond in observed_conditions:
        if cond.get("type") == CONDITION:
            match = _RECORD.search(str(cond.get("message") or ""))
            if match:
                return Record(int(match[1]), int(match[2]), match[3], match[4])
    return None


def _target(revision: int, sets: list[MachineSet], current_hash: str) -> MachineSet | None:
    """The live set of `revision`; 0: the highest revision below the current template's (Kubernetes' last revision)."""
    live = [ms for ms in sets if not ms.deleting and isinstance(ms.spec.get("template"), dict)]
    if revision == 0:
        older = [ms for ms in live if template_hash(ms.spec["template"]) != current_hash]
        return max(older, key=lambda ms: ms.view.revision, default=None)
    return next((ms for ms in live if ms.view.revision == revision), None)


def _clean(template: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(template)
    labels = objects.mapping(out, "metadata", "labels")
    labels.pop(HASH_LABEL, None)
    return out


def effective(parent: dict[str, Any], sets: list[MachineSet], observed_conditions: list[dict[str, Any]],
              now: datetime) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the spec the rollout follows, the RollbackApplied condition to keep, if any)."""
    spec = objects.mapping(parent, "spec")
    request = spec.get("rollbackTo")
    if not isinstance(request, dict) or not isinstance(spec.get("template"), dict):
        return spec, []
    revision = as_int(request.get("revision")) or 0
    spec_hash = template_hash(spec["template"])
    old = next((c for c in observed_conditions if c.get("type") == CONDITION), None)
    record = _record(observed_conditions)
    if record is not None and old is not None and record.revision == revision:
        if record.spec_hash != spec_hash or not record.target_hash:
            return spec, [old]  # applied once; the user changed the template since, or nothing was found
        target = next((ms for ms in sets if not ms.deleting and isinstance(ms.spec.get("template"), dict)
                       and template_hash(ms.spec["template"]) == record.target_hash), None)
        if target is None:
            return spec, [old]
        return {**spec, "template": _clean(target.spec["template"])}, [old]
    name = objects.name(parent)
    generation = as_int(objects.meta(parent).get("generation")) or 0
    target = _target(revision, sets, spec_hash)
    if target is None:
        reason, text, target_hash = NOT_FOUND, "Unable to find the revision to rollback to.", ""
    else:
        target_hash = template_hash(target.spec["template"])
        if target_hash == spec_hash:
            reason, text = UNCHANGED, f"The rollback revision contains the same template as current deployment {name}"
        else:
            reason, text = ROLLED_BACK, f"Rolled back deployment {name} to revision {target.view.revision}"
    message = (f"{text} (rollbackTo.revision {revision}, generation {generation}, spec template {spec_hash}, "
               f"template {target_hash})")
    applied = condition(observed_conditions, CONDITION, "True", reason, message, now)
    if target is None or target_hash == spec_hash:
        return spec, [applied]
    return {**spec, "template": _clean(target.spec["template"])}, [applied]


def revision_history(annotations: dict[str, Any], old_revision: int) -> str:
    """The set's `deployment.kubernetes.io/revision-history` after it leaves `old_revision` for a new one
    (Kubernetes' SetNewReplicaSetAnnotations: the revisions a reused set had, comma-separated, oldest first)."""
    history = [r for r in str(annotations.get(REVISION_HISTORY) or "").split(",") if r]
    if old_revision > 0 and str(old_revision) not in history:
        history.append(str(old_revision))
    return ",".join(history)

