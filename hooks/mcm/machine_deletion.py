"""The Machine's finalize hook: drain its Node, delete its devices, remove its Node, then let it go.

Drain first (hooks.mcm.drain decides, a Job attachment does it; docs/drain.md), showing each drain outcome in
lastOperation before the next step; then the driver deletes every device of the Machine; then its Node is removed
(hooks.mcm.node_side); `finalized: true` only once no device is left and the Node is gone. A related Node is
drained only when hooks.mcm.node_proof proves it is the Machine's device's; otherwise the drain is skipped and
lastOperation says why.

Two clusters (hooks.mcm.machine_target): the Node is read from the target; while the target cannot be read nothing
is drained or removed and the Machine stays (MCM holds deletions the same way); once the drain timeout has passed
the devices are deleted, but the Machine waits for the target to remove its Node and bootstrap token.

Opt-out: annotation `metal-machine-hooks/skip-device-cleanup: "true"` lets the Machine go at once without looking
for or deleting its device (docs in hooks.mcm.machine).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from hooks import events, objects
from hooks.context import HookContext
from hooks.driver import DriverError
from hooks.last_applied import kept
from hooks.mcm import installation, machine_target, node_side
from hooks.mcm import machine_state as state
from hooks.mcm import vocabulary as mcm
from hooks.mcm.bootstrap import expiration
from hooks.mcm.drain import INITIATE_VM_DELETION, JOB_KEY, DrainStep, plan_drain
from hooks.mcm.drain_job import ATTEMPT_ANNOTATION
from hooks.mcm.machine_outcome import Outcome, answer, driver_of, observed
from hooks.mcm.machine_request import HookRequest, check
from hooks.mcm.machine_status import observed_operation
from hooks.target.freeze import FROZEN_RESYNC, Action

log = logging.getLogger("hooks.machine")


def skips_cleanup(req: HookRequest) -> bool:
    return str(req.annotations.get(mcm.SKIP_CLEANUP_ANNOTATION, "")).strip().lower() == "true"


def finalize(req: HookRequest, ctx: HookContext) -> Outcome:
    """The finalize step in either topology: what the target allows first (hooks.mcm.machine_target), then
    `release`."""
    if skips_cleanup(req):
        return release(req, ctx)
    source = machine_target.observe(req, ctx)
    req = source.req
    if source.decision is not None and source.action is Action.HOLD_DELETION:
        outcome = machine_target.frozen(req, ctx, source.decision)
    elif source.decision is not None and source.action is Action.DELETE_DEVICE_ONLY:
        outcome = _release_devices(req, ctx, observed(req, ctx), announce=None, frozen=source.decision.operation)
        outcome.attachments = kept(req.attachments)
    else:
        outcome = release(req, ctx)
    outcome.annotations.update(source.annotations())
    outcome.attachments = source.jobs(outcome.attachments)
    return outcome


def release(req: HookRequest, ctx: HookContext) -> Outcome:
    """Drain the Node (hooks.mcm.drain), then delete every device of the Machine; finalized only when none is left."""
    seen = observed(req, ctx)
    if skips_cleanup(req):
        text = (f"Device cleanup skipped: annotation {mcm.SKIP_CLEANUP_ANNOTATION}=true; any device of machine "
                f"{req.name} is left as it is")
        outcome = answer(req, seen, state.next_status(seen, state.CleanupSkipped(text)))
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
        outcome = answer(req, seen, state.next_status(seen, event))
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
    driver = driver_of(ctx)
    device = None
    if not check(req, driver).access_problems:
        try:
            install = installation.installation_id(ctx.settings, req.related)
            device = driver.get_machine_status(req.for_driver(installation_id=install)).device
        except DriverError as exc:
            text = (f"Cannot prove that Node {objects.name(node)} is this Machine's before draining it: looking up "
                    f"the device failed: {exc.message}. Will re-try in the next resync")
            outcome = answer(req, seen, state.next_status(seen, state.DrainStep(text, mcm.STATE_FAILED,
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
                     announce: str | None, token_done: bool = True, frozen: str = "") -> Outcome:
    """The device step. With `announce` (the drain outcome not yet shown), a Machine whose devices are all gone is
    let go at once; otherwise the drain outcome is written first and the devices are deleted in the next call.
    With `frozen` (the target cannot be read, the drain timed out), the devices go but the Machine stays."""
    driver = driver_of(ctx)
    checked = check(req, driver)
    if checked.access_problems:
        return answer(req, seen, state.next_status(seen, state.CannotDelete(checked.access_problems, announce or "")))
    try:
        install = installation.installation_id(ctx.settings, req.related)
        result = driver.delete_machine(req.for_driver(installation_id=install), dry_run=announce is not None)
    except DriverError as exc:
        return answer(req, seen, state.next_status(seen, state.DeleteFailed(exc)))
    if announce and result.present:
        return answer(req, seen, state.next_status(seen, state.DeletionAnnounced(announce)))
    note = ""
    if result.foreign_id:
        note = (f" Device {result.foreign_id} recorded on the Machine does not carry its ownership tag "
                f"{result.owner_tag} and was left alone.")
    if result.present:
        return answer(req, seen, state.next_status(seen, state.Deleting(result.present, note)))
    if frozen:
        return answer(req, seen, state.next_status(seen, state.TargetFrozen(frozen + note, FROZEN_RESYNC)))
    # Every device is gone: the Node goes next (MCM's deleteNodeObject), if it is provably the Machine's.
    removal = node_side.plan_node_removal(req.machine, req.node, node_side.recorded_device(req.machine),
                                          req.attachments, ctx.settings.node_jobs)
    event = state.NodeRemoval(removal.description, removal.state, removal.done and token_done,
                              removal.resync or node_side.POLL_SECONDS, note)
    outcome = answer(req, seen, state.next_status(seen, event))
    outcome.attachments = removal.attachments
    return outcome
