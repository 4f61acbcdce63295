"""What the Machine hook may conclude about a Node in a target cluster it could or could not read.

MCM's rule (reconcileClusterMachine and reconcileClusterMachineSafetyAPIServer in MCM's
pkg/util/provider/machinecontroller/machine.go and machine_safety.go): while an API server is unreachable, the
Machine controller is frozen for Machines that are not being deleted: nothing is decided from stale data, so no
Machine goes Unknown or Failed because of the outage. When the API answers again, MCM resets the health timeout
of Machines in Unknown (phase Running, lastUpdateTime now, lastOperation "Machine Health Timeout was reset due to
APIServer being unreachable") and reconciles again. A Machine being deleted is still processed; its drain fails
against the unreachable API until the drain timeout, then the VM is deleted and the Node deletion is retried.

Here there is no informer cache to be stale: each sync reads the Node once (hooks/target/api.py). So:

* reachable, never frozen: judge with the Node read (None: the API says it does not exist);
* reachable after a freeze: the same, and restart the health timeouts (MCM's unfreeze) and clear the marker;
* unreachable, Machine not deleting: freeze: keep phase, conditions and timeouts as they are, create nothing, run
  no Node-side Job, say so in lastOperation, mark when it started, resync soon;
* unreachable, Machine deleting: never read "unreachable" as "Node gone": hold the drain/Node steps; once the drain
  timeout has passed (as MCM), the device may be deleted, but the finalizer stays until the target answers
  (Node removal and the bootstrap token need it).

Pure: `decide(read, machine)` is the whole decision; the hook does the I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

UNREACHABLE_SINCE_ANNOTATION = "metal-machine-hooks/target-unreachable-since"
FROZEN_RESYNC = 30.0
RECOVERED_OPERATION = "Machine Health Timeout was reset due to APIServer being unreachable"


class Action(Enum):
    JUDGE = "judge"  # the usual state machine, with `node`
    RECOVERED = "recovered"  # JUDGE, after restarting health timeouts (lastUpdateTime = now) and clearing the mark
    FREEZE = "freeze"  # change nothing Node-derived, create nothing, start no Node-side Job
    HOLD_DELETION = "hold_deletion"  # deleting: keep the device and the finalizer, start no drain decision
    DELETE_DEVICE_ONLY = "delete_device_only"  # deleting, drain timed out: device may go, finalizer stays


@dataclass(frozen=True)
class TargetRead:
    """One read of the Machine's Node: `reachable` False means nothing is known about it (kind, message why)."""

    reachable: bool
    node: dict[str, Any] | None = None
    kind: str = ""  # TargetUnavailable.kind, or "config" for an unusable kubeconfig
    message: str = ""  # already redacted
    source: str = ""  # "namespace/name" of the kubeconfig Secret ("" when it could not be read)


@dataclass(frozen=True)
class MachineView:
    """What the decision needs from the Machine: deleting, drain timed out, the unreachable-since mark."""

    deleting: bool
    drain_expired: bool = False
    unreachable_since: str | None = None  # the annotation's value (RFC 3339), None when not frozen


@dataclass(frozen=True)
class Decision:
    action: Action
    node: dict[str, Any] | None = None  # the Node to judge with (JUDGE/RECOVERED only)
    since: str | None = None  # the value UNREACHABLE_SINCE_ANNOTATION must have (None: remove it)
    operation: str = ""  # lastOperation.description to write ("" keeps the state machine's)
    resync: float = 0.0
    metric: str = "ok"  # outcome label for a target-read counter: ok | recovered | frozen | held

    @property
    def frozen(self) -> bool:
        return self.action in (Action.FREEZE, Action.HOLD_DELETION, Action.DELETE_DEVICE_ONLY)


def decide(read: TargetRead, machine: MachineView, now: datetime) -> Decision:
    """The action for one sync/finalize; see the module docstring for the rule and MCM's."""
    if read.reachable:
        if machine.unreachable_since:
            return Decision(Action.RECOVERED, read.node, None,
                            f"{RECOVERED_OPERATION} (from {machine.unreachable_since} to {_stamp(now)})",
                            metric="recovered")
        return Decision(Action.JUDGE, read.node)
    since = machine.unreachable_since or _stamp(now)
    why = f"target cluster API unavailable since {since} ({read.kind or 'unreachable'}): {read.message}"
    if not machine.deleting:
        return Decision(Action.FREEZE, None, since,
                        f"{why}; Machine frozen, nothing decided from its Node until the API answers",
                        FROZEN_RESYNC, "frozen")
    if machine.drain_expired:
        return Decision(Action.DELETE_DEVICE_ONLY, None, since,
                        f"{why}; drain timed out, deleting the device; the Machine stays until its Node can be "
                        "removed", FROZEN_RESYNC, "held")
    return Decision(Action.HOLD_DELETION, None, since,
                    f"{why}; deletion waits: the Node cannot be drained or known gone", FROZEN_RESYNC, "held")


def _stamp(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")
