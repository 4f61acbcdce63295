"""The DecoratorController `metal-machines`: one provider device per MCM Machine.

Hooks (all Metacontroller hook version v2, related keys `namespace/name`):

* customize asks for the Machine's MachineClass, the credentials Secrets of the Machine's namespace (label
  `metal-machine-hooks/credentials: "true"`), the Node named like the Machine and the MachineSet that controls it.
* sync asks the driver for the Machine's device (GetMachineStatus), creates one when there is none (at most once
  per sync, and never while the Machine's MachineSet is missing or being deleted), and reports MCM's status.
* finalize first drains the Machine's Node with a Job attachment (hooks.mcm.drain decides; docs/drain.md), shows
  each drain outcome in lastOperation before the next step, then asks the driver to delete every device of the
  Machine, then removes its Node, and answers `finalized: true` only once no device is left and the Node is gone.
* The Node side (docs/nodes.md, hooks.mcm.node_side): a bootstrap token before the create when the userData asks
  for one, the Node's nodeTemplate while it differs, its Terminating condition and its removal, each a Job
  attachment declared on every call while it matters.

Isolation: the related Node (named like the Machine) is followed for health and drained only when
hooks.mcm.node_proof proves it is the Machine's device's (providerID or a shared public address; a name or a `node`
label never); otherwise it is treated as no Node and lastOperation says why. Devices are created with this
installation's id (hooks.mcm.installation: INSTALLATION_ID or the related kube-system Namespace UID) and the
Machine's namespace as tenant tags; without an installation id nothing is created.

This module is the I/O half: it checks the request, gathers the inputs, calls the driver (`ctx.driver`, a
`hooks.driver.Driver`) and writes the answer. Every phase and lastOperation is decided by
`hooks.mcm.machine_state.next_status`; the provider's fields, tags and API live behind the driver.

What the hooks write on a Machine:

* annotations `metal-machine-hooks/device-id` and `metal-machine-hooks/provider-id` (a decorator cannot write
  `spec.providerID`; a `spec.providerID` set by a user or by MCM is read by the driver as well);
* label `node: <machine name>` (the device hostname is the Machine name, so is the Node's name);
* annotation `machinepriority.machine.sapcloud.io: "3"` when missing;
* annotation `metal-machine-hooks/ignored-keys: <comma list>` naming providerSpec keys that are ignored
  (such as `facilities`), removed again when there are none.

Opt-out: annotation `metal-machine-hooks/skip-device-cleanup: "true"` on a Machine makes finalize let it go at
once without looking for or deleting its device. It is meant for the case where the credentials are gone and the
user knows the device is gone too; otherwise a Machine whose device may still run stays Terminating.

A Machine whose class, Secret or name has a problem and that has no device recorded costs no provider call: its
status names every problem (InvalidArgument) and nothing is created.

Request shape: a sync/finalize request carries the Machine under `object` and the drain Jobs under `attachments`
(Metacontroller's DecoratorHookRequest, v1 and v2 alike); a body without `object` is a 400 (hooks.decorator_request). A
body whose related keys lack the
namespace comes from a hook configured with version v1, which also drops objects from other namespaces; it is
answered with HTTP 400 naming the fix, as is any body that is not a Metacontroller decorator request for a Machine.

MCM's "no target cluster" mode is `Settings.no_target_cluster` (env `NO_TARGET_CLUSTER=true`): an active device
makes the Machine `Available`, no Node is awaited and no `node` label is written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

from hooks import events, objects
from hooks.config import CREDENTIALS_LABEL, CREDENTIALS_LABEL_VALUE
from hooks.context import HookContext
from hooks.driver import DEVICE_ID_ANNOTATION, PROVIDER_ID_ANNOTATION, Device, Driver, DriverError, StatusResponse
from hooks.mcm import fail_permit, installation, machineclass, node_side
from hooks.mcm import machine_state as state
from hooks.mcm import vocabulary as mcm
from hooks.mcm.bootstrap import BootstrapTokenError, expiration
from hooks.mcm.drain import INITIATE_VM_DELETION, JOB_KEY, DrainStep, plan_drain
from hooks.mcm.drain_job import ATTEMPT_ANNOTATION
from hooks.mcm.machine_request import Checked, HookRequest, check, check_machine, parse_request
from hooks.mcm.machine_status import build_status, node_conditions, observed_operation, observed_phase

log = logging.getLogger("hooks.machine")

__all__ = ["DEVICE_ID_ANNOTATION", "PROVIDER_ID_ANNOTATION", "customize", "finalize", "sync"]

# Longest resync we ask for. A Retry-After far in the future must not become a Go time.Duration that overflows in
# Metacontroller (on amd64 it turns negative: an immediate re-queue); resyncPeriodSeconds still applies anyway.
MAX_RESYNC = 3600.0


# ---------------------------------------------------------------------------------------------------------- customize


def customize(body: dict[str, Any], ctx: HookContext) -> dict[str, Any]:
    """Related objects: the MachineClass, the labelled Secrets of the Machine's namespace, the Machine's Node and
    the MachineSet named in its controller ownerReference (a Machine whose owner is going creates nothing).

    `names` and `labelSelector` are never sent together (Metacontroller rejects that rule, even with an empty selector).
    """
    parent = check_machine(body.get("parent") if isinstance(body, dict) else None, "parent", need_uid=False)
    namespace = parent["metadata"]["namespace"]
    class_name = objects.string(parent, "spec", "class", "name")
    rules: list[dict[str, Any]] = []
    if class_name:
        rules.append({"apiVersion": mcm.API_VERSION, "resource": "machineclasses", "namespace": namespace,
                      "names": [class_name]})
    rules.append({"apiVersion": "v1", "resource": "secrets", "namespace": namespace,
                  "labelSelector": {"matchLabels": {CREDENTIALS_LABEL: CREDENTIALS_LABEL_VALUE}}})
    rules.append({"apiVersion": "v1", "resource": "nodes", "names": [parent["metadata"]["name"]]})
    owner = state.controller_machineset(parent)
    if owner:
        rules.append({"apiVersion": mcm.API_VERSION, "resource": "machinesets", "namespace": namespace,
                      "names": [owner]})
    rules.extend(installation.related_rules(ctx.settings))  # the installation id, unless configured
    return {"relatedResources": rules}


# ------------------------------------------------------------------------------------------------------------- sync


@dataclass
class Outcome:
    """What one hook call decided; `response()` turns it into the decorator answer."""

    status: dict[str, Any] | None = None
    labels: dict[str, Any] = field(default_factory=dict)
    annotations: dict[str, Any] = field(default_factory=dict)
    resync: float = 0.0
    finalized: bool | None = None
    attachments: list[dict[str, Any]] | None = None
    device: Device | None = field(default=None, repr=False)  # the live device this call saw (not in the answer)

    def response(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.labels:
            out["labels"] = self.labels
        if self.annotations:
            out["annotations"] = self.annotations
        if self.status is not None:
            out["status"] = self.status
        if self.attachments is not None:
            out["attachments"] = self.attachments
        if self.resync > 0:
            out["resyncAfterSeconds"] = round(min(self.resync, MAX_RESYNC), 1)
        if self.finalized is not None:
            out["finalized"] = self.finalized
        return out


def _driver(ctx: HookContext) -> Driver:
    driver = getattr(ctx, "driver", None)
    if driver is None:
        raise RuntimeError("the hook context has no driver: hooks.server.app.create_app gives it one")
    return driver


def _observed(req: HookRequest, ctx: HookContext) -> state.Observed:
    may_fail = fail_permit.may_fail(req.machine, objects.mapping(req.related, mcm.MACHINESET_KEY))
    return state.Observed(req.machine, req.node, ctx.clock(), ctx.settings, may_fail)


def _answer(req: HookRequest, seen: state.Observed, step: state.Transition, **status: Any) -> Outcome:
    written = build_status(req.status, phase=step.phase, operation=step.operation, now=seen.now, **status)
    return Outcome(status=written, resync=step.resync, finalized=step.finalized)


def sync(body: dict[str, Any], ctx: HookContext) -> dict[str, Any]:
    req = parse_request(body)
    outcome = reconcile(req, ctx)
    if outcome.status is not None:  # a Failed Machine (no status written) keeps nothing: its Jobs go
        outcome.attachments = _node_side_jobs(req, ctx, outcome)
    # Every Machine carries its class's label, so a MachineClass relates only its own Machines (machineclass.py).
    class_label = machineclass.machine_class_label(req.machine)
    if req.labels.get(machineclass.CLASS_LABEL) != class_label:
        outcome.labels[machineclass.CLASS_LABEL] = class_label
    return outcome.response()


def reconcile(req: HookRequest, ctx: HookContext) -> Outcome:
    """The sync step: validate, look the device up, create when allowed; `machine_state` decides the status."""
    if observed_phase(req.status) == mcm.FAILED:
        return Outcome()  # terminal: the MachineSet replaces a Failed Machine
    driver, seen = _driver(ctx), _observed(req, ctx)
    install = installation.installation_id(ctx.settings, req.related)
    checked = check(req, driver)
    recorded = driver.recorded_device_id(req.machine)
    if checked.access_problems or (checked.problems and not recorded):
        outcome = _answer(req, seen, state.next_status(seen, state.Invalid(checked.problems or
                                                                           checked.access_problems)))
        outcome.labels, outcome.annotations = _decorations(req, ctx, checked, None)
        return outcome
    try:
        found = driver.get_machine_status(req.for_driver(installation_id=install))
    except DriverError as exc:
        return _answer(req, seen, state.next_status(seen, state.CallFailed(exc, "looking up the device")))
    if found.device is not None:
        return _with_device(req, ctx, seen, checked, found.device, _lookup_notes(found), bool(found.duplicates_left))
    if found.foreign_id:
        event = state.ForeignDevice(found.foreign_id, found.owner_tag, found.foreign_reason)
        return _answer(req, seen, state.next_status(seen, event))
    if found.recorded_id:
        return _answer(req, seen, state.next_status(seen, state.DeviceGone(found.recorded_id, found.owner_tag)))
    if checked.problems:
        return _answer(req, seen, state.next_status(seen, state.Invalid(checked.problems)))
    owner = state.owner_problem(req.machine, objects.mapping(req.related, mcm.MACHINESET_KEY))
    if not owner and not install:
        owner = installation.MISSING  # fail closed: a device without the installation's mark could be collected
    step = state.next_status(seen, state.OwnerNotReady(owner) if owner else state.NoDevice())
    if not step.create:
        return _answer(req, seen, step)
    token = _token(req, ctx)
    if isinstance(token, state.TokenStep):
        return _answer(req, seen, state.next_status(seen, token))
    if not token.done:
        return _answer(req, seen, state.next_status(seen, state.TokenStep(token.description, token.state,
                                                                          token.resync)))
    try:
        device = driver.create_machine(req.for_driver(token.user_data if req.user_data() is not None else None,
                                                      installation_id=install))
    except DriverError as exc:
        return _answer(req, seen, state.next_status(seen, state.CallFailed(exc)))
    return _with_device(req, ctx, seen, checked, device)


def _lookup_notes(found: StatusResponse) -> str:
    notes = ""
    if found.foreign_id:
        notes += (f"; device {found.foreign_id} recorded on the Machine does not carry its ownership tag "
                  f"{found.owner_tag} and was not used")
    if found.duplicates_deleted:
        notes += f"; deleted duplicate device(s) {', '.join(found.duplicates_deleted)}, kept the oldest"
    if found.duplicates_left:
        notes += f"; could not delete duplicate device(s) {', '.join(found.duplicates_left)} yet"
    return notes


def _with_device(req: HookRequest, ctx: HookContext, seen: state.Observed, checked: Checked, device: Device,
                 notes: str = "", duplicates_left: bool = False) -> Outcome:
    node, unproven = state.own_node(req.node, device)
    if unproven and not ctx.settings.no_target_cluster:
        seen = replace(seen, node=node)  # an unproven Node is no Node: its health is not the Machine's
        notes += f"; {unproven}"
        log.warning("machine %s/%s: %s", req.namespace, req.name, unproven)
    step = state.next_status(seen, state.HasDevice(device, notes))
    outcome = _answer(
        req, seen, step,
        last_known_state=state.device_state_text(device),
        addresses=[{"address": a.address, "type": a.type} for a in device.addresses],
        conditions=node_conditions(seen.node) if not ctx.settings.no_target_cluster else [],
    )
    outcome.labels, outcome.annotations = _decorations(req, ctx, checked, device)
    outcome.device = device
    if duplicates_left:
        outcome.annotations.pop(DEVICE_ID_ANNOTATION, None)  # keep using the tag lookup until they are gone
        outcome.resync = min(outcome.resync or state.PROVISIONING_RESYNC, state.PROVISIONING_RESYNC)
    return outcome


def _token(req: HookRequest, ctx: HookContext) -> node_side.NodeStep | state.TokenStep:
    """The bootstrap token step before a create (docs/nodes.md): its Job, and the userData rendered from it; a token
    that cannot be made fails the create (FailedPrecondition). The token is registered for log redaction at once."""
    try:
        step = node_side.plan_token(req.machine, req.user_data(), req.attachments, ctx.settings.node_jobs,
                                    ctx.settings.creation_timeout)
    except BootstrapTokenError as exc:
        return state.TokenStep(str(exc), mcm.STATE_FAILED, code=mcm.FAILED_PRECONDITION)
    for secret in step.secrets:
        events.emit(events.SECRET_SEEN, value=secret)
    return step


def _node_side_jobs(req: HookRequest, ctx: HookContext, outcome: Outcome) -> list[dict[str, Any]]:
    """Every Node-side Job still relevant after a sync (Metacontroller deletes the attachments an answer leaves out):
    the token's create Job until the Machine is Running, then its delete Job; the Node's sync Job while the proven
    Node differs from the nodeTemplate."""
    settings = ctx.settings.node_jobs
    phase = objects.string(outcome.status, "currentStatus", "phase") or observed_phase(req.status)
    jobs: list[dict[str, Any]] = []
    if phase in state.CREATION_PHASES:
        token = _token(req, ctx)
        if isinstance(token, node_side.NodeStep):
            jobs += token.attachments
    else:
        jobs += node_side.plan_token_cleanup(req.machine, req.user_data(), req.attachments, settings, ctx.clock(),
                                             ctx.settings.creation_timeout).attachments
    if outcome.device is not None and req.node is not None and not ctx.settings.no_target_cluster:
        step = node_side.plan_node_sync(req.machine, req.node, outcome.device, req.attachments, settings)
        jobs += step.attachments
        if not step.done and step.resync:
            outcome.resync = min(outcome.resync or step.resync, step.resync)
    return jobs


def _decorations(req: HookRequest, ctx: HookContext, checked: Checked,
                 device: Device | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Labels and annotations to merge: only those that differ from the Machine, `None` deletes."""
    labels: dict[str, Any] = {}
    annotations: dict[str, Any] = {}
    if device is not None:
        if not ctx.settings.no_target_cluster and req.labels.get(mcm.NODE_LABEL) != req.name:
            labels[mcm.NODE_LABEL] = req.name
        wanted = {DEVICE_ID_ANNOTATION: device.id, PROVIDER_ID_ANNOTATION: device.provider_id}
        annotations.update({k: v for k, v in wanted.items() if req.annotations.get(k) != v})
    if mcm.PRIORITY_ANNOTATION not in req.annotations:
        annotations[mcm.PRIORITY_ANNOTATION] = mcm.DEFAULT_PRIORITY
    ignored = ",".join(checked.ignored_keys)
    if ignored and req.annotations.get(mcm.IGNORED_KEYS_ANNOTATION) != ignored:
        annotations[mcm.IGNORED_KEYS_ANNOTATION] = ignored
    elif not ignored and mcm.IGNORED_KEYS_ANNOTATION in req.annotations:
        annotations[mcm.IGNORED_KEYS_ANNOTATION] = None
    return labels, annotations


