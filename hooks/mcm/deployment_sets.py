"""The MachineSets of a MachineDeployment: how they are named and hashed, read, checked and declared.

The new set is named `<deployment>-<hash>`, the hash of the template (sha256, stable across processes), and
carries the label `machine-template-hash=<hash>` on itself, in its selector and in its template. Kubernetes' own
annotations (revision, desired-replicas, max-replicas) record the rollout on each set, so every sync can be
computed from the observed sets alone.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from hooks import objects
from hooks.composite_request import without_last_applied
from hooks.mcm import labels, rollout
from hooks.mcm import vocabulary as mcm
from hooks.mcm.conditions import REPLICA_FAILURE
from hooks.mcm.naming import MAX_MACHINE_NAME, SUFFIX_LENGTH, short_hash
from hooks.mcm.validation import int_field, template_problems

SET_KEY = mcm.MACHINESET_KEY  # the name the MachineDeployment hook and its tests use for it
HASH_LABEL = "machine-template-hash"
HASH_LENGTH = 8
REVISION = "deployment.kubernetes.io/revision"
DESIRED = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"


def as_int(value: Any) -> int | None:
    """An integer from a field or an annotation (annotations are strings), None when it is not one."""
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


def same_template(a: Any, b: Any) -> bool:
    return isinstance(a, dict) and isinstance(b, dict) and template_hash(a) == template_hash(b)


class MachineSet:
    """One observed child set and the view the rollout arithmetic changes."""

    def __init__(self, obj: dict[str, Any]):
        self.obj = obj
        self.meta = objects.meta(obj)
        self.spec = objects.mapping(obj, "spec")
        self.status = objects.mapping(obj, "status")
        self.annotations = objects.annotations(obj)
        self.deleting = bool(self.meta.get("deletionTimestamp"))
        replicas = as_int(self.spec.get("replicas")) or 0
        self.view = rollout.SetView(
            name=str(self.meta.get("name") or ""),
            replicas=0 if self.deleting else replicas,
            status_replicas=as_int(self.status.get("replicas")) or 0,
            available=as_int(self.status.get("availableReplicas")) or 0,
            created=str(self.meta.get("creationTimestamp") or "") or None,
            revision=as_int(self.annotations.get(REVISION)) or 0,
            desired_annotation=as_int(self.annotations.get(DESIRED)),
            max_annotation=as_int(self.annotations.get(MAX_REPLICAS)),
        )
        self.observed_replicas = replicas

    def status_int(self, key: str) -> int:
        return as_int(self.status.get(key)) or 0

    def failure_condition(self) -> dict[str, Any] | None:
        for cond in self.status.get("machineSetCondition") or []:
            if isinstance(cond, dict) and cond.get("type") == REPLICA_FAILURE and cond.get("status") == "True":
                return cond
        return None


# -------------------------------------------------------------------------------------------------- validation


def strategy(spec: dict[str, Any]) -> rollout.Strategy:
    raw = objects.mapping(spec, "strategy")
    kind = raw.get("type") or rollout.ROLLING
    rolling = objects.mapping(raw, "rollingUpdate")
    surge = rolling.get("maxSurge", rollout.DEFAULT_SURGE)
    unavailable = rolling.get("maxUnavailable", rollout.DEFAULT_UNAVAILABLE)
    return rollout.Strategy(type=str(kind), max_surge=surge, max_unavailable=unavailable)


def spec_problems(deployment: dict[str, Any]) -> list[str]:
    """Why this MachineDeployment's sets cannot be managed; every problem at once."""
    meta = deployment.get("metadata") or {}
    spec = objects.mapping(deployment, "spec")
    problems: list[str] = []
    for key in ("replicas", "minReadySeconds", "revisionHistoryLimit", "progressDeadlineSeconds"):
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
    template_labels = objects.mapping(template, "metadata", "labels")
    if not selector_issues and not labels.matches(objects.mapping(spec, "selector"), template_labels):
        problems.append(
            f"spec.selector: Invalid value: {selector!r}: is not matching with spec.template.metadata.labels "
            f"{template_labels!r}"
        )
    problems += template_problems(template)
    problems += rollout.strategy_problems(strategy(spec))
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


def echo(ms: MachineSet, replicas: int, annotations: dict[str, str], extra_spec: dict[str, Any]) -> dict[str, Any]:
    """An existing set as desired: as observed, with new replicas (and annotations) where the step changed them."""
    meta: dict[str, Any] = {"name": ms.meta.get("name"), "namespace": ms.meta.get("namespace")}
    if isinstance(ms.meta.get("labels"), dict) and ms.meta["labels"]:
        meta["labels"] = dict(ms.meta["labels"])
    merged = without_last_applied(ms.annotations)
    merged.update(annotations)
    if merged:
        meta["annotations"] = merged
    spec = copy.deepcopy(ms.spec)
    spec["replicas"] = replicas
    spec.update(extra_spec)
    return {"apiVersion": mcm.API_VERSION, "kind": "MachineSet", "metadata": meta, "spec": spec}


def new_set(name: str, namespace: str, spec: dict[str, Any], hash_: str, replicas: int,
            annotations: dict[str, str]) -> dict[str, Any]:
    """A set to create from the deployment's template, labelled, selected and named by the template's hash."""
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
