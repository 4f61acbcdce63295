"""The Machine state machine: one pure function from what a hook call observed to the Machine's next status.

`next_status(observed, event)` decides the phase, the lastOperation (description, state, type, errorCode), the
resync and whether to create a device, from the observed Machine, its Device (or none), its Node (or none), the
time and the settings, plus what the last step produced (`event`: a driver error, "no device", "created", a drain
step, ...). `hooks.mcm.machine` only gathers the inputs, calls the driver and writes the answer; every phase choice
is here, mirroring MCM's `pkg/util/provider/machinecontroller/machine.go` and `machine_util.go` (see
tests/test_machine_state.py for each transition and the MCM function it follows).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hooks import objects
from hooks.driver import Device, DeviceState
from hooks.mcm import vocabulary as mcm
from hooks.mcm.drain import INITIATE_VM_DELETION
from hooks.mcm.machine_events import (  # noqa: F401  (the events are part of this module's interface)
    FINALIZE_EVENTS,
    CallFailed,
    CannotDelete,
    CleanupSkipped,
    Deleted,
    DeleteFailed,
    Deleting,
    DeletionAnnounced,
    DeviceGone,
    DrainStep,
    Event,
    ForeignDevice,
    HasDevice,
    HealthTimeoutReset,
    Invalid,
    NodeRemoval,
    NoDevice,
    Observed,
    OwnerNotReady,
    TargetFrozen,
    TokenStep,
    Transition,
)
from hooks.mcm.machine_status import (
    Operation,
    backoff,
    describe_conditions,
    node_conditions,
    node_has_critical_taint,
    node_is_healthy,
    observed_operation,
    operation_since,
    unhealthy_condition_types,
)
from hooks.mcm.node_proof import prove
from hooks.mcm.timefmt import go_duration, parse_time

# Seconds until the next look while something is moving; steady phases rely on the controller's resyncPeriodSeconds.
PROVISIONING_RESYNC = 10.0
AWAIT_NODE_RESYNC = 30.0
UNKNOWN_OUTCOME_RESYNC = 5.0
OWNER_RESYNC = 5.0
DELETING_RESYNC = 5.0
HEALTH_RECHECK = 60.0
DELETE_BACKOFF_CAP = 120.0

CREATION_PHASES = ("", mcm.PENDING, mcm.CRASH_LOOP)
OPT_OUT_HINT = (f"If the device is known to be gone, annotate the Machine with {mcm.SKIP_CLEANUP_ANNOTATION}=\"true\" "
                "to let it go")


def next_status(seen: Observed, event: Event) -> Transition:
    """The one place a Machine's next phase and lastOperation are decided."""
    if isinstance(event, HasDevice):
        return device_phase(seen, event.device, event.notes)
    if isinstance(event, FINALIZE_EVENTS):
        return _finalize(seen, event)
    if isinstance(event, Invalid):
        return _failure(seen, _cloud(f"invalid machine: {'; '.join(event.problems)}"), mcm.INVALID_ARGUMENT)
    if isinstance(event, CallFailed):
        return _call_failed(seen, event)
    if isinstance(event, ForeignDevice):
        text = (f"device {event.device_id} recorded on machine {seen.name} does not carry the ownership tag "
                f"{event.owner_tag} and cannot be adopted; it will not be used or deleted. "
                + (event.reason or "Remove the device id from the Machine to let the hooks create one"))
        return _failure(seen, _cloud(text), mcm.FAILED_PRECONDITION)
    if isinstance(event, DeviceGone):
        # MCM's reconcileMachineHealth: a VM that vanished (GetMachineStatus NotFound) fails the Machine.
        text = (f"device {event.device_id} of machine {seen.name} is gone or being deleted at the provider and "
                f"no other device carries the tag {event.owner_tag}: it was deleted outside the hooks")
        return Transition(mcm.FAILED, Operation(_cloud(text), mcm.STATE_FAILED, mcm.OP_HEALTH, mcm.NOT_FOUND))
    if isinstance(event, TokenStep):
        return _token_step(seen, event)
    if isinstance(event, TargetFrozen):
        return _frozen(seen, event)
    if isinstance(event, HealthTimeoutReset):
        # Sent for an Unknown Machine only: Running again, its health timeout counted from now.
        return Transition(mcm.RUNNING, Operation(event.description, mcm.SUCCESSFUL, mcm.OP_HEALTH), event.resync)
    if isinstance(event, OwnerNotReady):
        text = f"Not creating a device: {event.reason}"
        return Transition(mcm.PENDING, Operation(text, mcm.PROCESSING, mcm.OP_CREATE), OWNER_RESYNC)
    # NoDevice: MCM's triggerCreationFlow, guarded by the creation timeout (machine_util.go checkCreationTimeout).
    if seen.creation_left <= 0:
        return _join_timeout(seen)
    return Transition(seen.phase, None, create=True)