# --------------------------------------------------------------------------------------------------------- finalize


def finalize(body: dict[str, Any], ctx: HookContext) -> dict[str, Any]:
    req = parse_request(body)
    return release(req, ctx).response()


def release(req: HookRequest, ctx: HookContext) -> Outcome:
    """Drain the Node (hooks.mcm.drain), then delete every device of the Machine; finalized only when none is left."""
    seen = _observed(req, ctx)
    if str(req.annotations.get(mcm.SKIP_CLEANUP_ANNOTATION, "")).strip().lower() == "true":
        text = (f"Device cleanup skipped: annotation {mcm.SKIP_CLEANUP_ANNOTATION}=true; any device of machine "
                f"{req.name} is left as it is")
        outcome = _answer(req, seen, state.next_status(seen, state.CleanupSkipped(text)))
        outcome.attachments = []
        return outcome
    # Drain settings were read and checked once, at start-up (hooks.config.Settings.drain).
    step = _drain_step(req, ctx, seen)
    if isinstance(step, Outcome):
        return step
    _count_new_drains(req, step.attachments)
    node_jobs, token_done = _finalize_node_side(req, ctx, seen)
    if not step.ready_to_delete_device:
        event = state.DrainStep(step.description, step.state, step.resync_after)
        outcome = _answer(req, seen, state.next_status(seen, event))
    else:
        outcome = _release_devices(req, ctx, seen, announce=step.description if step.announce else None,
                                   token_done=token_done)
    outcome.attachments = [*step.attachments, *node_jobs, *(outcome.attachments or [])]
    return outcome


