"""Every transition of the Machine state machine (hooks.mcm.machine_state.next_status), one table row each.

Each row names the MCM function whose behaviour it mirrors (gardener/machine-controller-manager,
pkg/util/provider/machinecontroller/):

* `triggerCreationFlow` (machine.go): no VM yet → CreateMachine; Pending "Creating machine on cloud provider".
* `machineCreateErrorHandler` (machine_util.go, called from triggerCreationFlow): a failed create or status call
  while creating → CrashLoopBackOff, lastOperation Create/Failed with the driver's code; Failed once the creation
  timeout has passed.
* `reconcileMachineHealth` (machine_util.go): Pending → Running when the Node is Ready ("successfully joined the
  cluster in"), Running → Unknown when it is not or is gone, Unknown → Running ("re-joined"), Unknown → Failed
  after the health timeout, Pending/CrashLoopBackOff → Failed after the creation timeout ("failed to join the
  cluster in"), Available without a target cluster; a VM gone at the provider fails the Machine (NotFound).
* `triggerDeletionFlow` (machine.go) with `drainNode`, `deleteVM` ("VM deletion failed due to - ... However,
  will re-try in the next resync.") and `deleteMachineFinalizers` ("VM deletion was successful. Initiate machine
  object finalizer removal."): always Terminating, type Delete.

Rows marked "ours" have no MCM counterpart: the device id recorded on a Machine that is not its own
(FailedPrecondition), a Machine whose MachineSet is going (Pending, nothing created), the skip-cleanup opt-out and
a cleanup impossible without credentials.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hooks.config import Settings
from hooks.driver import Address, Device, DeviceState, DriverError
from hooks.mcm import machine_state as ms
from hooks.mcm.machine_state import Observed, Transition, next_status

NOW = datetime(2026, 11, 25, 10, 5, 0, tzinfo=UTC)
NAME = "worker-a"


def machine(phase: str = "", *, age: float = 300, op: dict[str, Any] | None = None, since: float = 60,
            **spec: Any) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if phase:
        status["currentStatus"] = {"phase": phase, "lastUpdateTime": _t(NOW - timedelta(seconds=since))}
    if op:
        status["lastOperation"] = {**op, "lastUpdateTime": _t(NOW - timedelta(seconds=since))}
    created = _t(NOW - timedelta(seconds=age))
    return {"metadata": {"name": NAME, "namespace": "ns", "uid": "u-1", "creationTimestamp": created},
            "spec": spec, "status": status}


def _t(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def node(*, ready: bool = True, taint: bool = False, pressure: bool = False) -> dict[str, Any]:
    conditions = [{"type": "Ready", "status": "True" if ready else "False"},
                  {"type": "DiskPressure", "status": "True" if pressure else "False"}]
    spec = {"taints": [{"key": "node.gardener.cloud/critical-components-not-ready", "effect": "NoSchedule"}]} \
        if taint else {}
    return {"metadata": {"name": NAME}, "spec": spec, "status": {"conditions": conditions}}


def device(state: DeviceState = DeviceState.ACTIVE) -> Device:
    return Device(id="d-1", provider_id="fake://d-1", state=state, provider_state=state.value,
                  addresses=(Address("10.0.0.1", "InternalIP"),), owner_uid="u-1")


@dataclass(frozen=True)
class Row:
    name: str
    mcm: str
    machine: dict[str, Any]
    event: Any
    phase: str
    description: str | None  # None: the observed lastOperation is kept
    state: str = ""
    type: str = ""
    code: str = ""
    node: dict[str, Any] | None = None
    settings: Settings = field(default_factory=Settings)
    create: bool = False
    finalized: bool | None = None
    resync: tuple[float, float] = (0.0, 0.0)  # inclusive bounds


CREATING = "Creating machine on cloud provider"
FAILED_OP = {"description": "x", "state": "Failed", "type": "HealthCheck"}
UNAVAILABLE = DriverError("list_devices failed: HTTP 503", "Unavailable")
RATE_LIMITED = DriverError("HTTP 429", "ResourceExhausted", retry_after=90.0)
LOST = DriverError("the outcome of the create request is unknown (timeout)", "Unavailable", ambiguous=True)
DENIED = DriverError("delete_device failed: HTTP 403", "PermissionDenied")
DRAIN_MSG = "Drain successful. Initiate VM deletion"
FROZEN = "target cluster API unavailable since 2026-11-25T10:00:00Z (unreachable): GET node worker-a: refused"
RESET = "Machine Health Timeout was reset due to APIServer being unreachable"

ROWS = [
    # -- creation ---------------------------------------------------------------------------------------------
    Row("no device: create", "triggerCreationFlow", machine(), ms.NoDevice(), "", None, create=True),
    Row("no device past creation timeout", "reconcileMachineHealth (creation timeout)", machine("Pending", age=1300),
        ms.NoDevice(), "Failed", "Machine worker-a failed to join the cluster in 20m0s minutes.", "Failed", "Create"),
    Row("created, provisioning", "triggerCreationFlow", machine(), ms.HasDevice(device(DeviceState.PROVISIONING)),
        "Pending", CREATING, "Processing", "Create", resync=(10, 10)),
    Row("active, no Node yet", "triggerCreationFlow", machine("Pending"), ms.HasDevice(device()),
        "Pending", CREATING, "Processing", "Create", resync=(30, 30)),
    Row("active, Node Ready", "reconcileMachineHealth", machine("Pending"), ms.HasDevice(device()),
        "Running", "Machine worker-a successfully joined the cluster in 5m0s", "Successful", "Create", node=node()),
    Row("Node Ready but critical taint", "reconcileMachineHealth", machine("Pending"), ms.HasDevice(device()),
        "Pending", CREATING, "Processing", "Create", node=node(taint=True), resync=(30, 30)),
    Row("joining past creation timeout", "reconcileMachineHealth", machine("Pending", age=1300),
        ms.HasDevice(device()), "Failed", "Machine worker-a failed to join the cluster in 20m0s minutes.", "Failed",
        "Create"),
    Row("device failed while creating", "reconcileMachineHealth", machine("Pending"),
        ms.HasDevice(device(DeviceState.FAILED)), "Failed",
        "Cloud provider message - device d-1 of machine worker-a is in state failed at the provider", "Failed",
        "Create"),
    Row("invalid class", "machineCreateErrorHandler", machine(), ms.Invalid(("metro: Required value",)),
        "CrashLoopBackOff", "Cloud provider message - invalid machine: metro: Required value", "Failed", "Create",
        "InvalidArgument", resync=(5, 5)),
    Row("lookup failed", "machineCreateErrorHandler", machine("Pending"),
        ms.CallFailed(UNAVAILABLE, "looking up the device"), "CrashLoopBackOff",
        "Cloud provider message - looking up the device failed: list_devices failed: HTTP 503", "Failed", "Create",
        "Unavailable", resync=(5, 5)),
    Row("rate limited: at least Retry-After", "machineCreateErrorHandler", machine(), ms.CallFailed(RATE_LIMITED),
        "CrashLoopBackOff", "Cloud provider message - HTTP 429", "Failed", "Create", "ResourceExhausted",
        resync=(90, 90)),
    Row("create answer lost: look again soon", "machineCreateErrorHandler", machine(), ms.CallFailed(LOST),
        "CrashLoopBackOff", "Cloud provider message - the outcome of the create request is unknown (timeout)",
        "Failed", "Create", "Unavailable", resync=(5, 5)),
    Row("create failed past creation timeout", "machineCreateErrorHandler", machine("CrashLoopBackOff", age=1300),
        ms.CallFailed(UNAVAILABLE), "Failed", "Cloud provider message - list_devices failed: HTTP 503", "Failed",
        "Create", "Unavailable"),
    Row("ours: recorded device not ours", "ours", machine(), ms.ForeignDevice("d-9", "owner:u-1"),
        "CrashLoopBackOff", "Cloud provider message - device d-9 recorded on machine worker-a does not carry the "
        "ownership tag owner:u-1 and cannot be adopted; it will not be used or deleted. Remove the "
        "device id from the Machine to let the hooks create one", "Failed", "Create", "FailedPrecondition",
        resync=(5, 5)),
    Row("ours: MachineSet going, nothing created", "ours", machine(),
        ms.OwnerNotReady("its MachineSet ms-1 is being deleted"), "Pending",
        "Not creating a device: its MachineSet ms-1 is being deleted", "Processing", "Create", resync=(5, 5)),
    # -- health -----------------------------------------------------------------------------------------------
    Row("Running, healthy: unchanged", "reconcileMachineHealth", machine("Running"), ms.HasDevice(device()),
        "Running", None, node=node()),
    Row("Running, Node not Ready", "reconcileMachineHealth", machine("Running"), ms.HasDevice(device()), "Unknown",
        "Machine worker-a is unhealthy - changing MachinePhase to Unknown. Node conditions: Ready=False, "
        "DiskPressure=False", "Processing", "HealthCheck", node=node(ready=False), resync=(60, 60)),
    Row("Running, DiskPressure", "reconcileMachineHealth", machine("Running"), ms.HasDevice(device()), "Unknown",
        "Machine worker-a is unhealthy - changing MachinePhase to Unknown. Node conditions: Ready=True, "
        "DiskPressure=True", "Processing", "HealthCheck", node=node(pressure=True), resync=(60, 60)),
    Row("Running, Node gone", "reconcileMachineHealth", machine("Running"), ms.HasDevice(device()), "Unknown",
        "Node object went missing. Machine worker-a is unhealthy - changing MachinePhase to Unknown", "Processing",
        "HealthCheck", resync=(60, 60)),
    Row("Running, device not active", "reconcileMachineHealth", machine("Running"),
        ms.HasDevice(device(DeviceState.PROVISIONING)), "Unknown",
        "Machine worker-a is unhealthy - changing MachinePhase to Unknown. Node conditions: Ready=True, "
        "DiskPressure=False; device d-1 is provisioning", "Processing", "HealthCheck", node=node(), resync=(60, 60)),
    Row("Running after a failed call: recovered", "reconcileMachineHealth", machine("Running", op=FAILED_OP),
        ms.HasDevice(device()), "Running", "Machine worker-a is running and its device is reachable again",
        "Successful", "HealthCheck", node=node()),
    Row("Running, lookup failed: phase kept", "reconcileMachineHealth", machine("Running"),
        ms.CallFailed(UNAVAILABLE, "looking up the device"), "Running",
        "Cloud provider message - looking up the device failed: list_devices failed: HTTP 503", "Failed",
        "HealthCheck", "Unavailable", resync=(5, 5)),
    Row("Unknown, healthy again", "reconcileMachineHealth", machine("Unknown"), ms.HasDevice(device()), "Running",
        "Machine worker-a successfully re-joined the cluster", "Successful", "HealthCheck", node=node()),
    Row("Unknown within health timeout", "reconcileMachineHealth", machine("Unknown", since=300),
        ms.HasDevice(device()), "Unknown", None, node=node(ready=False), resync=(60, 60)),
    Row("Unknown past health timeout", "reconcileMachineHealth", machine("Unknown", since=601),
        ms.HasDevice(device()), "Failed", "Machine worker-a health checks failing since last 10m0s minutes. Updating "
        "machine phase to Failed. Node Conditions: Ready=False, DiskPressure=False", "Failed", "HealthCheck",
        node=node(ready=False)),
    Row("Unknown past health timeout, disabled", "reconcileMachineHealth",
        machine("Unknown", since=601, disableHealthTimeout=True), ms.HasDevice(device()), "Unknown", None,
        node=node(ready=False), resync=(1, 1)),
    Row("device failed while Running", "reconcileMachineHealth", machine("Running"),
        ms.HasDevice(device(DeviceState.FAILED)), "Failed",
        "Cloud provider message - device d-1 of machine worker-a is in state failed at the provider", "Failed",
        "HealthCheck", node=node()),
    Row("recorded device gone", "reconcileMachineHealth (VM NotFound)", machine("Running"),
        ms.DeviceGone("d-1", "owner:u-1"), "Failed", "Cloud provider message - device d-1 of machine worker-a is "
        "gone or being deleted at the provider and no other device carries the tag owner:u-1: it was deleted "
        "outside the hooks", "Failed", "HealthCheck", "NotFound"),
    Row("no target cluster: active is Available", "reconcileMachineHealth (no target cluster)", machine("Pending"),
        ms.HasDevice(device()), "Available", "Created machine on cloud provider", "Successful", "Create",
        settings=Settings(no_target_cluster=True)),
    Row("no target cluster: Available kept", "reconcileMachineHealth (no target cluster)", machine("Available"),
        ms.HasDevice(device(DeviceState.PROVISIONING)), "Available", None, settings=Settings(no_target_cluster=True)),
    Row("no target cluster: recovered", "reconcileMachineHealth (no target cluster)",
        machine("Available", op=FAILED_OP), ms.HasDevice(device()), "Available",
        "Machine worker-a is available and its device is reachable again", "Successful", "HealthCheck",
        settings=Settings(no_target_cluster=True)),
    # -- deletion ---------------------------------------------------------------------------------------------
    Row("ours: cleanup skipped", "ours", machine("Running"), ms.CleanupSkipped("Device cleanup skipped"),
        "Terminating", "Device cleanup skipped", "Successful", "Delete", finalized=True),
    Row("draining", "drainNode", machine("Running"), ms.DrainStep("Initiate drain", "Processing", 5.0),
        "Terminating", "Initiate drain", "Processing", "Delete", finalized=False, resync=(5, 5)),
    Row("drain settings unusable", "drainNode", machine("Running"),
        ms.DrainStep("Drain failed due to - bad settings", "Failed", code="FailedPrecondition"), "Terminating",
        "Drain failed due to - bad settings", "Failed", "Delete", "FailedPrecondition", finalized=False,
        resync=(5, 5)),
    Row("ours: cannot reach the provider", "ours", machine("Terminating"), ms.CannotDelete(("no Secret",)),
        "Terminating", "Cannot look for or delete the device of machine worker-a: no Secret. The Machine stays "
        "Terminating while its device may still run. If the device is known to be gone, annotate the Machine with "
        "metal-machine-hooks/skip-device-cleanup=\"true\" to let it go. Initiate VM deletion", "Failed", "Delete",
        "InvalidArgument", finalized=False, resync=(5, 5)),
    Row("drain outcome shown first", "triggerDeletionFlow", machine("Terminating"), ms.DeletionAnnounced(DRAIN_MSG),
        "Terminating", DRAIN_MSG, "Processing", "Delete", finalized=False, resync=(1, 1)),
    Row("delete failed", "deleteVM", machine("Terminating"), ms.DeleteFailed(DENIED), "Terminating",
        "VM deletion failed due to - delete_device failed: HTTP 403. However, will re-try in the next resync. "
        "Initiate VM deletion. If the device is known to be gone, annotate the Machine with "
        "metal-machine-hooks/skip-device-cleanup=\"true\" to let it go", "Failed", "Delete", "PermissionDenied",
        finalized=False, resync=(5, 5)),
    Row("delete rate limited", "deleteVM", machine("Terminating"), ms.DeleteFailed(RATE_LIMITED), "Terminating",
        "VM deletion failed due to - HTTP 429. However, will re-try in the next resync. Initiate VM deletion",
        "Failed", "Delete", "ResourceExhausted", finalized=False, resync=(90, 90)),
    Row("waiting for deletion", "deleteVM", machine("Terminating"), ms.Deleting(("d-1",)), "Terminating",
        "Initiate VM deletion: waiting for device(s) d-1 to be deleted.", "Processing", "Delete", finalized=False,
        resync=(5, 5)),
    Row("deleted", "deleteMachineFinalizers", machine("Terminating"), ms.Deleted(), "Terminating",
        "VM deletion was successful. Initiate machine object finalizer removal.", "Successful", "Delete",
        finalized=True),
    Row("Node removal running", "deleteNodeObject", machine("Terminating"),
        ms.NodeRemoval("VM deletion was successful. Initiate node object deletion", "Processing", False, 5.0),
        "Terminating", "VM deletion was successful. Initiate node object deletion", "Processing", "Delete",
        finalized=False, resync=(5, 5)),
    Row("Node removed", "deleteNodeObject", machine("Terminating"),
        ms.NodeRemoval('Deletion of Node Object "worker-a" is successful. Initiate machine object finalizer removal',
                       "Processing", True), "Terminating",
        'Deletion of Node Object "worker-a" is successful. Initiate machine object finalizer removal', "Processing",
        "Delete", finalized=True),
    # -- bootstrap token (docs/nodes.md) ------------------------------------------------------------------------
    Row("ours: token Job runs, no device yet", "addBootstrapTokenToUserData", machine(),
        ms.TokenStep("Creating bootstrap token for machine worker-a. Creating machine on cloud provider",
                     "Processing", 5.0), "Pending",
        "Creating bootstrap token for machine worker-a. Creating machine on cloud provider", "Processing", "Create",
        resync=(5, 5)),
    Row("ours: token Job failed, retried", "addBootstrapTokenToUserData", machine("Pending"),
        ms.TokenStep("token failed", "Failed", 5.0), "CrashLoopBackOff", "token failed", "Failed", "Create",
        resync=(5, 5)),
    Row("ours: no token key", "addBootstrapTokenToUserData", machine(),
        ms.TokenStep("no bootstrap token key is configured", "Failed", code="FailedPrecondition"),
        "CrashLoopBackOff", "no bootstrap token key is configured", "Failed", "Create", "FailedPrecondition",
        resync=(1, 600)),
    # -- two clusters: the target's API unreachable (hooks/target/freeze.py, MCM's safety controller) ------------
    Row("target unreachable: Running frozen", "reconcileClusterMachineSafetyAPIServer (freeze)",
        machine("Running", op={"description": "ok", "state": "Successful", "type": "HealthCheck"}),
        ms.TargetFrozen(FROZEN, 30.0), "Running", FROZEN, "Processing", "HealthCheck", resync=(30, 30)),
    Row("target unreachable: Pending frozen", "reconcileClusterMachineSafetyAPIServer (freeze)", machine("Pending"),
        ms.TargetFrozen(FROZEN, 30.0), "Pending", FROZEN, "Processing", "Create", resync=(30, 30)),
    Row("target unreachable: deletion held", "reconcileClusterMachineSafetyAPIServer (freeze)",
        {**machine("Terminating"), "metadata": {**machine()["metadata"], "deletionTimestamp": _t(NOW)}},
        ms.TargetFrozen(FROZEN, 30.0), "Terminating", FROZEN, "Processing", "Delete", finalized=False,
        resync=(30, 30)),
    Row("target back: Unknown reset to Running", "reconcileClusterMachineSafetyAPIServer (unfreeze)",
        machine("Unknown", since=3000), ms.HealthTimeoutReset(RESET, 30.0), "Running", RESET, "Successful",
        "HealthCheck", resync=(30, 30)),
]


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_transition(row: Row) -> None:
    step: Transition = next_status(Observed(row.machine, row.node, NOW, row.settings), row.event)
    assert step.phase == row.phase
    if row.description is None:
        assert step.operation is None
    else:
        assert step.operation is not None
        assert (step.operation.description, step.operation.state, step.operation.type, step.operation.error_code) \
            == (row.description, row.state, row.type, row.code)
    assert step.create is row.create
    assert step.finalized is row.finalized
    assert row.resync[0] <= step.resync <= row.resync[1]


def test_every_event_kind_has_a_row() -> None:
    """A new event type must come with its transitions in this table."""
    kinds = {type(row.event) for row in ROWS}
    assert kinds == set(ms.Event.__args__)  # type: ignore[attr-defined]


def test_backoff_grows_with_the_time_a_failure_lasts() -> None:
    """machineCreateErrorHandler retries later the longer the same failure lasts (capped), with no counter."""
    op = {"description": "Cloud provider message - list_devices failed: HTTP 503", "state": "Failed",
          "type": "Create", "errorCode": "Unavailable"}
    fresh = next_status(Observed(machine("CrashLoopBackOff", op=op, since=5), None, NOW, Settings()),
                        ms.CallFailed(UNAVAILABLE))
    lasting = next_status(Observed(machine("CrashLoopBackOff", op=op, since=200), None, NOW, Settings()),
                          ms.CallFailed(UNAVAILABLE))
    assert fresh.resync == 5.0 and lasting.resync == 200.0


@pytest.mark.parametrize(
    ("owner", "meta", "expected"),
    [
        (None, {}, "its MachineSet ms-1 is not there (deleted, or not yet visible)"),
        ({"uid": "other"}, {}, "its MachineSet ms-1 was replaced (UID other, the Machine names ms-uid)"),
        ({"uid": "ms-uid", "deletionTimestamp": "2026-11-25T10:00:00Z"}, {}, "its MachineSet ms-1 is being deleted"),
        ({"uid": "ms-uid"}, {}, None),
        (None, {"controller": False}, None),
    ],
)
def test_owner_problem(owner: dict[str, Any] | None, meta: dict[str, Any], expected: str | None) -> None:
    subject = machine()
    subject["metadata"]["ownerReferences"] = [
        {"apiVersion": "machine.sapcloud.io/v1alpha1", "kind": "MachineSet", "name": "ms-1", "uid": "ms-uid",
         "controller": True, **meta}]
    related = {"ns/ms-1": {"metadata": {"name": "ms-1", "namespace": "ns", **owner}}} if owner else {}
    assert ms.owner_problem(subject, related) == expected


@pytest.mark.parametrize(
    ("node_conditions", "condition", "status", "phase"),
    [
        (None, "DiskPressure", "True", "Unknown"),  # MCM's default list holds DiskPressure
        ("FrequentKubeletRestart", "DiskPressure", "True", "Running"),  # the Machine's list replaces the default
        ("FrequentKubeletRestart,DiskPressure", "FrequentKubeletRestart", "True", "Unknown"),
        ("FrequentKubeletRestart", "FrequentKubeletRestart", "Unknown", "Unknown"),  # anything but False is bad
        (None, "FrequentKubeletRestart", "True", "Running"),  # not in the default list
    ],
)
def test_get_effective_node_conditions_replace_the_default_list(
    node_conditions: str | None, condition: str, status: str, phase: str
) -> None:
    """Mirrors MCM's getEffectiveNodeConditions and isHealthy (machine_util.go): a Machine's `spec.nodeConditions`
    (comma-separated) replaces the `--node-conditions` default; a listed condition not False makes Running Unknown."""
    spec = {} if node_conditions is None else {"nodeConditions": node_conditions}
    the_node = node()
    the_node["status"]["conditions"] = [{"type": "Ready", "status": "True"}, {"type": condition, "status": status}]
    seen = Observed(machine("Running", **spec), the_node, NOW, Settings())
    assert next_status(seen, ms.HasDevice(device())).phase == phase
