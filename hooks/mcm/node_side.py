"""The Node side of a Machine as MCM does it: bootstrap token, Node labels/annotations/taints, Terminating, removal.

Pure decisions, called by the Machine hook (sync and finalize) with what Metacontroller observed; each returns the
Job attachments to declare (hooks/mcm/node_jobs.py) and, where the Machine's lastOperation should say so, MCM's
text for the step. The programs those Jobs run (`python -m nodejobs`, nodejobs/) compute the same Node patch with
the same functions from the Node they read again, and check again that the Node is the Machine's device's
(hooks/mcm/node_proof.py) before they touch it.

MCM's bookkeeping is kept exactly: `node.gardener.cloud/machine-name=<machine>` on the Node, `spec.nodeTemplate`'s
labels, annotations and taints applied, and what was applied remembered in the annotation
`node.machine.sapcloud.io/last-applied-anno-labels-taints` as Go's encoding/json writes a NodeTemplateSpec, so a
key removed from the template is removed from the Node again and a key the Machine never set is never touched.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hooks import objects
from hooks.driver import DEVICE_ID_ANNOTATION, PROVIDER_ID_ANNOTATION, Device, DeviceState
from hooks.mcm import bootstrap, node_jobs
from hooks.mcm import vocabulary as mcm
from hooks.mcm.node_proof import EXTERNAL, prove
from hooks.mcm.timefmt import format_time

MACHINE_NAME_LABEL = "node.gardener.cloud/machine-name"
LAST_APPLIED_ANNOTATION = "node.machine.sapcloud.io/last-applied-anno-labels-taints"

# MCM's Terminating condition (machineutils.NodeTerminationCondition, setTerminationReasonByPhase).
TERMINATING = "Terminating"
REASON_UNHEALTHY = "Unhealthy"
REASON_SCALE_DOWN = "ScaleDown"
MESSAGE_UNHEALTHY = "Machine Controller is terminating failed machine"
MESSAGE_SCALE_DOWN = "Machine Controller is scaling down machine"

# MCM's step names and deleteNodeObject's lastOperation texts (machine_util.go).
INITIATE_NODE_DELETION = "Initiate node object deletion"
INITIATE_FINALIZER_REMOVAL = "Initiate machine object finalizer removal"
VM_DELETED = f"VM deletion was successful. {INITIATE_NODE_DELETION}"
NO_NODE_LABEL = ('Label "node" not present on machine "{machine}", continuing deletion flow. '
                 + INITIATE_FINALIZER_REMOVAL)
NO_NODE = 'No node object found for "{node}", continuing deletion flow. ' + INITIATE_FINALIZER_REMOVAL
NODE_DELETED = 'Deletion of Node Object "{node}" is successful. ' + INITIATE_FINALIZER_REMOVAL
NODE_DELETE_FAILED = 'Deletion of Node Object "{node}" failed due to error: {error}. ' + INITIATE_NODE_DELETION
# Ours: MCM deletes whatever Node the label names; we never delete a Node we cannot prove is the device's.
NODE_NOT_PROVEN = ('Node object "{node}" is not provably this machine\'s ({reason}); it is left alone, continuing '
                   'deletion flow. ' + INITIATE_FINALIZER_REMOVAL)
TOKEN_WAIT = "Creating bootstrap token for machine {machine}. " + mcm.CREATING
TOKEN_FAILED = "Creating bootstrap token for machine {machine} failed due to - {error}. Will retry in next sync"

_META_ORDER = ("name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
               "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations",
               "ownerReferences", "finalizers", "managedFields")
_SPEC_ORDER = ("podCIDR", "podCIDRs", "providerID", "unschedulable", "taints", "configSource", "externalID")
_TAINT_ORDER = ("key", "value", "effect", "timeAdded")


# ------------------------------------------------------------------------------------------------ nodeTemplate


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


# ---------------------------------------------------------------------------------------------- Terminating


def terminating_condition(node: Any, machine_phase: str, now: datetime) -> dict[str, Any]:
    """MCM's UpdateNodeTerminationCondition: Unhealthy for a Failed Machine, ScaleDown otherwise; once the Node is
    Terminating, a Machine already Terminating keeps the reason and message it has."""
    existing = next((c for c in objects.mappings(node, "status", "conditions") if c.get("type") == TERMINATING), None)
    if existing is not None and machine_phase == mcm.TERMINATING:
        reason, message = str(existing.get("reason") or ""), str(existing.get("message") or "")
    elif machine_phase == mcm.FAILED:
        reason, message = REASON_UNHEALTHY, MESSAGE_UNHEALTHY
    else:
        reason, message = REASON_SCALE_DOWN, MESSAGE_SCALE_DOWN
    stamp = format_time(now)
    return {"type": TERMINATING, "status": "True", "lastHeartbeatTime": stamp, "lastTransitionTime": stamp,
            "reason": reason, "message": message}


def sets_terminating(machine_phase: str) -> bool:
    """MCM leaves the Node alone for a Machine without a phase or in CrashLoopBackOff (it never had a Node)."""
    return machine_phase not in ("", mcm.CRASH_LOOP)


# ------------------------------------------------------------------------------------------------------ plans


@dataclass(frozen=True)
class NodeStep:
    """What the Machine hook should do about one Node-side step in this call.

    `attachments`: Jobs to add to the response's attachments (every call, while the step matters). `done`: the step
    needs nothing more (the caller may go on: create the device, set finalized). `description`/`state`: MCM's
    lastOperation text for the step when the caller should show it ("" = nothing to show). `resync`: seconds until
    the next look while waiting (0 = no wish).
    """

    attachments: list[dict[str, Any]]
    done: bool
    description: str = ""
    state: str = ""
    resync: float = 0.0
    user_data: str | None = field(default=None, repr=False)  # plan_token: the rendered userData, once ready
    # plan_token only: the token, for the request's log redaction (hooks.server.logs.register_secret), never to show.
    secrets: tuple[str, ...] = field(default=(), repr=False)


POLL_SECONDS = 5.0


def proof_args(device: Device) -> list[str]:
    """What a Node Job needs to prove the Node is the device's again: id, providerID, public addresses."""
    args = ["--device-id", device.id, "--provider-id", device.provider_id]
    for address in device.addresses:
        if address.type == EXTERNAL:
            args += ["--address", address.address]
    return args