def _token_step(seen: Observed, event: TokenStep) -> Transition:
    """No device before its token: a token that cannot be made is a create failure (CrashLoopBackOff, Failed past
    the creation timeout); a token Job that runs keeps the Machine Pending, one that failed (and is retried as a new
    Job) shows CrashLoopBackOff, as a failed create does in MCM."""
    if event.code:
        return _failure(seen, event.description, event.code)
    if seen.creation_left <= 0:
        return _join_timeout(seen)
    phase = mcm.CRASH_LOOP if event.state == mcm.STATE_FAILED else mcm.PENDING
    wait = min(event.resync or PROVISIONING_RESYNC, max(1.0, seen.creation_left + 1))
    return Transition(phase, Operation(event.description, event.state, mcm.OP_CREATE), wait)


def _frozen(seen: Observed, event: TargetFrozen) -> Transition:
    """Nothing decided from a Node that cannot be read: the phase stays (Terminating while deleting), the operation
    says why, and a deleting Machine is not let go."""
    if objects.meta(seen.machine).get("deletionTimestamp"):
        return Transition(mcm.TERMINATING, Operation(event.description, mcm.PROCESSING, mcm.OP_DELETE), event.resync,
                          finalized=False)
    op_type = str(observed_operation(seen.status).get("type") or "") or (
        mcm.OP_CREATE if seen.phase in CREATION_PHASES else mcm.OP_HEALTH)
    return Transition(seen.phase, Operation(event.description, mcm.PROCESSING, op_type), event.resync)


def _cloud(text: str) -> str:
    return mcm.CLOUD_PROVIDER_MESSAGE.format(error=text)


def _join_timeout(seen: Observed) -> Transition:
    timeout = seen.timeout("creationTimeout", seen.settings.creation_timeout)
    text = mcm.join_timeout(seen.name, go_duration(timeout))
    return Transition(mcm.FAILED, Operation(text, mcm.STATE_FAILED, mcm.OP_CREATE))


def _call_failed(seen: Observed, event: CallFailed) -> Transition:
    error = event.error
    text = f"{event.doing} failed: {error.message}" if event.doing else error.message
    outcome = _failure(seen, _cloud(text), error.code, retry_after=error.retry_after)
    if error.ambiguous and outcome.resync:
        # The next sync looks the device up instead of creating: soon, not after a growing back-off.
        return Transition(outcome.phase, outcome.operation, UNKNOWN_OUTCOME_RESYNC)
    return outcome


def _failure(seen: Observed, description: str, code: str, *, retry_after: float | None = None) -> Transition:
    """A failed step: CrashLoopBackOff while creating (Failed past the creation timeout), else the phase stays.

    MCM: triggerCreationFlow answers a create error with CrashLoopBackOff (machine_util.go
    machineCreateErrorHandler); a failed status call on a Running Machine keeps its phase."""
    phase = seen.phase
    creating = phase in CREATION_PHASES or (phase == mcm.AVAILABLE and not seen.settings.no_target_cluster)
    if creating:
        phase = mcm.FAILED if seen.creation_left <= 0 else mcm.CRASH_LOOP
    operation = Operation(description, mcm.STATE_FAILED, mcm.OP_CREATE if creating else mcm.OP_HEALTH, code)
    if phase == mcm.FAILED:
        return Transition(phase, operation)
    wait = backoff(seen.now, operation_since(seen.status, operation, seen.now))
    if retry_after:
        wait = max(wait, retry_after)
    if creating:
        wait = min(wait, max(1.0, seen.creation_left + 1))
    return Transition(phase, operation, wait)


def own_node(node: Mapping[str, Any] | None, device: Device | None) -> tuple[Mapping[str, Any] | None, str]:
    """The Node the Machine may follow for health and drain: the related Node only when hooks.mcm.node_proof proves
    it is the Machine's device's (a name or a `node` label never does); else None and a note saying why."""
    if node is None:
        return None, ""
    proof = prove(node, device)
    if proof.proven:
        return node, ""
    return None, f"{proof.reason}: it is not this Machine's Node, so it is neither followed for health nor drained"


def device_state_text(device: Device) -> str:
    return f"device {device.id} is {device.provider_state or 'in an unknown state'}"


