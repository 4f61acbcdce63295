"""The Node side of a Machine as MCM does it: bootstrap token, Node labels/annotations/taints, Terminating, removal.

Pure decisions, called by the Machine hook (sync and finalize) with what Metacontroller observed; each returns the
Job attachments to declare (hooks/mcm/node_jobs.py) and, where the Machine's lastOperation should say so, MCM's
text for the step. The programs those Jobs run (`python -m nodejobs`, nodejobs/) compute the same Node patch with
the same functions from the Node they read again, and check again that the Node is the Machine's device's
(hooks/mcm/node_proof.py) before they touch it.

The nodeTemplate patch, with MCM's last-applied bookkeeping, is computed in hooks/mcm/node_template.py. In the
two-cluster topology the Node is the target's and the Jobs carry its kubeconfig (hooks.mcm.machine_target).
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
from hooks.mcm.node_proof import EXTERNAL, device_id_of, prove
from hooks.mcm.node_template import (  # noqa: F401  (re-exported: the Node Job program and tests use them here)
    LAST_APPLIED_ANNOTATION,
    MACHINE_NAME_LABEL,
    NodeTemplate,
    last_applied_json,
    node_template_patch,
    parse_last_applied,
)
from hooks.mcm.timefmt import format_time

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
    last = device_id_of(provider_id) if isinstance(provider_id, str) else ""
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