def recorded_device(machine: Any) -> Device | None:
    """The Machine's device as recorded on it (the provider-id annotation, else `spec.providerID`), for steps after
    the device is gone: proof by providerID only. A recorded device id that disagrees with it gives None."""
    notes = objects.annotations(machine)
    provider_id = notes.get(PROVIDER_ID_ANNOTATION) or objects.string(machine, "spec", "providerID")
    if not isinstance(provider_id, str) or "://" not in provider_id:
        return None
    last = provider_id.split("://", 1)[1].strip("/").rsplit("/", 1)[-1]
    device_id = notes.get(DEVICE_ID_ANNOTATION)
    if not last or (device_id and device_id != last):
        return None
    return Device(id=last, provider_id=provider_id, state=DeviceState.GONE)


def _node_name(machine: Any) -> str:
    return str(objects.labels(machine).get(mcm.NODE_LABEL) or "")


def plan_token(machine: Any, user_data: str | None, attachments: Mapping[str, Any], settings: node_jobs.NodeJobSettings,
               default_creation_timeout: float) -> NodeStep:
    """Sync, before the device is created: the token Secret must exist first.

    Without the placeholder: done, userData with <<MACHINE_NAME>> replaced, no Job. With it: the key must be
    configured (else BootstrapTokenError, fail closed); the `token create` Job is declared, and once it succeeded
    `user_data` holds the rendered userData (the token derived here, never read from a Secret).
    """
    name, uid = objects.name(machine), objects.uid(machine)
    text = user_data or ""
    if not bootstrap.uses_placeholder(text):
        return NodeStep([], True, user_data=bootstrap.render_user_data(text, name, None))
    token = settings.token.token_for(uid)  # fails closed before any Job is declared
    expires = bootstrap.expiration(machine, default_creation_timeout)
    if expires is None:
        raise bootstrap.BootstrapTokenError(f"machine {name} has no creationTimestamp: no token expiry to set")

    def build(job: str, attempt: int, previous: str, _observed: dict[str, Any] | None) -> dict[str, Any]:
        args = ["token", "create", "--machine", name, "--machine-uid", uid, "--expiration", format_time(expires)]
        if settings.token.extra_groups:
            args += ["--extra-groups", settings.token.extra_groups]
        return node_jobs.build_job(machine, node_jobs.TOKEN_CREATE, job, args, settings, attempt=attempt,
                                   previous_error=previous)

    step = node_jobs.plan_step(machine, attachments, node_jobs.TOKEN_CREATE, "token", build)
    secrets = (token.value, token.secret)
    if step.outcome == "succeeded":
        return NodeStep(step.attachments, True, user_data=bootstrap.render_user_data(text, name, token),
                        secrets=secrets)
    if step.problem:
        return NodeStep(step.attachments, False, TOKEN_FAILED.format(machine=name, error=step.problem),
                        mcm.STATE_FAILED, POLL_SECONDS, secrets=secrets)
    return NodeStep(step.attachments, False, TOKEN_WAIT.format(machine=name), mcm.PROCESSING, POLL_SECONDS,
                    secrets=secrets)