def device_phase(seen: Observed, device: Device, extra: str = "") -> Transition:
    """The phase of a Machine whose device exists (MCM's reconcileMachineHealth and the creation flow's wait for
    the Node)."""
    name = seen.name
    if device.state is DeviceState.FAILED:
        op_type = mcm.OP_CREATE if seen.phase in CREATION_PHASES else mcm.OP_HEALTH
        text = _cloud(f"device {device.id} of machine {name} is in state failed at the provider")
        return Transition(mcm.FAILED, Operation(text, mcm.STATE_FAILED, op_type))
    active = device.state is DeviceState.ACTIVE
    if seen.settings.no_target_cluster and (seen.phase == mcm.AVAILABLE or active):
        return _without_target(seen, extra)
    healthy = active and node_is_healthy(seen.node, unhealthy_condition_types(seen.machine))
    if seen.phase == mcm.RUNNING:
        return _running(seen, device, healthy, extra)
    if seen.phase == mcm.UNKNOWN:
        return _unknown(seen, healthy)
    # Still joining: "", Pending, CrashLoopBackOff (or Available from an earlier no-target-cluster setting).
    if healthy and not node_has_critical_taint(seen.node):
        text = mcm.joined(name, go_duration(seen.age))
        return Transition(mcm.RUNNING, Operation(text, mcm.SUCCESSFUL, mcm.OP_CREATE))
    left = seen.creation_left
    if left <= 0:
        return _join_timeout(seen)
    wait = AWAIT_NODE_RESYNC if active else PROVISIONING_RESYNC
    return Transition(mcm.PENDING, Operation(mcm.CREATING + extra, mcm.PROCESSING, mcm.OP_CREATE), min(wait, left + 1))


def _without_target(seen: Observed, extra: str) -> Transition:
    """Like MCM without a target cluster: no health checks once Available, only a failed device fails it."""
    if seen.phase == mcm.AVAILABLE:
        if observed_operation(seen.status).get("state") == mcm.STATE_FAILED:
            text = f"Machine {seen.name} is available and its device is reachable again"
            return Transition(mcm.AVAILABLE, Operation(text, mcm.SUCCESSFUL, mcm.OP_HEALTH))
        return Transition(mcm.AVAILABLE, None)
    return Transition(mcm.AVAILABLE, Operation(mcm.CREATED_NO_TARGET + extra, mcm.SUCCESSFUL, mcm.OP_CREATE))


def _running(seen: Observed, device: Device, healthy: bool, extra: str = "") -> Transition:
    """MCM's reconcileMachineHealth on a Running Machine: unhealthy or missing Node makes it Unknown."""
    if healthy:
        if observed_operation(seen.status).get("state") == mcm.STATE_FAILED:
            text = f"Machine {seen.name} is running and its device is reachable again"
            return Transition(mcm.RUNNING, Operation(text, mcm.SUCCESSFUL, mcm.OP_HEALTH))
        return Transition(mcm.RUNNING, None)
    conditions = describe_conditions(node_conditions(seen.node))
    text = mcm.node_missing(seen.name) if seen.node is None else mcm.unhealthy(seen.name, conditions)
    if device.state is not DeviceState.ACTIVE:
        text += f"; {device_state_text(device)}"
    text += extra
    timeout = seen.timeout("healthTimeout", seen.settings.health_timeout)
    return Transition(mcm.UNKNOWN, Operation(text, mcm.PROCESSING, mcm.OP_HEALTH), min(HEALTH_RECHECK, timeout + 1))


def _unknown(seen: Observed, healthy: bool) -> Transition:
    """MCM's reconcileMachineHealth on an Unknown Machine: healthy again is Running, past healthTimeout Failed."""
    if healthy:
        return Transition(mcm.RUNNING, Operation(mcm.rejoined(seen.name), mcm.SUCCESSFUL, mcm.OP_HEALTH))
    timeout = seen.timeout("healthTimeout", seen.settings.health_timeout)
    since = parse_time(objects.mapping(seen.status, "currentStatus").get("lastUpdateTime")) or seen.now
    left = timeout - (seen.now - since).total_seconds()
    if left <= 0 and not objects.mapping(seen.machine, "spec").get("disableHealthTimeout"):
        if not seen.may_fail:
            # MCM keeps it Unknown and retries shortly while other Machines of the deployment are being replaced.
            return Transition(mcm.UNKNOWN, None, HEALTH_RECHECK)
        text = mcm.health_timeout(seen.name, go_duration(timeout), describe_conditions(node_conditions(seen.node)))
        return Transition(mcm.FAILED, Operation(text, mcm.STATE_FAILED, mcm.OP_HEALTH))
    return Transition(mcm.UNKNOWN, None, min(HEALTH_RECHECK, max(1.0, left + 1)))


