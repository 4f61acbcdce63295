"""A Machine's `spec.nodeTemplate` on its Node, with MCM's bookkeeping (hooks.mcm.node_side plans the Job for it).

MCM's bookkeeping is kept exactly: `node.gardener.cloud/machine-name=<machine>` on the Node, `spec.nodeTemplate`'s
labels, annotations and taints applied, and what was applied remembered in the annotation
`node.machine.sapcloud.io/last-applied-anno-labels-taints` as Go's encoding/json writes a NodeTemplateSpec, so a
key removed from the template is removed from the Node again and a key the Machine never set is never touched.
The Node Job's program (nodejobs/) computes the same patch with these functions from the Node it reads again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hooks import objects

MACHINE_NAME_LABEL = "node.gardener.cloud/machine-name"
LAST_APPLIED_ANNOTATION = "node.machine.sapcloud.io/last-applied-anno-labels-taints"

_META_ORDER = ("name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
               "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations",
               "ownerReferences", "finalizers", "managedFields")
_SPEC_ORDER = ("podCIDR", "podCIDRs", "providerID", "unschedulable", "taints", "configSource", "externalID")
_TAINT_ORDER = ("key", "value", "effect", "timeAdded")


def _strings(value: Any) -> dict[str, str]:
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)} \
        if isinstance(value, dict) else {}


def _taint(value: Any) -> dict[str, Any] | None:
    """A taint with Go's field order and omitempty (value, timeAdded); None when it has no key."""
    if not isinstance(value, dict) or not isinstance(value.get("key"), str) or not value["key"]:
        return None
    taint: dict[str, Any] = {"key": value["key"]}
    if isinstance(value.get("value"), str) and value["value"]:
        taint["value"] = value["value"]
    taint["effect"] = value.get("effect") if isinstance(value.get("effect"), str) else ""
    if isinstance(value.get("timeAdded"), str) and value["timeAdded"]:
        taint["timeAdded"] = value["timeAdded"]
    return taint


def _taints(value: Any) -> list[dict[str, Any]]:
    return [t for t in (_taint(v) for v in value) if t is not None] if isinstance(value, list) else []


@dataclass(frozen=True)
class NodeTemplate:
    """`spec.nodeTemplate` reduced to what MCM applies: string labels and annotations, keyed taints."""

    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, Any]] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, template: Any) -> NodeTemplate:
        meta, spec = objects.mapping(template, "metadata"), objects.mapping(template, "spec")
        return cls(_strings(meta.get("labels")), _strings(meta.get("annotations")), _taints(spec.get("taints")),
                   template if isinstance(template, dict) else {})

    @classmethod
    def of_machine(cls, machine: Any) -> NodeTemplate:
        return cls.of(objects.mapping(machine, "spec", "nodeTemplate"))


def _go_escape(text: str) -> str:
    """Go's json.Marshal escapes <, >, & and U+2028/9 (HTML safety); it leaves other non-ASCII as is."""
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _present(value: Any) -> bool:
    """Go's omitempty: empty strings, zeros, false, empty maps and lists are left out."""
    return value not in (None, "", 0, False, {}, [])


def last_applied_json(template: NodeTemplate) -> str:
    """The annotation's value exactly as MCM writes it: `json.Marshal(machine.Spec.NodeTemplateSpec)`.

    Field order as Go's structs declare them, map keys sorted, creationTimestamp null, "spec" always present.
    """
    raw_meta, raw_spec = objects.mapping(template.raw, "metadata"), objects.mapping(template.raw, "spec")
    meta: dict[str, Any] = {}
    for key in _META_ORDER:
        if key == "creationTimestamp":
            meta[key] = raw_meta.get(key) or None
        elif key == "labels" and template.labels:
            meta[key] = dict(sorted(template.labels.items()))
        elif key == "annotations" and template.annotations:
            meta[key] = dict(sorted(template.annotations.items()))
        elif key not in ("labels", "annotations") and _present(raw_meta.get(key)):
            meta[key] = raw_meta[key]
    spec: dict[str, Any] = {}
    for key in _SPEC_ORDER:
        if key == "taints":
            if template.taints:
                spec[key] = template.taints
        elif _present(raw_spec.get(key)):
            spec[key] = raw_spec[key]
    return _go_escape(json.dumps({"metadata": meta, "spec": spec}, separators=(",", ":"), ensure_ascii=False))