def plan_token_cleanup(machine: Any, user_data: str | None, attachments: Mapping[str, Any],
                       settings: node_jobs.NodeJobSettings, now: datetime, default_creation_timeout: float) -> NodeStep:
    """Once the Node joined (Machine Running, as MCM deletes the token on join) and in finalize: the `token delete`
    Job. Done when it succeeded, or when the token has expired anyway (then no Job is declared)."""
    if not bootstrap.uses_placeholder(user_data):
        return NodeStep([], True)
    expires = bootstrap.expiration(machine, default_creation_timeout)
    observed = node_jobs.observed_jobs(attachments, objects.name(machine), node_jobs.TOKEN_DELETE)
    if expires is not None and now >= expires and not observed:
        return NodeStep([], True)
    uid = objects.uid(machine)

    def build(job: str, attempt: int, previous: str, _observed: dict[str, Any] | None) -> dict[str, Any]:
        return node_jobs.build_job(machine, node_jobs.TOKEN_DELETE, job, ["token", "delete", "--machine-uid", uid],
                                   settings, attempt=attempt, previous_error=previous)

    step = node_jobs.plan_step(machine, attachments, node_jobs.TOKEN_DELETE, "token-delete", build)
    return NodeStep(step.attachments, step.outcome == "succeeded", resync=0.0 if step.outcome == "succeeded"
                    else POLL_SECONDS)


def _patch_digest(patch: dict[str, Any]) -> str:
    body = {**patch, "metadata": {k: v for k, v in patch["metadata"].items() if k != "resourceVersion"}}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:8]


def plan_node_sync(machine: Any, node: Any, device: Device | None, attachments: Mapping[str, Any],
                   settings: node_jobs.NodeJobSettings) -> NodeStep:
    """Sync of a Machine whose Node is observed: a `node sync` Job while the Node differs from the template.

    The Job's name carries a digest of the change, so a template edit (or a Node changed by hand) is a new Job and a
    finished one is dropped as soon as the Node matches. A Node not proven the device's gets nothing.
    """
    if not isinstance(node, dict) or device is None or not prove(node, device).proven:
        return NodeStep([], True)
    name = objects.name(machine)
    template = NodeTemplate.of_machine(machine)
    patch = node_template_patch(node, template, name)
    if patch is None:
        return NodeStep([], True)
    suffix = f"node-{_patch_digest(patch)}"
    template_json = json.dumps(template.raw, sort_keys=True, separators=(",", ":"))

    def build(job: str, attempt: int, previous: str, _observed: dict[str, Any] | None) -> dict[str, Any]:
        args = ["node", "sync", objects.name(node), "--machine", name, "--template", template_json,
                *proof_args(device)]
        return node_jobs.build_job(machine, node_jobs.NODE_SYNC, job, args, settings, attempt=attempt,
                                   previous_error=previous)

    step = node_jobs.plan_step(machine, attachments, node_jobs.NODE_SYNC, suffix, build)
    return NodeStep(step.attachments, step.outcome == "succeeded", resync=POLL_SECONDS)


