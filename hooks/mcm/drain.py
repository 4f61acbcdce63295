"""Whether a deleted Machine's Node has been drained, and the Job that drains it.

Deleting a bare-metal server under running pods is what MCM users left it to avoid, so the finalize hook drains the
Node first: cordon, evict every pod (PodDisruptionBudgets respected), wait for them to go, and only then delete the
device. A hook cannot do that itself (it must answer in seconds and holds no state), so it declares the drain as a
DecoratorController attachment, a `batch/v1` Job in the Machine's namespace running `python -m drain NODE`, and
watches that Job in the following finalize calls. Metacontroller deletes attachments a response leaves out, so the
Job is returned on every call until the Machine is gone.

MCM's rules decide when the wait is skipped (`force-deletion` label, drain timeout since deletionTimestamp, Node not
Ready or with a read-only filesystem for more than 5 minutes); a Failed Machine is drained as any other, as MCM's
`drainNode` does (one Failed for health has had a NotReady Node for longer than 5 minutes, so the Node rule forces
it at once); each step is described
with MCM's lastOperation texts. Everything here is a pure function of the observed objects and the clock. The Job
itself is built and read in hooks/mcm/drain_job.py; the settings (DrainSettings) are read once at start-up as part
of hooks.config.Settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from hooks import objects
from hooks.config import DrainSettings
from hooks.mcm import vocabulary as mcm
from hooks.mcm.drain_job import (
    JOB_KEY,
    MAX_NAME,
    NODE_ANNOTATION,
    PREVIOUS_ERROR_ANNOTATION,
    attempt_of,
    build_job,
    conditions_of,
    drain_jobs,
    drain_timeout,
    job_name,
    job_outcome,
    job_problem,
    latest,
    redeclare,
)
from hooks.mcm.timefmt import go_duration, parse_time

# The names the Machine hook and the tests import from here.
__all__ = ["INITIATE_DRAIN", "INITIATE_VM_DELETION", "JOB_KEY", "MAX_NAME", "NODE_ANNOTATION",
           "PREVIOUS_ERROR_ANNOTATION", "DrainSettings", "DrainStep", "build_job", "drain_waived", "job_name",
           "plan_drain"]

FORCE_DELETION_LABEL = "force-deletion"
# MCM: a Node not Ready (or with a read-only filesystem) for this long is not worth waiting for.
NODE_UNHEALTHY_GRACE = timedelta(minutes=5)
# How often to look again while a drain runs; Job changes also trigger a finalize call on their own.
POLL_SECONDS = 30.0

# MCM's step names; a lastOperation of type Delete that names one of the later steps means the drain is over
# (MCM's deletion flow keys on the same substrings).
INITIATE_DRAIN = "Initiate node drain"
INITIATE_VM_DELETION = "Initiate VM deletion"
_AFTER_DRAIN_STEPS = (
    INITIATE_VM_DELETION,
    "Delete Volume Attachments",
    "Initiate node object deletion",
    "Initiate machine object finalizer removal",
)


@dataclass(frozen=True)
class DrainStep:
    """What finalize should do about the drain in this call.

    `attachments` must go into the finalize response's `attachments` list on every call (a Job left out is
    deleted). Until `ready_to_delete_device` (and while `announce`), set lastOperation from description/state
    (type Delete) and leave the device alone.
    """

    attachments: list[dict[str, Any]]
    ready_to_delete_device: bool
    description: str
    state: str
    resync_after: float
    forced: bool
    reason: str
    # Ready, but the Machine does not show this outcome yet: write description/state first and delete the device
    # in the next call (which sees it recorded and goes on), so users see each step as MCM shows it.
    announce: bool = False


def _last_operation(machine: dict[str, Any]) -> dict[str, Any]:
    return objects.mapping(machine, "status", "lastOperation")


def _done(machine: dict[str, Any], kept: list[dict[str, Any]], description: str, reason: str, *,
          forced: bool = False) -> DrainStep:
    """Ready to delete the device; announced first unless the Machine already shows this step."""
    last_description = str(_last_operation(machine).get("description") or "")
    announce = reason != "after-drain" and description != last_description
    return DrainStep(kept, True, description, mcm.PROCESSING, 0.0, forced, reason, announce)


def plan_drain(
    machine: dict[str, Any],
    node: dict[str, Any] | None,
    attachments: Mapping[str, Any],
    settings: DrainSettings,
    now: datetime,
) -> DrainStep:
    """Decide the drain step of a Machine being finalized from what is observed now."""
    node_name = str(objects.labels(machine).get(mcm.NODE_LABEL) or "")
    job = latest(drain_jobs(attachments), node_name)
    # Declare the Job we observe on every call, rebuilt from its own annotations: one left out would be deleted
    # under a running drain. Older tries and Jobs for another Node are left out, so Metacontroller removes them.
    kept = [redeclare(machine, job, settings)] if job else []
    skipped = _skipped(machine, node_name, node, settings, kept)
    if skipped is not None:
        return skipped
    assert node is not None  # _skipped answers for a missing Node
    outcome = job_outcome(job) if job else None
    if outcome == "succeeded":
        return _done(machine, kept, f"Drain successful. {INITIATE_VM_DELETION}", "drained")
    force = _force_reason(machine, node, settings, now)
    if force:
        return _forced(machine, kept, job, outcome == "failed", force)
    return _draining(machine, node_name, node, job, outcome == "failed", kept, settings, now)


def _skipped(machine: dict[str, Any], node_name: str, node: dict[str, Any] | None, settings: DrainSettings,
             kept: list[dict[str, Any]]) -> DrainStep | None:
    """The step when there is nothing to drain (or the drain is over already), else None."""
    last_op = _last_operation(machine)
    last_description = str(last_op.get("description") or "")
    if last_op.get("type") == mcm.OP_DELETE and any(step in last_description for step in _AFTER_DRAIN_STEPS):
        # Finalize already moved past the drain (the device may be half deleted): never start one again.
        return _done(machine, kept, last_description, "after-drain")
    if not settings.enabled:
        return _done(machine, kept, f"Skipping drain as draining is disabled. {INITIATE_VM_DELETION}", "disabled")
    if not node_name:
        return _done(machine, kept, f"Skipping drain as nodeName is not a valid one for machine. "
                                    f"{INITIATE_VM_DELETION}", "no-node")
    if node is None:
        return _done(machine, kept, f"Skipping drain as node object does not exist. {INITIATE_VM_DELETION}",
                     "node-missing")
    return None


def _forced(machine: dict[str, Any], kept: list[dict[str, Any]], job: dict[str, Any] | None, failed: bool,
            force: tuple[str, str]) -> DrainStep:
    """A force rule applies: delete the device whether or not a drain Job ran or finished."""
    reason, why = force
    if job is None:
        return _done(machine, kept, f"Skipping drain as {why}. {INITIATE_VM_DELETION}", reason, forced=True)
    problem = job_problem(job) if failed else f"drain job {job['metadata']['name']} still running"
    return _done(
        machine, kept,
        f"Drain failed due to - {problem}. However, since it's a force deletion shall continue deletion of VM. "
        f"{INITIATE_VM_DELETION}",
        reason,
        forced=True,
    )


def _draining(machine: dict[str, Any], node_name: str, node: dict[str, Any], job: dict[str, Any] | None,
              failed: bool, kept: list[dict[str, Any]], settings: DrainSettings, now: datetime) -> DrainStep:
    """Wait for the drain: declare the first try, the next try after a failed one, or the running one again."""
    resync = _next_look(machine, node, settings, now)
    if job is not None and failed:
        error = job_problem(job)
        retry = build_job(machine, node_name, settings, attempt=attempt_of(job) + 1, previous_error=error)
        return DrainStep([retry], False, f"Drain failed due to - {error}. Will retry in next sync. {INITIATE_DRAIN}",
                         mcm.STATE_FAILED, resync, False, "retrying")
    if not kept:
        kept = [build_job(machine, node_name, settings, attempt=1)]
    previous = kept[0]["metadata"]["annotations"].get(PREVIOUS_ERROR_ANNOTATION)
    if previous:
        # MCM keeps the failure in lastOperation while it drains again; so do we.
        description = f"Drain failed due to - {previous}. Will retry in next sync. {INITIATE_DRAIN}"
        return DrainStep(kept, False, description, mcm.STATE_FAILED, resync, False, "retrying")
    return DrainStep(kept, False, INITIATE_DRAIN, mcm.PROCESSING, resync, False, "draining")


def _condition(node: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in conditions_of(node) if c.get("type") == kind), None)


def _unhealthy_since(node: dict[str, Any], kind: str, healthy: str) -> datetime | None:
    """When the Node's `kind` condition left its healthy value, if it has (MCM ignores missing conditions)."""
    cond = _condition(node, kind)
    if cond is None or cond.get("status") == healthy:
        return None
    return parse_time(cond.get("lastTransitionTime"))


