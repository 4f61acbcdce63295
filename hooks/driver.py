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

from hooks.deadline import Deadline
from hooks.deadline import current as current_deadline

# What the hooks write on a Machine so that any driver finds the Machine's device again (a decorator cannot write
# spec.providerID). Written by hooks.mcm.machine, read by the driver's `recorded_device_id`.
DEVICE_ID_ANNOTATION = "metal-machine-hooks/device-id"
PROVIDER_ID_ANNOTATION = "metal-machine-hooks/provider-id"

# MCM's error codes (pkg/util/provider/machinecodes/codes), the only error vocabulary a driver may speak.
INVALID_ARGUMENT = "InvalidArgument"
NOT_FOUND = "NotFound"
UNAVAILABLE = "Unavailable"
RESOURCE_EXHAUSTED = "ResourceExhausted"
UNKNOWN_CODE = "Unknown"
UNAUTHENTICATED = "Unauthenticated"
PERMISSION_DENIED = "PermissionDenied"
FAILED_PRECONDITION = "FailedPrecondition"
UNIMPLEMENTED = "Unimplemented"


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
    # The userData to create the device with, already rendered by the MCM logic (`<<BOOTSTRAP_TOKEN>>` and
    # `<<MACHINE_NAME>>` replaced, as MCM's core does before CreateMachine); None: the Secret's, as it is.
    user_data: str | None = field(default=None, repr=False)
    # This installation's id (hooks.mcm.tenancy): devices are created with it and the Machine's namespace as tenant
    # marks; "" (unknown) makes the driver refuse to create, and add no marks.
    installation_id: str = ""
    # The hook call's time left (hooks/deadline.py): the server sets one per request; a driver checks it before
    # every outbound call, retry and delete, and answers "try again" rather than past the webhook timeout.
    deadline: Deadline = field(default_factory=current_deadline, compare=False, repr=False)


@dataclass(frozen=True)
class ClassRequest:
    """MCM's ListMachinesRequest: a MachineClass and the Secrets of its namespace."""

    machine_class: Mapping[str, Any]
    secrets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # This installation's id: a class lists only devices marked for it and for the class's namespace; "" lists none.
    installation_id: str = ""
    deadline: Deadline = field(default_factory=current_deadline, compare=False, repr=False)  # as MachineRequest's


@dataclass(frozen=True)
class Validation:
    """What the driver finds wrong with a Machine's class, providerSpec and Secret before it acts.

    `access_problems` keep the driver from reaching the provider at all (no token, no project, wrong provider);
    `problems` holds every problem, including those that only block a create. `ignored_keys` are providerSpec keys
    the driver accepts but does not use (reported to the user in an annotation).
    """

    problems: tuple[str, ...] = ()
    access_problems: tuple[str, ...] = ()
    ignored_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class StatusResponse:
    """GetMachineStatus' answer, plus what the search found and did on the way, so the user hears of it.

    `device` is None when the Machine has no device. `recorded_id` is the id the Machine recorded (None when it
    recorded none); `foreign_id` a recorded device that exists but lacks the Machine's ownership mark (never used);
    `duplicates_*` extra devices of the Machine (from lost create answers) deleted, or still to delete.
    `owner_tag` names the ownership mark in the provider's words, for messages.
    """

    device: Device | None
    recorded_id: str | None = None
    foreign_id: str | None = None
    duplicates_deleted: tuple[str, ...] = ()
    duplicates_left: tuple[str, ...] = ()
    owner_tag: str = ""
    # Why a recorded device was not taken over (the first ownership proof that failed, and what to do), if it was not.
    foreign_reason: str = ""


@dataclass(frozen=True)
class DeleteResult:
    """DeleteMachine's answer: the ids still present (empty: all gone) and a recorded device left alone because
    it does not carry the Machine's ownership mark."""

    present: tuple[str, ...] = ()
    foreign_id: str | None = None
    owner_tag: str = ""


class DriverError(Exception):
    """A failed provider call, with MCM's machinecodes code (`codes.NotFound`, `codes.Unavailable`, ...).

    `message` says what failed in the provider's words; for a create it is the whole sentence the user reads (the
    driver alone knows whether it was the API call, a reservation fallback or a lost answer).
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

    # The MachineClass `provider` value this driver serves (MCM: a class names its provider; others are not ours).
    provider: str

    def validate(self, request: MachineRequest) -> Validation:
        """Every problem with the class, providerSpec and Secrets (no provider call); the hooks act only without."""
        ...

    def recorded_device_id(self, machine: Mapping[str, Any]) -> str | None:
        """The device id a Machine recorded (our annotation, else a spec.providerID of this provider), or None."""
        ...

    def get_machine_status(self, request: MachineRequest) -> StatusResponse:
        """The Machine's device, proven to be its own (GetMachineStatus); `device` None when it has none."""
        ...

    def create_machine(self, request: MachineRequest) -> Device:
        """Create the Machine's device (CreateMachine); at most one per call, never repeated on an unknown outcome."""
        ...

    def delete_machine(self, request: MachineRequest, *, dry_run: bool = False) -> DeleteResult:
        """Delete every device the Machine owns (DeleteMachine); `dry_run` only reports which are present."""
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