PHASE_ANNOTATION = "metal-machine-hooks/machine-phase"


def plan_node_terminating(machine: Any, node: Any, device: Device | None, attachments: Mapping[str, Any],
                          settings: node_jobs.NodeJobSettings) -> NodeStep:
    """Finalize, from its first call: the `node terminating` Job that sets MCM's Terminating condition.

    The Machine's phase before deletion picks the reason; the first Job remembers it (an annotation), because the
    hook writes phase Terminating in that same call. Needs no waiting: the drain goes on beside it.
    """
    phase = objects.string(machine, "status", "currentStatus", "phase")
    if not isinstance(node, dict) or device is None or not prove(node, device).proven:
        return NodeStep([], True)
    name = objects.name(machine)
    observed = node_jobs.observed_jobs(attachments, name, node_jobs.NODE_TERMINATING)
    if not observed and not sets_terminating(phase):
        return NodeStep([], True)

    def build(job: str, attempt: int, previous: str, seen: dict[str, Any] | None) -> dict[str, Any]:
        first = str(objects.annotations(seen).get(PHASE_ANNOTATION) or "") if seen else phase
        args = ["node", "terminating", objects.name(node), "--machine-phase", first, *proof_args(device)]
        return node_jobs.build_job(machine, node_jobs.NODE_TERMINATING, job, args, settings, attempt=attempt,
                                   previous_error=previous, notes={PHASE_ANNOTATION: first})

    step = node_jobs.plan_step(machine, attachments, node_jobs.NODE_TERMINATING, "node-terminating", build)
    return NodeStep(step.attachments, step.outcome == "succeeded")


def plan_node_removal(machine: Any, node: Any, device: Device | None, attachments: Mapping[str, Any],
                      settings: node_jobs.NodeJobSettings) -> NodeStep:
    """Finalize, after every device is gone: delete the Node (MCM's deleteNodeObject), only if it is provably the
    device's; the Job proves it again on the Node it reads, and deletes with that Node's UID as precondition."""
    name = objects.name(machine)
    node_name = _node_name(machine)
    if not node_name:
        return NodeStep([], True, NO_NODE_LABEL.format(machine=name), mcm.PROCESSING)
    observed = node_jobs.observed_jobs(attachments, name, node_jobs.NODE_REMOVE)
    if not observed:
        if not isinstance(node, dict):
            return NodeStep([], True, NO_NODE.format(node=node_name), mcm.PROCESSING)
        verdict = prove(node, device)
        if not verdict.proven or device is None:
            return NodeStep([], True, NODE_NOT_PROVEN.format(node=node_name, reason=verdict.reason), mcm.PROCESSING)
    if device is None:
        return NodeStep([], True, NO_NODE.format(node=node_name), mcm.PROCESSING)

    def build(job: str, attempt: int, previous: str, _observed: dict[str, Any] | None) -> dict[str, Any]:
        args = ["node", "remove", node_name, *proof_args(device)]
        return node_jobs.build_job(machine, node_jobs.NODE_REMOVE, job, args, settings, attempt=attempt,
                                   previous_error=previous)

    step = node_jobs.plan_step(machine, attachments, node_jobs.NODE_REMOVE, "node-remove", build)
    if step.outcome == "succeeded":
        return NodeStep(step.attachments, True, NODE_DELETED.format(node=node_name), mcm.PROCESSING)
    if step.problem:
        return NodeStep(step.attachments, False, NODE_DELETE_FAILED.format(node=node_name, error=step.problem),
                        mcm.STATE_FAILED, POLL_SECONDS)
    return NodeStep(step.attachments, False, VM_DELETED, mcm.PROCESSING, POLL_SECONDS)