def drain_waived(machine: dict[str, Any], settings: DrainSettings, now: datetime) -> bool:
    """True when no drain is owed any more whatever the Node's state: the force-deletion label, or the drain timeout
    passed since deletion (an unreachable target then holds only the Node's removal, hooks.target.freeze)."""
    reason = _force_reason(machine, {}, settings, now)
    return reason is not None and reason[0] in ("force-label", "drain-timeout")


def _force_reason(
    machine: dict[str, Any], node: dict[str, Any], settings: DrainSettings, now: datetime
) -> tuple[str, str] | None:
    """(reason, MCM-style phrase) of the first rule that says not to wait for the drain, or None."""
    if str(objects.labels(machine).get(FORCE_DELETION_LABEL, "")).lower() == "true":
        return "force-label", f"the {FORCE_DELETION_LABEL} label is set"
    timeout = drain_timeout(machine, settings)
    deleted_at = parse_time(objects.meta(machine).get("deletionTimestamp"))
    if deleted_at is not None and (now - deleted_at).total_seconds() > timeout:
        return "drain-timeout", f"the drain timeout of {go_duration(timeout)} has passed since deletion"
    since = _unhealthy_since(node, "Ready", "True")
    if since is not None and now - since > NODE_UNHEALTHY_GRACE:
        return "node-not-ready", "machine is NotReady for over 5minutes"
    since = _unhealthy_since(node, "ReadonlyFilesystem", "False")
    if since is not None and now - since > NODE_UNHEALTHY_GRACE:
        return "node-readonly-filesystem", "machine is in ReadonlyFilesystem for over 5minutes"
    return None


def _next_look(machine: dict[str, Any], node: dict[str, Any], settings: DrainSettings, now: datetime) -> float:
    """Seconds until the next finalize call: the poll interval, or sooner when a force rule is about to apply."""
    moments = []
    deleted_at = parse_time(objects.meta(machine).get("deletionTimestamp"))
    if deleted_at is not None:
        moments.append(deleted_at + timedelta(seconds=drain_timeout(machine, settings)))
    for kind, healthy in (("Ready", "True"), ("ReadonlyFilesystem", "False")):
        since = _unhealthy_since(node, kind, healthy)
        if since is not None:
            moments.append(since + NODE_UNHEALTHY_GRACE)
    waits = [(m - now).total_seconds() + 1.0 for m in moments if m > now]
    return max(1.0, min([POLL_SECONDS, *waits]))
