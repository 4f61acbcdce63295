"""Proof that a Node is a Machine's own, required before any Node-side action (drain, health, removal).

A Machine author may name a Machine after any Node and label it `node=<that name>`; neither the name nor a label
proves anything. A Node is the Machine's only when the Machine owns a device (the driver proved that with its
ownership marks) and the Node is that device: its `spec.providerID` names the device (the same scheme, and the
device id as its last segment, which accepts both `scheme://<id>`, as cloud-controller-managers write it, and
`scheme://<region>/<id>`, as MCM's providers do), or, for a Node without a providerID, one of its public addresses
is one of the device's. Private addresses repeat across projects and clusters and never count.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from hooks import objects
from hooks.driver import Device

EXTERNAL = "ExternalIP"


@dataclass(frozen=True)
class NodeProof:
    """Whether the Node is the device's, and in words why (or why not), for statuses and logs."""

    proven: bool
    reason: str


def _scheme(provider_id: str) -> str:
    return provider_id.split("://", 1)[0] if "://" in provider_id else ""


def device_id_of(provider_id: str) -> str:
    """The device id a providerID names in either form (its last segment); "" when it is not a providerID."""
    if "://" not in provider_id:
        return ""
    return provider_id.split("://", 1)[1].strip("/").rsplit("/", 1)[-1]


def names_device(provider_id: str, device: Device) -> bool:
    """Whether a providerID (either form) names `device`."""
    if _scheme(provider_id) != _scheme(device.provider_id):
        return False
    found = device_id_of(provider_id)
    return bool(found) and found == device.id


def _public(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_global
    except ValueError:
        return False


def node_public_addresses(node: Any) -> set[str]:
    """The Node's ExternalIP addresses that are globally routable."""
    found = set()
    for entry in objects.mappings(node, "status", "addresses"):
        address = entry.get("address")
        if entry.get("type") == EXTERNAL and isinstance(address, str) and _public(address):
            found.add(address)
    return found


def prove(node: Any, device: Device | None) -> NodeProof:
    """Whether `node` is `device`'s Node. No device (or a device not proven the Machine's) never proves a Node."""
    node_name = objects.name(node) or "(unnamed)"
    if device is None:
        return NodeProof(False, f"the Machine owns no device, so Node {node_name} cannot be proven to be its own")
    provider_id = objects.string(node, "spec", "providerID")
    if provider_id:
        if names_device(provider_id, device):
            return NodeProof(True, f"Node {node_name} has providerID {provider_id} of device {device.id}")
        return NodeProof(False, f"Node {node_name} has providerID {provider_id}, which is not device {device.id}")
    device_public = {a.address for a in device.addresses if a.type == EXTERNAL and _public(a.address)}
    shared = sorted(node_public_addresses(node) & device_public)
    if shared:
        return NodeProof(True, f"Node {node_name} has no providerID but shares public address {shared[0]} with "
                               f"device {device.id}")
    return NodeProof(False, f"Node {node_name} has no providerID and no public address of device {device.id}")
