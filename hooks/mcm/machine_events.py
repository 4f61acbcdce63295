"""What the Machine state machine (hooks.mcm.machine_state) decides from, and what it decides.

`Observed` is what one hook call saw (Machine, proven Node, time, settings); an event is what the step before the
decision produced (a driver error, "no device", a drain step, a frozen target, ...); a `Transition` is the decision.
Kept apart from the rules so that the rules read as one function and the inputs as one list.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hooks import objects
from hooks.config import Settings
from hooks.driver import Device, DriverError
from hooks.mcm.machine_status import Operation, observed_phase
from hooks.mcm.timefmt import parse_duration, parse_time


@dataclass(frozen=True)
class Observed:
    """What one hook call saw: the Machine as Metacontroller handed it, its Node, the time and the settings."""
    machine: Mapping[str, Any]
    node: Mapping[str, Any] | None
    now: datetime
    settings: Settings
    # Whether the Machine's MachineSet names it as the one Machine of its deployment that may be marked Failed for
    # health now (MCM's canMarkMachineFailed; hooks/mcm/fail_permit.py).
    may_fail: bool = True

    @property
    def name(self) -> str:
        return objects.name(self.machine)

    @property
    def status(self) -> dict[str, Any]:
        return objects.mapping(self.machine, "status")

    @property
    def phase(self) -> str:
        return observed_phase(self.status)

    def timeout(self, key: str, default: float) -> float:
        value = parse_duration(objects.mapping(self.machine, "spec").get(key))
        return value if value is not None and value > 0 else default

    @property
    def age(self) -> float:
        created = parse_time(objects.meta(self.machine).get("creationTimestamp"))
        return (self.now - created).total_seconds() if created else 0.0

    @property
    def creation_left(self) -> float:
        return self.timeout("creationTimeout", self.settings.creation_timeout) - self.age


# -- events: what the step before the decision produced ------------------------------------------------------


@dataclass(frozen=True)
class Invalid:
    """The Machine, its class or Secret has problems (validation, no call made)."""
    problems: tuple[str, ...]


@dataclass(frozen=True)
class CallFailed:
    """A driver call failed; `doing` names the call for the message ("" when the driver's message says it)."""
    error: DriverError
    doing: str = ""


@dataclass(frozen=True)
class ForeignDevice:
    """The recorded device exists but does not carry the Machine's ownership mark, and no other device does."""
    device_id: str
    owner_tag: str
    reason: str = ""  # the driver's words: which proof of ownership failed, and what to do


@dataclass(frozen=True)
class DeviceGone:
    """The recorded device is gone at the provider and no other device carries the Machine's ownership mark."""
    device_id: str
    owner_tag: str


@dataclass(frozen=True)
class OwnerNotReady:
    """The Machine's controller (its MachineSet) is missing, replaced or being deleted: nothing is created."""
    reason: str


@dataclass(frozen=True)
class NoDevice:
    """No device and nothing against creating one: create, unless the creation timeout has passed."""


@dataclass(frozen=True)
class TokenStep:
    """The bootstrap token the userData asks for is not made yet (its Job runs, or failed and is retried), or cannot
    be made (`code`, e.g. no key configured): no device is created in this call (docs/nodes.md)."""
    description: str
    state: str
    resync: float = 0.0
    code: str = ""


@dataclass(frozen=True)
class HasDevice:
    """The Machine's device (found, or created by this call); `notes` add what the lookup did along the way."""
    device: Device
    notes: str = ""


# Finalize events.
@dataclass(frozen=True)
class CleanupSkipped:
    description: str


@dataclass(frozen=True)
class DrainStep:
    """A drain step not yet done (hooks.mcm.drain decides it), or drain settings that cannot be used (`code`)."""
    description: str
    state: str
    resync: float = 0.0
    code: str = ""


@dataclass(frozen=True)
class CannotDelete:
    """Validation says the driver cannot look for the device at all; `problems` name why. `note` is a drain
    outcome not shown yet (an unproven Node that was not drained), put first."""
    problems: tuple[str, ...]
    note: str = ""


@dataclass(frozen=True)
class DeletionAnnounced:
    """The drain outcome is shown first; devices are deleted in the next call."""
    description: str


@dataclass(frozen=True)
class Deleting:
    present: tuple[str, ...]
    note: str = ""


@dataclass(frozen=True)
class Deleted:
    note: str = ""


@dataclass(frozen=True)
class DeleteFailed:
    error: DriverError


@dataclass(frozen=True)
class NodeRemoval:
    """Every device is gone; the Node-side end (hooks.mcm.node_side.plan_node_removal, MCM's deleteNodeObject):
    `done` lets the Machine go with MCM's text for the step, else it waits `resync` seconds."""
    description: str
    state: str
    done: bool
    resync: float = 0.0
    note: str = ""


# Either hook.
@dataclass(frozen=True)
class TargetFrozen:
    """The target cluster's API cannot be read (hooks.target.freeze): nothing Node-derived is decided; the phase
    stays and lastOperation says why (MCM freezes its Machine controller while an API server is unreachable)."""
    description: str
    resync: float


@dataclass(frozen=True)
class HealthTimeoutReset:
    """The target answers again after a freeze: an Unknown Machine's health timeout restarts (MCM's
    reconcileClusterMachineSafetyAPIServer sets such Machines Running with lastUpdateTime now)."""
    description: str
    resync: float


FINALIZE_EVENTS = (CleanupSkipped, DrainStep, CannotDelete, DeletionAnnounced, Deleting, Deleted, DeleteFailed,
                   NodeRemoval)
Event = (Invalid | CallFailed | ForeignDevice | DeviceGone | OwnerNotReady | NoDevice | TokenStep | HasDevice
         | CleanupSkipped | DrainStep | CannotDelete | DeletionAnnounced | Deleting | Deleted | DeleteFailed
         | NodeRemoval | TargetFrozen | HealthTimeoutReset)


@dataclass(frozen=True)
class Transition:
    """The decision: phase, operation (None keeps the observed one), resync, and whether to create or let go."""
    phase: str
    operation: Operation | None
    resync: float = 0.0
    create: bool = False
    finalized: bool | None = None
