"""A MachineClass's devices at Equinix Metal: MCM's ListMachines and orphan deletion behind `hooks.driver`.

The MachineClass hook (`hooks.mcm.machineclass`) decides which devices are orphans from owner UIDs and recorded ids;
this module owns what that needs from the provider: which devices belong to the class's installation and tenant
(our `metal-machine-hooks:managed` tag, the class's `kubernetes.io/cluster/...` tag, and the tenant tags of
hooks.equinix.tenancy: this installation's id and the class's namespace, and no other's), whose Machine and which
class each one is marked for (`metal-machine-hooks:uid:<uid>`, `metal-machine-hooks:class:<name>`), and deleting or
re-marking one only after reading it again, so a device whose marks changed since the listing is left alone.

The class mark is what lets a class relate only its own Machines: two classes of one cluster share the project and
the cluster tag, so without it a class could not tell another class's living device from an orphan.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from hooks import objects
from hooks.driver import FAILED_PRECONDITION, INVALID_ARGUMENT, ClassRequest, Device, DeviceState, DriverError
from hooks.equinix import devices, providerspec, tags, tenancy
from hooks.equinix.errors import MetalError, NotFound

log = logging.getLogger("hooks.equinix.inventory")

def to_device(raw: dict[str, Any], class_name: str) -> Device:
    """The provider-neutral view of one API device, as seen by the class `class_name`."""
    hostname = objects.string(raw, "hostname")
    device = devices.to_device(raw, fallback_metro="", hostname=hostname)
    return replace(device, owner_class=tags.owner_class(devices.device_tags(raw), class_name))


@dataclass(frozen=True)
class _Target:
    client: Any
    project: str
    cluster: str
    class_name: str
    installation_id: str
    namespace: str


class EquinixInventory:
    """ListMachines, orphan deletion and class claims for MachineClasses, given a client factory per API token."""

    def __init__(self, metal: Callable[[str], Any]) -> None:
        self._metal = metal

    def _target(self, request: ClassRequest) -> _Target:
        """Client, project and cluster tag of the class; DriverError (InvalidArgument) saying why it cannot be used."""
        machine_class = dict(request.machine_class)
        folded, _ = providerspec.fold_keys(objects.mapping(machine_class, "providerSpec"))
        project = folded.get("projectID")
        cluster = tags.cluster_tag(devices.device_tags(folded))
        if not isinstance(project, str) or not project:
            raise DriverError("not scanned: providerSpec.projectID is missing", INVALID_ARGUMENT)
        if not cluster:
            raise DriverError(f"not scanned: providerSpec.tags has no {tags.CLUSTER_TAG_MARKER} tag, so this "
                              "cluster's devices cannot be told apart from others'", INVALID_ARGUMENT)
        if not request.installation_id:
            raise DriverError("not scanned: this installation has no id, so its devices cannot be told apart from "
                              "another installation's", FAILED_PRECONDITION)
        creds, access, _ = providerspec.credentials(machine_class, objects.namespace(machine_class),
                                                    dict(request.secrets))
        if creds is None:
            raise DriverError("not scanned: " + "; ".join(access or ["no API token"]), INVALID_ARGUMENT)
        return _Target(self._metal(creds.token), project, cluster, objects.name(machine_class),
                       request.installation_id, objects.namespace(machine_class))

    def list_machines(self, request: ClassRequest) -> list[Device]:
        """Our devices carrying the class's cluster tag and its tenant's tags (this installation, the class's
        namespace), any Machine and any class mark, by id."""
        target = self._target(request)
        try:
            listed = target.client.list_devices(target.project, tag=tags.MANAGED_TAG)
        except MetalError as exc:
            raise DriverError(f"listing devices of project {target.project} failed: {exc}", exc.mcm_code) from exc
        found = [to_device(raw, target.class_name) for raw in listed
                 if isinstance(raw, dict) and raw.get("id") and self._installation(raw, target)]
        return sorted((d for d in found if d.owner_uid), key=lambda d: d.id)

    @staticmethod
    def _installation(raw: dict[str, Any], target: _Target) -> bool:
        device_tags = devices.device_tags(raw)
        return (target.cluster in device_tags and tags.owner_uid(device_tags) is not None
                and tenancy.in_tenant(device_tags, target.installation_id, target.namespace))

    def _reread(self, target: _Target, device: Device) -> dict[str, Any] | None:
        try:
            current = target.client.get_device(device.id)
        except NotFound:
            return None
        except MetalError as exc:
            raise DriverError(f"reading device {device.id} failed: {exc}", exc.mcm_code) from exc
        return current if isinstance(current, dict) else None

    def delete_orphan(self, request: ClassRequest, device: Device) -> bool:
        """Delete the device only if, read again, it is still ours, this installation's and namespace's, the same
        Machine's and marked for the same class as when it was listed; False (nothing deleted) when it is gone or
        anything changed."""
        target = self._target(request)
        current = self._reread(target, device)
        if current is None or not self._installation(current, target):
            return False
        now = to_device(current, target.class_name)
        if now.owner_uid != device.owner_uid or now.owner_class != device.owner_class or now.state is DeviceState.GONE:
            return False
        try:
            target.client.delete_device(device.id)
        except NotFound:
            return False
        except MetalError as exc:
            raise DriverError(f"deleting orphaned device {device.id} failed: {exc}", exc.mcm_code) from exc
        log.info("deleted orphaned device %s (hostname %s, owner uid %s, class mark %s)", device.id, now.hostname,
                 now.owner_uid, now.owner_class or "none")
        return True

    def claim_machine(self, request: ClassRequest, device: Device) -> bool:
        """Replace the device's class marks by this class's, if it still belongs to the same Machine."""
        target = self._target(request)
        current = self._reread(target, device)
        if current is None:
            return False
        device_tags = devices.device_tags(current)
        if tags.owner_uid(device_tags) != device.owner_uid:
            return False
        kept = [t for t in device_tags if not t.startswith(tags.CLASS_TAG_PREFIX)]
        wanted = [*kept, tags.class_tag(target.class_name)]
        if wanted == device_tags:
            return True
        try:
            target.client.update_tags(device.id, wanted)
        except NotFound:
            return False
        except MetalError as exc:
            raise DriverError(f"marking device {device.id} for class {target.class_name} failed: {exc}",
                              exc.mcm_code) from exc
        log.info("device %s of machine uid %s now marked for class %s", device.id, device.owner_uid,
                 target.class_name)
        return True
