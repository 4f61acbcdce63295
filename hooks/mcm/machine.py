"""The DecoratorController `metal-machines`: one provider device per MCM Machine.

Hooks (all Metacontroller hook version v2, related keys `namespace/name`):

* customize asks for the Machine's MachineClass, the credentials Secrets of the Machine's namespace (label
  `metal-machine-hooks/credentials: "true"`), the Node named like the Machine, the target kubeconfig Secret of the
  namespace (label `metal-machine-hooks/target-kubeconfig: "true"`) and the MachineSet that controls it.
* sync asks the driver for the Machine's device (GetMachineStatus), creates one when there is none (at most once
  per sync, and never while the Machine's MachineSet is missing or being deleted), and reports MCM's status.
* finalize (hooks.mcm.machine_deletion) first drains the Machine's Node with a Job attachment (hooks.mcm.drain
  decides; docs/drain.md), shows each drain outcome in lastOperation before the next step, then asks the driver to
  delete every device of the Machine, then removes its Node, and answers `finalized: true` only once no device is
  left and the Node is gone.
* Two clusters (hooks.mcm.machine_target, docs/operations.md): when the namespace names a target cluster, the Node
  is read from the target's API instead of the related one, every Job mounts the kubeconfig, and a target that
  cannot be read freezes the Machine (never Failed for it) as MCM's safety controller does.
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
from dataclasses import replace
from typing import Any

from hooks import events, objects
from hooks.config import CREDENTIALS_LABEL, CREDENTIALS_LABEL_VALUE
from hooks.context import HookContext
from hooks.driver import DEVICE_ID_ANNOTATION, PROVIDER_ID_ANNOTATION, Device, DriverError, StatusResponse
from hooks.mcm import installation, machine_deletion, machine_target, machineclass, node_side
from hooks.mcm import machine_state as state
from hooks.mcm import vocabulary as mcm
from hooks.mcm.bootstrap import BootstrapTokenError
from hooks.mcm.machine_outcome import Outcome, answer, driver_of, observed
from hooks.mcm.machine_request import Checked, HookRequest, check, check_machine, parse_request
from hooks.mcm.machine_status import node_conditions, observed_phase
from hooks.target.kubeconfig import customize_rule as target_rule

log = logging.getLogger("hooks.machine")

__all__ = ["DEVICE_ID_ANNOTATION", "PROVIDER_ID_ANNOTATION", "customize", "finalize", "sync"]



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
    rules.append(target_rule(namespace))  # the namespace's target cluster, if it names one (two clusters)
    owner = state.controller_machineset(parent)
    if owner:
        rules.append({"apiVersion": mcm.API_VERSION, "resource": "machinesets", "namespace": namespace,
                      "names": [owner]})
    rules.extend(installation.related_rules(ctx.settings))  # the installation id, unless configured
    return {"relatedResources": rules}


# ------------------------------------------------------------------------------------------------------------- sync


def sync(body: dict[str, Any], ctx: HookContext) -> dict[str, Any]:
    req = parse_request(body)
    source = machine_target.NodeSource(req)
    if observed_phase(req.status) == mcm.FAILED:
        outcome = Outcome()  # terminal: the MachineSet replaces a Failed Machine; no status, its Jobs go
    else:
        source = machine_target.observe(req, ctx)
        req = source.req
        outcome = _sync(req, ctx, source)
    outcome.annotations.update(source.annotations())
    outcome.attachments = source.jobs(outcome.attachments)
    # Every Machine carries its class's label, so a MachineClass relates only its own Machines (machineclass.py).
    class_label = machineclass.machine_class_label(req.machine)
    if req.labels.get(machineclass.CLASS_LABEL) != class_label:
        outcome.labels[machineclass.CLASS_LABEL] = class_label
    return outcome.response()


def _sync(req: HookRequest, ctx: HookContext, source: machine_target.NodeSource) -> Outcome:
    """Frozen while the target cannot be read, MCM's reset once it answers, else the usual reconcile."""
    decision = source.decision
    if decision is not None and decision.frozen:
        return machine_target.frozen(req, ctx, decision)
    reset = machine_target.recovered(req, ctx, decision) if decision is not None else None
    if reset is not None:
        return reset
    outcome = reconcile(req, ctx)
    if outcome.status is not None:
        outcome.attachments = _node_side_jobs(req, ctx, outcome)
    return outcome


def reconcile(req: HookRequest, ctx: HookContext) -> Outcome:
    """The sync step: validate, look the device up, create when allowed; `machine_state` decides the status."""
    if observed_phase(req.status) == mcm.FAILED:
        return Outcome()  # terminal: the MachineSet replaces a Failed Machine
    driver, seen = driver_of(ctx), observed(req, ctx)
    install = installation.installation_id(ctx.settings, req.related)
    checked = check(req, driver)
    recorded = driver.recorded_device_id(req.machine)
    if checked.access_problems or (checked.problems and not recorded):
        outcome = answer(req, seen, state.next_status(seen, state.Invalid(checked.problems or
                                                                           checked.access_problems)))
        outcome.labels, outcome.annotations = _decorations(req, ctx, checked, None)
        return outcome
    try:
        found = driver.get_machine_status(req.for_driver(installation_id=install))
    except DriverError as exc:
        return answer(req, seen, state.next_status(seen, state.CallFailed(exc, "looking up the device")))
    if found.device is not None:
        return _with_device(req, ctx, seen, checked, found.device, _lookup_notes(found), bool(found.duplicates_left))
    if found.foreign_id:
        event = state.ForeignDevice(found.foreign_id, found.owner_tag, found.foreign_reason)
        return answer(req, seen, state.next_status(seen, event))
    if found.recorded_id:
        return answer(req, seen, state.next_status(seen, state.DeviceGone(found.recorded_id, found.owner_tag)))
    if checked.problems:
        return answer(req, seen, state.next_status(seen, state.Invalid(checked.problems)))
    owner = state.owner_problem(req.machine, objects.mapping(req.related, mcm.MACHINESET_KEY))
    if not owner and not install:
        owner = installation.MISSING  # fail closed: a device without the installation's mark could be collected
    step = state.next_status(seen, state.OwnerNotReady(owner) if owner else state.NoDevice())
    if not step.create:
        return answer(req, seen, step)
    token = _token(req, ctx)
    if isinstance(token, state.TokenStep):
        return answer(req, seen, state.next_status(seen, token))
    if not token.done:
        return answer(req, seen, state.next_status(seen, state.TokenStep(token.description, token.state,
                                                                          token.resync)))
    try:
        device = driver.create_machine(req.for_driver(token.user_data if req.user_data() is not None else None,
                                                      installation_id=install))
    except DriverError as exc:
        return answer(req, seen, state.next_status(seen, state.CallFailed(exc)))
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
    outcome = answer(
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
    return machine_deletion.finalize(parse_request(body), ctx).response()
