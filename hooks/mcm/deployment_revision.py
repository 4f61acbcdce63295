"""The MachineDeployment's own `deployment.kubernetes.io/revision` annotation (DecoratorController
`metal-machinedeployment-revisions`).

MCM (pkg/controller/deployment_sync.go getNewMachineSet, from Kubernetes' Deployment controller) writes the new
MachineSet's revision onto the MachineDeployment too; `kubectl rollout history`-style tools and users read it there.
The CompositeController that rolls deployments out answers with status and children only and cannot write its
parent's metadata, so this decorator does: its customize hook relates the MachineSets that the deployment's selector
matches, and its sync sets the annotation to the highest revision among the live sets the deployment controls (the
new set always has the highest: hooks/mcm/deployment_plan.py gives it max(old) + 1). It writes nothing else.
"""

from __future__ import annotations

from typing import Any

from hooks import objects
from hooks.context import BadRequest, HookContext
from hooks.decorator_request import decorated_object
from hooks.mcm import vocabulary as mcm
from hooks.mcm.deployment_sets import REVISION, as_int


def customize(body: dict[str, Any], ctx: HookContext) -> dict[str, Any]:
    """The MachineSets of the deployment's namespace that its selector matches."""
    parent = body.get("parent") if isinstance(body, dict) else None
    if not isinstance(parent, dict) or not objects.namespace(parent):
        raise BadRequest("request has no parent MachineDeployment with a namespace")
    selector = objects.mapping(parent, "spec", "selector")
    if not selector.get("matchLabels") and not selector.get("matchExpressions"):
        return {"relatedResources": []}  # an empty selector matches everything: relate nothing (the spec is refused)
    return {"relatedResources": [{"apiVersion": mcm.API_VERSION, "resource": "machinesets",
                                  "namespace": objects.namespace(parent), "labelSelector": selector}]}


def revision(deployment: Any, machinesets: dict[str, Any]) -> int:
    """The highest revision among the live sets this deployment controls (0: none yet)."""
    uid = objects.uid(deployment)
    best = 0
    for ms in machinesets.values():
        if not isinstance(ms, dict) or objects.meta(ms).get("deletionTimestamp"):
            continue
        owners = objects.mappings(objects.meta(ms), "ownerReferences")
        if not any(r.get("controller") is True and r.get("uid") == uid for r in owners):
            continue
        best = max(best, as_int(objects.annotations(ms).get(REVISION)) or 0)
    return best


def sync(body: dict[str, Any], ctx: HookContext) -> dict[str, Any]:
    deployment, key = decorated_object(body)
    if not isinstance(deployment, dict) or not objects.uid(deployment):
        raise BadRequest(f"`{key}` must be a MachineDeployment with a uid")
    current = revision(deployment, objects.children(body, "related", mcm.MACHINESET_KEY))
    annotations = {REVISION: str(current)} if current else {}
    return {"labels": {}, "annotations": annotations, "status": None, "attachments": []}
