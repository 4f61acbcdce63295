"""Adoption: taking over a device that MCM's Equinix Metal provider created for a Machine.

A Machine that MCM made records its server as `spec.providerID: equinixmetal://<facility>/<device id>`, and the Go
provider (gardener/machine-controller-manager-provider-equinix-metal, `CreateMachine`) created that device with
`hostname` = the Machine name, in the class's `projectID`, with exactly the class's `providerSpec.tags` (which its
validation requires to hold a `kubernetes.io/cluster/...` and a `kubernetes.io/role/...` tag; its `ListMachines`
picks the last tag containing each marker). It wrote no other mark, so that is all a device can prove.

The hooks adopt a recorded device only when every proof holds: right project, hostname equal to the Machine name,
the class's cluster and role tags, no other owner's ownership tag and no other tenant's tags, and not being deleted.
Anything less certain is refused with the proof that failed and what the user can do: deleting a server that is
someone else's, or creating a second one beside a server that still bills, both cost more than a refusal.

`prove` is pure; `adopt` adds the ownership tags (hooks.equinix.tags) and tenant tags (hooks.equinix.tenancy) with
one tag update through the Metal client, and nothing when the device already carries them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hooks import objects
from hooks.equinix import tags as owner_tags
from hooks.equinix import tenancy
from hooks.equinix.devices import GONE_STATES
from hooks.equinix.providerspec import fold_keys

# Names of the proofs, in the order they are checked (the first that fails is reported).
DEVICE = "device"
STATE = "state"
PROJECT = "project"
HOSTNAME = "hostname"
CLUSTER_TAG = "cluster tag"
ROLE_TAG = "role tag"
OWNER = "owner"
TENANT = "tenant"
PROOFS = (DEVICE, STATE, PROJECT, HOSTNAME, CLUSTER_TAG, ROLE_TAG, OWNER, TENANT)

RECREATE = ("remove the device id from the Machine (spec.providerID, annotation metal-machine-hooks/device-id) to "
            "let the hooks create a new server, and delete the old one yourself if nothing uses it")


@dataclass(frozen=True)
class Claim:
    """Who claims the device: the Machine, its namespace, its class's project and tags, and this installation."""

    machine_name: str
    machine_uid: str
    namespace: str
    project_id: str
    class_tags: Sequence[str]
    installation_id: str = ""  # "" skips the tenant proof (a caller that does not know the installation id)


def claim_for(machine: Mapping[str, Any], machine_class: Mapping[str, Any], installation_id: str = "") -> Claim:
    """The Claim of a Machine (its metadata) with its MachineClass (providerSpec keys matched as the Go provider
    does, hooks.equinix.providerspec.fold_keys); anything missing becomes "" and fails the matching proof."""
    meta = objects.meta(machine)
    spec, _ = fold_keys(objects.mapping(machine_class, "providerSpec"))
    project = spec.get("projectID")
    listed = spec.get("tags")
    class_tags: list[Any] = listed if isinstance(listed, list) else []
    return Claim(
        machine_name=str(meta.get("name") or ""),
        machine_uid=str(meta.get("uid") or ""),
        namespace=str(meta.get("namespace") or ""),
        project_id=project if isinstance(project, str) else "",
        class_tags=tuple(t for t in class_tags if isinstance(t, str)),
        installation_id=installation_id,
    )


@dataclass(frozen=True)
class Proof:
    """The verdict: adoptable, or which proof failed (one of PROOFS), why, and what the user can do."""

    adoptable: bool
    failed: str = ""
    reason: str = ""
    remedy: str = ""

    @property
    def message(self) -> str:
        if self.adoptable:
            return ""
        return f"it cannot be adopted: {self.reason} ({self.failed} proof failed); {self.remedy}"


def class_markers(class_tags: Iterable[str]) -> tuple[str | None, str | None]:
    """(cluster tag, role tag) of a class as the Go provider reads them: the last tag containing
    `kubernetes.io/cluster/`, and the last other tag containing `kubernetes.io/role/`."""
    cluster = role = None
    for tag in class_tags or ():
        if not isinstance(tag, str):
            continue
        if owner_tags.CLUSTER_TAG_MARKER in tag:
            cluster = tag
        elif owner_tags.ROLE_TAG_MARKER in tag:
            role = tag
    return cluster, role


def device_project(device: dict[str, Any]) -> str | None:
    """The project id the API names for a device: `project.id`, else the last segment of `project.href`."""
    project = device.get("project")
    if not isinstance(project, dict):
        return device.get("project_id") if isinstance(device.get("project_id"), str) else None
    if isinstance(project.get("id"), str) and project["id"]:
        return str(project["id"])
    href = project.get("href")
    if isinstance(href, str) and "/projects/" in href:
        return href.rstrip("/").rsplit("/", 1)[-1] or None
    return None