def _finalize_node_side(req: HookRequest, ctx: HookContext, seen: state.Observed) -> tuple[list[dict[str, Any]], bool]:
    """From the first finalize call: the Node's Terminating condition (no waiting) and the token's delete Job.

    Returns the Jobs and whether the token needs nothing more: finalize waits for its deletion, but never past the
    token's expiry (an expired token is useless and the token cleaner removes it)."""
    settings = ctx.settings.node_jobs
    terminating = node_side.plan_node_terminating(req.machine, req.node, node_side.recorded_device(req.machine),
                                                  req.attachments, settings)
    user_data = req.user_data()
    cleanup = node_side.plan_token_cleanup(req.machine, user_data, req.attachments, settings, seen.now,
                                           ctx.settings.creation_timeout)
    expires = expiration(req.machine, ctx.settings.creation_timeout)
    token_done = cleanup.done or expires is None or seen.now >= expires
    return [*terminating.attachments, *cleanup.attachments], token_done


def _drain_step(req: HookRequest, ctx: HookContext, seen: state.Observed) -> DrainStep | Outcome:
    """The drain step, draining the related Node only when it is proven to be the Machine's device's
    (hooks.mcm.node_proof); an unproven Node is treated as no Node, with the reason in lastOperation. The device
    is looked up only when a drain could start (a Node is related and the drain is not over or off)."""
    machine, node, jobs = _drain_inputs(req)
    without_node = plan_drain(machine, None, jobs, ctx.settings.drain, seen.now)
    if node is None or without_node.reason in ("after-drain", "disabled", "no-node"):
        return without_node
    driver = _driver(ctx)
    device = None
    if not check(req, driver).access_problems:
        try:
            install = installation.installation_id(ctx.settings, req.related)
            device = driver.get_machine_status(req.for_driver(installation_id=install)).device
        except DriverError as exc:
            text = (f"Cannot prove that Node {objects.name(node)} is this Machine's before draining it: looking up "
                    f"the device failed: {exc.message}. Will re-try in the next resync")
            outcome = _answer(req, seen, state.next_status(seen, state.DrainStep(text, mcm.STATE_FAILED,
                                                                                 code=exc.code)))
            outcome.attachments = without_node.attachments
            return outcome
    proven, unproven = state.own_node(node, device)
    if proven is not None:
        return plan_drain(machine, node, jobs, ctx.settings.drain, seen.now)
    log.warning("machine %s/%s: not draining: %s", req.namespace, req.name, unproven)
    text = f"Skipping drain: {unproven}. {INITIATE_VM_DELETION}"
    return replace(without_node, description=text, announce=text != str(observed_operation(req.status)
                                                                         .get("description") or ""))


