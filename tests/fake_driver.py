"""An in-memory `hooks.driver.Driver` for the Machine hook tests: the MCM side seen through its seam only.

It keeps devices as `Device`s, records every call, and can be told to fail a call, lose a create's answer or
delete slowly, so a test states what a provider would do and checks what the hooks decide, with no provider
field in sight. The Equinix specifics (tags, paging, the create body) are tested against `EquinixDriver`.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hooks.driver import (
    DEVICE_ID_ANNOTATION,
    UNAVAILABLE,
    Address,
    ClassRequest,
    DeleteResult,
    Device,
    DeviceState,
    DriverError,
    MachineRequest,
    StatusResponse,
    Validation,
)

SCHEME = "fake://"
CREATED = datetime(2026, 11, 25, 10, 0, 5, tzinfo=UTC)
ADDRESSES = (Address("10.70.1.3", "InternalIP"), Address("147.75.84.11", "ExternalIP"))


def _meta(machine: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = machine.get("metadata")
    return meta if isinstance(meta, dict) else {}


class FakeDriver:
    """Devices by id; `owner_uid` marks ownership, as a provider's tags would."""

    provider = "EquinixMetal"

    def __init__(self) -> None:
        self.devices: dict[str, Device] = {}
        self.calls: list[tuple[str, str]] = []
        self.validation = Validation()
        self.failures: dict[str, list[DriverError]] = {}
        self.lose_create_answer = False
        self.slow_delete = False
        self._ids = itertools.count(1)

    # -- test controls ---------------------------------------------------------------------------------------

    def add(self, owner_uid: str | None, *, state: DeviceState = DeviceState.PROVISIONING, hostname: str = "",
            age: int = 0, **fields: Any) -> Device:
        device_id = fields.pop("id", None) or f"dev-{next(self._ids):04d}"
        device = Device(
            id=device_id,
            provider_id=f"{SCHEME}{device_id}",
            state=state,
            provider_state=fields.pop("provider_state", state.value),
            hostname=hostname,
            addresses=fields.pop("addresses", (*ADDRESSES, Address(hostname, "Hostname"))),
            created_at=CREATED + timedelta(seconds=len(self.devices) - age),
            owner_uid=owner_uid,
            **fields,
        )
        self.devices[device_id] = device
        return device

    def set_state(self, device_id: str, state: DeviceState) -> None:
        self.devices[device_id] = replace(self.devices[device_id], state=state, provider_state=state.value)

    def fail(self, call: str, *errors: DriverError) -> None:
        self.failures.setdefault(call, []).extend(errors)

    def ops(self) -> list[str]:
        return [call for call, _ in self.calls]

    def _maybe_fail(self, call: str) -> None:
        queue = self.failures.get(call) or []
        if queue:
            raise queue.pop(0)

    # -- the Driver protocol ---------------------------------------------------------------------------------

    def validate(self, request: MachineRequest) -> Validation:
        return self.validation

    def recorded_device_id(self, machine: Mapping[str, Any]) -> str | None:
        annotations = _meta(machine).get("annotations")
        recorded = annotations.get(DEVICE_ID_ANNOTATION) if isinstance(annotations, dict) else None
        if isinstance(recorded, str) and recorded.strip():
            return recorded.strip()
        spec = machine.get("spec")
        provider_id = spec.get("providerID") if isinstance(spec, dict) else None
        if isinstance(provider_id, str) and provider_id.startswith(SCHEME) and provider_id[len(SCHEME):]:
            return provider_id[len(SCHEME):]
        return None

    def get_machine_status(self, request: MachineRequest) -> StatusResponse:
        uid = str(_meta(request.machine).get("uid") or "")
        self.calls.append(("get_machine_status", uid))
        self._maybe_fail("get_machine_status")
        recorded = self.recorded_device_id(request.machine)
        foreign = None
        if recorded and recorded in self.devices:
            device = self.devices[recorded]
            if device.owner_uid != uid:
                foreign = recorded
            elif device.state is not DeviceState.GONE:
                return StatusResponse(device, recorded_id=recorded, owner_tag=f"owner:{uid}")
        mine = sorted((d for d in self.devices.values() if d.owner_uid == uid and d.state is not DeviceState.GONE),
                      key=lambda d: (d.created_at, d.id))
        if not mine:
            return StatusResponse(None, recorded_id=recorded, foreign_id=foreign, owner_tag=f"owner:{uid}")
        for extra in mine[1:]:
            del self.devices[extra.id]
        return StatusResponse(mine[0], recorded_id=recorded, foreign_id=foreign,
                              duplicates_deleted=tuple(d.id for d in mine[1:]), owner_tag=f"owner:{uid}")

    def create_machine(self, request: MachineRequest) -> Device:
        meta = _meta(request.machine)
        self.calls.append(("create_machine", str(meta.get("uid") or "")))
        self._maybe_fail("create_machine")
        device = self.add(str(meta.get("uid") or ""), hostname=str(meta.get("name") or ""))
        if self.lose_create_answer:
            raise DriverError("the outcome of the create request is unknown (read timed out)", UNAVAILABLE,
                              ambiguous=True)
        return device

    def delete_machine(self, request: MachineRequest, *, dry_run: bool = False) -> DeleteResult:
        uid = str(_meta(request.machine).get("uid") or "")
        self.calls.append(("delete_machine" + (" (dry run)" if dry_run else ""), uid))
        self._maybe_fail("delete_machine")
        recorded = self.recorded_device_id(request.machine)
        foreign = recorded if recorded in self.devices and self.devices[recorded].owner_uid != uid else None
        # Like a provider's DELETE, an accepted deletion still counts as present in this call; the next call finds
        # the device gone (or, with `slow_delete`, still being deleted).
        present = sorted(d.id for d in self.devices.values() if d.owner_uid == uid)
        if not dry_run:
            for device_id in present:
                if self.slow_delete:
                    self.set_state(device_id, DeviceState.GONE)
                else:
                    del self.devices[device_id]
        return DeleteResult(tuple(present), foreign, f"owner:{uid}")

    def list_machines(self, request: ClassRequest) -> list[Device]:
        return list(self.devices.values())

    def delete_orphan(self, request: ClassRequest, device: Device) -> bool:
        return self.devices.pop(device.id, None) is not None