def _fail(failed: str, reason: str, remedy: str = RECREATE) -> Proof:
    return Proof(False, failed, reason, remedy)


def prove(device: Any, claim: Claim) -> Proof:
    """Whether `device` (the API's device object) is provably the one MCM's provider made for the claiming Machine."""
    if not isinstance(device, dict) or not isinstance(device.get("id"), str) or not device["id"].strip():
        return _fail(DEVICE, "the API answered no usable device object", "try again later")
    device_tags = [t for t in device.get("tags") or () if isinstance(t, str)]
    state = device.get("state")
    if state in GONE_STATES:
        return _fail(STATE, f"device {device['id']} is {state} at the provider",
                     "the server is going away; " + RECREATE)
    project = device_project(device)
    if project != claim.project_id:
        where = f"project {project}" if project else "a project the API did not name"
        return _fail(PROJECT, f"device {device['id']} is in {where}, not in the class's project {claim.project_id}",
                     "if the server moved projects, set the class's providerSpec.projectID to its project; otherwise "
                     + RECREATE)
    hostname = device.get("hostname")
    if hostname != claim.machine_name:
        return _fail(HOSTNAME, f"device {device['id']} has hostname {hostname!r}, not the Machine name "
                               f"{claim.machine_name!r} that MCM's provider gives the server it creates")
    cluster, role = class_markers(claim.class_tags)
    if cluster is None or cluster not in device_tags:
        wanted = f"the class's cluster tag {cluster!r}" if cluster else "a cluster tag (the class names none)"
        return _fail(CLUSTER_TAG, f"device {device['id']} does not carry {wanted}",
                     "if the class's tags changed since MCM created the server, add the old tags back to the class "
                     "until the migration is done; otherwise " + RECREATE)
    if role is None or role not in device_tags:
        wanted = f"the class's role tag {role!r}" if role else "a role tag (the class names none)"
        return _fail(ROLE_TAG, f"device {device['id']} does not carry {wanted}",
                     "if the class's tags changed since MCM created the server, add the old tags back to the class "
                     "until the migration is done; otherwise " + RECREATE)
    mine = owner_tags.uid_tag(claim.machine_uid)
    others = sorted(t for t in device_tags if t.startswith(owner_tags.UID_TAG_PREFIX) and t != mine)
    if others:
        return _fail(OWNER, f"device {device['id']} carries another Machine's ownership tag {others[0]}",
                     "it belongs to that Machine; " + RECREATE)
    if claim.installation_id:
        tenant = set(tenancy.tenant_tags(claim.installation_id, claim.namespace))
        foreign = sorted(t for t in device_tags
                         if t.startswith((tenancy.INSTALLATION_TAG_PREFIX, tenancy.NAMESPACE_TAG_PREFIX))
                         and t not in tenant)
        if foreign:
            return _fail(TENANT, f"device {device['id']} carries another installation's or namespace's tag "
                                 f"{foreign[0]}", "it belongs to that tenant; " + RECREATE)
    return Proof(True)


def adoption_tags(device: dict[str, Any], claim: Claim) -> list[str]:
    """The device's tags plus the ownership and tenant tags it lacks, in a stable order (nothing removed)."""
    current = [t for t in device.get("tags") or () if isinstance(t, str)]
    wanted = owner_tags.ownership_tags(claim.machine_uid)
    if claim.installation_id:
        wanted += tenancy.tenant_tags(claim.installation_id, claim.namespace)
    return current + [t for t in wanted if t not in current]


def adopt(client: Any, device: dict[str, Any], claim: Claim) -> tuple[Proof, dict[str, Any] | None]:
    """Prove, then tag the device as the Machine's: (proof, the device as the API now shows it, or None if refused).

    One `update_tags` call (PUT, retried by the client like a read), none when every tag is already there. Errors
    of the call propagate (hooks.equinix.errors.MetalError): the caller reports them like any failed API call, and
    the next sync proves and adopts again.
    """
    proof = prove(device, claim)
    if not proof.adoptable:
        return proof, None
    wanted = adoption_tags(device, claim)
    if wanted == [t for t in device.get("tags") or () if isinstance(t, str)]:
        return proof, device
    updated = client.update_tags(device["id"], wanted)
    result = updated if isinstance(updated, dict) and updated.get("id") == device["id"] else {**device, "tags": wanted}
    return proof, result