def _count_new_drains(req: HookRequest, declared: list[dict[str, Any]]) -> None:
    """A drain Job declared that Metacontroller has not created yet is a drain started (or retried)."""
    observed = {objects.name(job) for job in (req.attachments.get(JOB_KEY) or {}).values()}
    for job in declared:
        if objects.name(job) not in observed:
            attempt = objects.string(objects.annotations(job), ATTEMPT_ANNOTATION, default="1")
            events.emit(events.DRAIN_STARTED, retry=attempt != "1")


def _drain_inputs(req: HookRequest) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any]]:
    """The Machine, Node and Jobs as the drain planner expects them: odd shapes reduced to empty ones."""
    machine_view = {
        **req.machine,
        "status": {
            "currentStatus": objects.mapping(req.status, "currentStatus"),
            "lastOperation": observed_operation(req.status),
        },
    }
    node = req.node
    if node is not None and not isinstance(node.get("status"), dict):
        node = {**node, "status": {}}
    jobs = {
        key: job
        for key, job in (req.attachments.get(JOB_KEY) or {}).items()
        if isinstance(job, dict) and isinstance(job.get("metadata"), dict)
        and isinstance(job["metadata"].get("annotations") or {}, dict)
        and (job.get("status") is None or isinstance(job.get("status"), dict))
    }
    return machine_view, node, {JOB_KEY: jobs}



