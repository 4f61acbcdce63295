"""The provider seam, in the shape of MCM's `pkg/util/provider/driver/driver.go`.

MCM's out-of-tree providers implement one interface (CreateMachine, DeleteMachine, GetMachineStatus, ListMachines,
...), each call carrying the Machine, its MachineClass and the class's Secret. The hooks keep that seam: everything
in `hooks.mcm` speaks only of `Device`, `DeviceState` and `DriverError` with MCM's codes, and an implementation (today
`hooks.equinix.driver`) owns the provider's fields, tags, paging, caches and create body. A second provider, or the
fake one the tests use, implements this protocol and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol


class DeviceState(StrEnum):
    """A device's life as MCM's state machine needs it; the provider's own word stays in `Device.provider_state`."""

    PROVISIONING = "provisioning"
    ACTIVE = "active"
    FAILED = "failed"
    GONE = "gone"  # being deleted or deleted: never used, never counted as a live server


@dataclass(frozen=True)
class Address:
    """A Node-style address: type is InternalIP, ExternalIP or Hostname."""

    address: str
    type: str


@dataclass(frozen=True)
class Device:
    """One server at the provider, reduced to what MCM decisions read."""

    id: str
    provider_id: str
    state: DeviceState
    provider_state: str = ""
    hostname: str = ""
    addresses: tuple[Address, ...] = ()
    created_at: datetime | None = None
    # The Machine UID the provider's ownership marks name, or None when the device is not ours.
    owner_uid: str | None = None
    # The MachineClass the provider's marks tie the device to (`list_machines` gives the asking class's own name
    # when the mark is that class's); None when unmarked (created before class marks, or not yet claimed).
    owner_class: str | None = None


@dataclass(frozen=True)
class MachineRequest:
    """MCM's Create/Delete/GetMachineStatusRequest: the Machine, its class (None if missing) and the Secrets the
    hooks were handed (Metacontroller's related map for Secrets, keyed `namespace/name`)."""

    machine: Mapping[str, Any]
    machine_class: Mapping[str, Any] | None
    secrets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class ClassRequest:
    """MCM's ListMachinesRequest: a MachineClass and the Secrets of its namespace."""

    machine_class: Mapping[str, Any]
    secrets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


class DriverError(Exception):
    """A failed provider call, with MCM's machinecodes code (`codes.NotFound`, `codes.Unavailable`, ...).

    `ambiguous` marks an outcome that is unknown (a create whose answer was lost): the caller must look the device up
    again instead of repeating the call. `retry_after` is the provider's own "come back in" hint, in seconds.
    Messages never hold a credential.
    """

    def __init__(self, message: str, code: str, *, ambiguous: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.ambiguous = ambiguous
        self.retry_after = retry_after


class Driver(Protocol):
    """What the MCM logic may ask of a provider. Implementations are safe to share between threads."""

    def get_machine_status(self, request: MachineRequest) -> Device | None:
        """The Machine's device, proven to be its own; None when it has none (GetMachineStatus' NotFound)."""
        ...

    def create_machine(self, request: MachineRequest) -> Device:
        """Create the Machine's device (CreateMachine); at most one per call, never repeated on an unknown outcome."""
        ...

    def delete_machine(self, request: MachineRequest) -> list[str]:
        """Delete every device the Machine owns (DeleteMachine); returns the ids still present (empty: all gone)."""
        ...

    def list_machines(self, request: ClassRequest) -> list[Device]:
        """The devices this class's installation and tenant own (ListMachines), for orphan collection."""
        ...

    def delete_orphan(self, request: ClassRequest, device: Device) -> bool:
        """Delete one device `list_machines` returned (MCM's orphan VM deletion), after reading it again: False when
        it is already gone or its marks changed since (another owner, another class): nothing was deleted."""
        ...

    def claim_machine(self, request: ClassRequest, device: Device) -> bool:
        """Mark a device as this class's (its Machine moved here, or it predates class marks); False when gone."""
        ...
