"""What the migration cannot adopt, read from the Metal API (read-only): devices with a class's tags that no Machine
records, and Machines whose recorded device is missing or fails an adoption proof (hooks.equinix.adoption).

MCM's orphan collection (its safety controller, with the Go provider's ListMachines) deleted devices that carry a
class's cluster and role tags and that no Machine names. The hooks' collection deletes only devices carrying their
own ownership tags, so such a device would bill on unseen: it is listed for a human to decide.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hooks import objects
from hooks.equinix import providerspec
from hooks.equinix.adoption import Claim, class_markers, prove
from hooks.equinix.devices import GONE_STATES
from hooks.equinix.errors import MetalError, NotFound
from hooks.equinix.tags import owner_uid
from hooks.migrate.plan import Snapshot, meta, name_of, recorded_device_id


@dataclass(frozen=True)
class ClassScope:
    """One class as the Metal API sees it: project, cluster and role tags, the token's client (never printed)."""

    name: str
    project: str
    tags: tuple[str, ...]
    client: Any = field(repr=False, compare=False)


def class_scopes(snapshot: Snapshot, client_for: Callable[[str], Any]) -> tuple[list[ClassScope], list[str]]:
    """The classes the API can be asked about, and why the others cannot."""
    scopes: list[ClassScope] = []
    problems: list[str] = []
    secrets = {f"{snapshot.namespace}/{name}": s for name, s in snapshot.secrets.items() if s is not None}
    for machine_class in snapshot.classes:
        name = name_of(machine_class)
        folded, _ = providerspec.fold_keys(objects.mapping(machine_class, "providerSpec"))
        project = folded.get("projectID")
        tags = tuple(t for t in folded.get("tags") or () if isinstance(t, str))
        cluster, role = class_markers(tags)
        if not isinstance(project, str) or not project or not cluster or not role:
            problems.append(f"MachineClass {name}: no projectID or no cluster and role tags; its devices could not "
                            "be listed")
            continue
        creds, access, _ = providerspec.credentials(machine_class, snapshot.namespace, secrets)
        if creds is None:
            problems.append(f"MachineClass {name}: devices not listed: {'; '.join(access) or 'no API token'}")
            continue
        scopes.append(ClassScope(name, project, tags, client_for(creds.token)))
    return scopes, problems


def _class_of(machine: Mapping[str, Any]) -> str:
    ref = (machine.get("spec") or {}).get("class") if isinstance(machine.get("spec"), dict) else None
    return str(ref.get("name") or "") if isinstance(ref, dict) else ""


def survey(snapshot: Snapshot, scopes: list[ClassScope]) -> list[str]:
    """Lines naming every device and Machine the hooks will not adopt; read-only API calls."""
    found: list[str] = []
    recorded: dict[str, str] = {}  # device id -> Machine name
    uids = set()
    for machine in snapshot.machines:
        device_id = recorded_device_id(machine)
        if device_id:
            recorded[device_id] = name_of(machine)
        if meta(machine).get("uid"):
            uids.add(str(meta(machine)["uid"]))
    by_name = {s.name: s for s in scopes}
    listed: dict[str, tuple[dict[str, Any], ClassScope]] = {}
    for scope in scopes:
        cluster, role = class_markers(scope.tags)
        try:
            devices = scope.client.list_devices(scope.project, tag=cluster)
        except MetalError as exc:
            found.append(f"MachineClass {scope.name}: listing devices of project {scope.project} failed: {exc}")
            continue
        for device in devices:
            tags = [t for t in device.get("tags") or () if isinstance(t, str)]
            if isinstance(device.get("id"), str) and cluster in tags and role in tags:
                listed.setdefault(device["id"], (device, scope))
    for device_id, (device, scope) in sorted(listed.items()):
        if device_id in recorded or device.get("state") in GONE_STATES:
            continue
        owner = owner_uid(device.get("tags") or [])
        if owner in uids:
            continue  # a device the hooks made for an existing Machine, found by its tag
        found.append(f"device {device_id} (hostname {device.get('hostname')!r}) carries MachineClass {scope.name}'s "
                     f"cluster and role tags but no Machine records it: MCM would have collected it as an orphan, "
                     "the hooks never delete a device without their ownership tag. Delete it at Equinix Metal if "
                     "nothing uses it")
    for machine in snapshot.machines:
        device_id = recorded_device_id(machine)
        name = name_of(machine)
        found_scope = by_name.get(_class_of(machine))
        if not device_id or found_scope is None:
            continue
        scope = found_scope
        device = listed.get(device_id, (None, scope))[0]
        if device is None:
            try:
                device = scope.client.get_device(device_id)
            except NotFound:
                found.append(f"Machine {name}: its device {device_id} does not exist at Equinix Metal; the hooks "
                             "will mark the Machine Failed and its MachineSet replaces it")
                continue
            except MetalError as exc:
                found.append(f"Machine {name}: reading its device {device_id} failed: {exc}")
                continue
        if owner_uid(device.get("tags") or []) == str(meta(machine).get("uid") or ""):
            continue  # already the hooks'
        claim = Claim(machine_name=name, machine_uid=str(meta(machine).get("uid") or ""),
                      namespace=snapshot.namespace, project_id=scope.project, class_tags=scope.tags)
        proof = prove(device, claim)
        if not proof.adoptable:
            found.append(f"Machine {name}: device {device_id} {proof.message}")
    return found