def _release_devices(req: HookRequest, ctx: HookContext, seen: state.Observed, *,
                     announce: str | None, token_done: bool = True) -> Outcome:
    """The device step. With `announce` (the drain outcome not yet shown), a Machine whose devices are all gone is
    let go at once; otherwise the drain outcome is written first and the devices are deleted in the next call."""
    driver = _driver(ctx)
    checked = check(req, driver)
    if checked.access_problems:
        return _answer(req, seen, state.next_status(seen, state.CannotDelete(checked.access_problems, announce or "")))
    try:
        install = installation.installation_id(ctx.settings, req.related)
        result = driver.delete_machine(req.for_driver(installation_id=install), dry_run=announce is not None)
    except DriverError as exc:
        return _answer(req, seen, state.next_status(seen, state.DeleteFailed(exc)))
    if announce and result.present:
        return _answer(req, seen, state.next_status(seen, state.DeletionAnnounced(announce)))
    note = ""
    if result.foreign_id:
        note = (f" Device {result.foreign_id} recorded on the Machine does not carry its ownership tag "
                f"{result.owner_tag} and was left alone.")
    if result.present:
        return _answer(req, seen, state.next_status(seen, state.Deleting(result.present, note)))
    # Every device is gone: the Node goes next (MCM's deleteNodeObject), if it is provably the Machine's.
    removal = node_side.plan_node_removal(req.machine, req.node, node_side.recorded_device(req.machine),
                                          req.attachments, ctx.settings.node_jobs)
    event = state.NodeRemoval(removal.description, removal.state, removal.done and token_done,
                              removal.resync or node_side.POLL_SECONDS, note)
    outcome = _answer(req, seen, state.next_status(seen, event))
    outcome.attachments = removal.attachments
    return outcome