def _finalize(seen: Observed, event: Event) -> Transition:
    """MCM's triggerDeletionFlow: drain, then delete the VM, then let the Machine go (always Terminating)."""

    def terminating(text: str, state: str, code: str = "", **kw: Any) -> Transition:
        return Transition(mcm.TERMINATING, Operation(text, state, mcm.OP_DELETE, code), **kw)

    def retry(text: str, code: str, *, cap: float = 300.0, at_least: float | None = None) -> Transition:
        operation = Operation(text, mcm.STATE_FAILED, mcm.OP_DELETE, code)
        wait = backoff(seen.now, operation_since(seen.status, operation, seen.now), cap=cap)
        return Transition(mcm.TERMINATING, operation, max(wait, at_least or 0.0), finalized=False)

    if isinstance(event, CleanupSkipped):
        return terminating(event.description, mcm.SUCCESSFUL, finalized=True)
    if isinstance(event, DrainStep):
        if event.code:
            return retry(event.description, event.code)
        return terminating(event.description, event.state, resync=event.resync, finalized=False)
    if isinstance(event, CannotDelete):
        text = (f"{event.note + ' ' if event.note else ''}"
                f"Cannot look for or delete the device of machine {seen.name}: {'; '.join(event.problems)}. "
                f"The Machine stays Terminating while its device may still run. {OPT_OUT_HINT}. "
                f"{INITIATE_VM_DELETION}")
        return retry(text, mcm.INVALID_ARGUMENT)
    if isinstance(event, DeletionAnnounced):
        return terminating(event.description, mcm.PROCESSING, resync=1.0, finalized=False)
    if isinstance(event, Deleting):
        text = f"{INITIATE_VM_DELETION}: waiting for device(s) {', '.join(event.present)} to be deleted.{event.note}"
        return terminating(text, mcm.PROCESSING, resync=DELETING_RESYNC, finalized=False)
    if isinstance(event, Deleted):
        text = f"VM deletion was successful. Initiate machine object finalizer removal.{event.note}"
        return terminating(text, mcm.SUCCESSFUL, finalized=True)
    if isinstance(event, NodeRemoval):
        if event.done:
            return terminating(event.description + event.note, event.state or mcm.SUCCESSFUL, finalized=True)
        return terminating(event.description + event.note, event.state or mcm.PROCESSING,
                           resync=event.resync or DELETING_RESYNC, finalized=False)
    if isinstance(event, DeleteFailed):
        # MCM's deleteVM: a failed DeleteMachine keeps the Machine Terminating and retries with a back-off.
        text = (f"VM deletion failed due to - {event.error.message}. However, will re-try in the next resync. "
                f"{INITIATE_VM_DELETION}")
        if event.error.code in (mcm.UNAUTHENTICATED, mcm.PERMISSION_DENIED):
            text = f"{text}. {OPT_OUT_HINT}"
        return retry(text, event.error.code, cap=DELETE_BACKOFF_CAP, at_least=event.error.retry_after)
    raise TypeError(f"not a finalize event: {event!r}")


def owner_problem(machine: Mapping[str, Any], machinesets: Mapping[str, Any]) -> str | None:
    """Why the Machine's controller does not want devices now, or None.

    A Machine whose MachineSet is being deleted, was replaced (another UID) or is not there at all is about to be
    garbage-collected; a device created now would be deleted again at once (or leak while the Machine lingers).
    Machines without a controller ownerReference are the user's own and are never held back.
    """
    ref = _controller_ref(machine)
    if ref is None:
        return None
    key = f"{objects.namespace(machine)}/{ref['name']}"
    owner = machinesets.get(key)
    if not isinstance(owner, dict):
        return f"its MachineSet {ref['name']} is not there (deleted, or not yet visible)"
    if ref.get("uid") and objects.uid(owner) and objects.uid(owner) != ref.get("uid"):
        return f"its MachineSet {ref['name']} was replaced (UID {objects.uid(owner)}, the Machine names {ref['uid']})"
    if objects.meta(owner).get("deletionTimestamp"):
        return f"its MachineSet {ref['name']} is being deleted"
    return None


def _controller_ref(machine: Mapping[str, Any]) -> dict[str, Any] | None:
    ref = next((r for r in objects.mappings(objects.meta(machine), "ownerReferences")
                if r.get("controller") is True and r.get("kind") == "MachineSet"), None)
    return ref if ref is not None and isinstance(ref.get("name"), str) and ref["name"] else None


def controller_machineset(machine: Mapping[str, Any]) -> str | None:
    """The name of the MachineSet that controls the Machine (its controller ownerReference), or None."""
    ref = _controller_ref(machine)
    return ref["name"] if ref else None