def parse_last_applied(text: Any) -> NodeTemplate:
    """What was applied before; an unreadable value counts as nothing applied (then nothing is removed)."""
    if not isinstance(text, str):
        return NodeTemplate()
    try:
        return NodeTemplate.of(json.loads(text))
    except ValueError:
        return NodeTemplate()


def _merge_map(current: dict[str, str], wanted: dict[str, str], applied: dict[str, str]) -> dict[str, str]:
    """MCM's SyncMachineLabels/Annotations: drop what was applied and is no longer wanted, set what is wanted."""
    result = {k: v for k, v in current.items() if k in wanted or k not in applied}
    result.update(wanted)
    return result


def _same_taint(on_node: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Equal for our purpose: the API server stamps timeAdded on NoExecute taints, which a template rarely sets."""
    ignore = () if "timeAdded" in wanted else ("timeAdded",)
    return {k: v for k, v in on_node.items() if k not in ignore and v not in (None, "")} == \
        {k: v for k, v in wanted.items() if v not in (None, "")}


def _merge_taints(current: list[dict[str, Any]], wanted: list[dict[str, Any]],
                  applied: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """MCM's SyncMachineTaints, keyed by (key, effect); the Node's order is kept and new taints appended."""
    want = {(t["key"], t["effect"]): t for t in wanted}
    gone = {(t["key"], t["effect"]) for t in applied} - set(want)
    result: list[dict[str, Any]] = []
    seen = set()
    for taint in current:
        ident = (taint.get("key"), taint.get("effect"))
        if ident in gone:
            continue
        seen.add(ident)
        wanted_taint = want.get(ident)
        if wanted_taint is None or _same_taint(taint, wanted_taint):
            result.append(taint)
        else:
            result.append(wanted_taint)
    result.extend(t for ident, t in want.items() if ident not in seen)
    return result


def _map_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    patch: dict[str, Any] = {k: None for k in old if k not in new}
    patch.update({k: v for k, v in new.items() if old.get(k) != v})
    return patch


def node_template_patch(node: Any, template: NodeTemplate, machine_name: str) -> dict[str, Any] | None:
    """The JSON merge patch that brings the Node to the Machine's nodeTemplate, or None when it already is.

    It pins the Node's resourceVersion (a Node changed since it was read is a 409, and the caller reads it again)
    and carries the whole taint list (a merge patch replaces lists). Keys the Machine never applied stay as they are.
    """
    labels = _strings(objects.labels(node))
    annotations = _strings(objects.annotations(node))
    current_taints = [t for t in objects.mappings(node, "spec", "taints")]
    applied = parse_last_applied(annotations.get(LAST_APPLIED_ANNOTATION))
    new_labels = _merge_map(labels, template.labels, applied.labels)
    new_labels[MACHINE_NAME_LABEL] = machine_name
    new_annotations = _merge_map(annotations, template.annotations, applied.annotations)
    new_annotations[LAST_APPLIED_ANNOTATION] = last_applied_json(template)
    new_taints = _merge_taints(current_taints, template.taints, applied.taints)
    meta: dict[str, Any] = {}
    if label_patch := _map_patch(labels, new_labels):
        meta["labels"] = label_patch
    if annotation_patch := _map_patch(annotations, new_annotations):
        meta["annotations"] = annotation_patch
    patch: dict[str, Any] = {}
    if new_taints != current_taints:
        patch["spec"] = {"taints": new_taints}
    if not meta and not patch:
        return None
    meta["resourceVersion"] = objects.string(node, "metadata", "resourceVersion")
    patch["metadata"] = meta
    return patch


