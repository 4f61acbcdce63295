"""Names from Gardener's machine-controller-manager (MCM) that users and tools already know.

Our hooks replace MCM's machine controller, so phases, operation types, error codes, labels and annotations keep
MCM's spelling: `kubectl get machines`, dashboards and the MachineSet logic read them.
"""

from __future__ import annotations

# Error codes (MCM's machinecodes names), defined once with the driver protocol that carries them.
from hooks.driver import FAILED_PRECONDITION as FAILED_PRECONDITION
from hooks.driver import INVALID_ARGUMENT as INVALID_ARGUMENT
from hooks.driver import NOT_FOUND as NOT_FOUND
from hooks.driver import PERMISSION_DENIED as PERMISSION_DENIED
from hooks.driver import RESOURCE_EXHAUSTED as RESOURCE_EXHAUSTED
from hooks.driver import UNAUTHENTICATED as UNAUTHENTICATED
from hooks.driver import UNAVAILABLE as UNAVAILABLE
from hooks.driver import UNKNOWN_CODE as UNKNOWN_CODE

API_GROUP = "machine.sapcloud.io"
API_VERSION = f"{API_GROUP}/v1alpha1"

# Keys of the v2 `children` and `related` maps (Kind.group/version, or Kind.version for the core group).
MACHINE_KEY = f"Machine.{API_VERSION}"
MACHINESET_KEY = f"MachineSet.{API_VERSION}"
MACHINEDEPLOYMENT_KEY = f"MachineDeployment.{API_VERSION}"
MACHINECLASS_KEY = f"MachineClass.{API_VERSION}"
SECRET_KEY = "Secret.v1"
NODE_KEY = "Node.v1"

# Machine phases (MCM's MachinePhase).
PENDING = "Pending"
AVAILABLE = "Available"
RUNNING = "Running"
UNKNOWN = "Unknown"
FAILED = "Failed"
CRASH_LOOP = "CrashLoopBackOff"
TERMINATING = "Terminating"

# lastOperation.state and lastOperation.type.
PROCESSING = "Processing"
SUCCESSFUL = "Successful"
STATE_FAILED = "Failed"
OP_CREATE = "Create"
OP_DELETE = "Delete"
OP_HEALTH = "HealthCheck"


# Annotations of our own on Machines (the device ones are in hooks.driver: any driver reads them).
IGNORED_KEYS_ANNOTATION = "metal-machine-hooks/ignored-keys"
SKIP_CLEANUP_ANNOTATION = "metal-machine-hooks/skip-device-cleanup"
MACHINESET_KEY = f"MachineSet.{API_VERSION}"

# Labels and annotations MCM defines on Machines.
NODE_LABEL = "node"
PRIORITY_ANNOTATION = "machinepriority.machine.sapcloud.io"
DEFAULT_PRIORITY = "3"

# Node conditions that must be False for a healthy Node (MCM's --node-conditions default); Ready must be True.
UNHEALTHY_NODE_CONDITIONS = ("KernelDeadlock", "ReadonlyFilesystem", "DiskPressure", "NetworkUnavailable")
# A Pending Machine's Node carries this taint until its critical components run; MCM waits for it to go.
CRITICAL_COMPONENTS_TAINT = "node.gardener.cloud/critical-components-not-ready"

# MCM's lastOperation descriptions, reused verbatim so users recognise them.
CREATING = "Creating machine on cloud provider"
CREATED_NO_TARGET = "Created machine on cloud provider"
CLOUD_PROVIDER_MESSAGE = "Cloud provider message - {error}"


def joined(machine: str, duration: str) -> str:
    return f"Machine {machine} successfully joined the cluster in {duration}"


def rejoined(machine: str) -> str:
    return f"Machine {machine} successfully re-joined the cluster"


def unhealthy(machine: str, conditions: str) -> str:
    return f"Machine {machine} is unhealthy - changing MachinePhase to Unknown. Node conditions: {conditions}"


def node_missing(machine: str) -> str:
    return f"Node object went missing. Machine {machine} is unhealthy - changing MachinePhase to Unknown"


def join_timeout(machine: str, duration: str) -> str:
    """MCM prints a Go duration before "minutes" (machine_util.go reconcileMachineHealth): "in 20m0s minutes."."""
    return f"Machine {machine} failed to join the cluster in {duration} minutes."


def health_timeout(machine: str, duration: str, conditions: str) -> str:
    return (
        f"Machine {machine} health checks failing since last {duration} minutes. "
        f"Updating machine phase to Failed. Node Conditions: {conditions}"
    )

