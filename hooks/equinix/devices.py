"""Equinix Metal devices as the provider-neutral `hooks.driver.Device`, and the create body, in one place.

Everything that knows the API's device fields (`state` words, `ip_addresses`, `metro.code`, `created_at`, `tags`)
and the providerID format lives here, so the MCM side reads only `Device`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from hooks.driver import DEVICE_ID_ANNOTATION, Address, Device, DeviceState
from hooks.equinix import tags
from hooks.equinix.client import DeviceCreate
from hooks.equinix.providerspec import ProviderSpec

PROVIDER_ID_SCHEME = "equinixmetal://"
# API states of a device that is being deleted or deleted: never used, never counted as a live server.
GONE_STATES = ("deprovisioning", "deleted")
DELETED = "deleted"
DEPROVISIONING = "deprovisioning"
MACHINE_NAME_PLACEHOLDER = "<<MACHINE_NAME>>"

_STATES = {"active": DeviceState.ACTIVE, "failed": DeviceState.FAILED}


def parse_provider_id(value: Any) -> str | None:
    """The device id in `equinixmetal://<id>` or `equinixmetal://<metro>/<id>`; anything else is no id of ours."""
    if not isinstance(value, str) or not value.startswith(PROVIDER_ID_SCHEME):
        return None
    parts = value[len(PROVIDER_ID_SCHEME):].split("/")
    device_id = parts[-1].strip() if len(parts) <= 2 else ""
    return device_id or None


def format_provider_id(metro: str, device_id: str) -> str:
    return f"{PROVIDER_ID_SCHEME}{metro}/{device_id}"


def recorded_device_id(machine: Mapping[str, Any]) -> str | None:
    """The device id written on the Machine: our annotation first, else an `equinixmetal://` spec.providerID."""
    meta = machine.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    annotated = annotations.get(DEVICE_ID_ANNOTATION) if isinstance(annotations, dict) else None
    if isinstance(annotated, str) and annotated.strip():
        return annotated.strip()
    spec = machine.get("spec")
    return parse_provider_id(spec.get("providerID")) if isinstance(spec, dict) else None


def device_tags(raw: Any) -> list[str]:
    listed = raw.get("tags") if isinstance(raw, dict) else None
    return [t for t in listed if isinstance(t, str)] if isinstance(listed, list) else []


def is_owned(raw: Any, machine_uid: str) -> bool:
    """Whether an API device carries this Machine's ownership tags (anything malformed is not ours)."""
    listed = raw.get("tags") if isinstance(raw, dict) else None
    return isinstance(listed, list) and tags.is_owned_by(device_tags(raw), machine_uid)


def created_key(raw: Mapping[str, Any]) -> tuple[int, float, str]:
    """Sort key: oldest first, to the second as the API reports it; a device without a time last."""
    created = _created_at(raw)
    return (0, float(int(created.timestamp())), str(raw.get("id"))) if created else (1, 0.0, str(raw.get("id")))


def _created_at(raw: Mapping[str, Any]) -> datetime | None:
    value = raw.get("created_at")
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def addresses(raw: Mapping[str, Any], hostname: str) -> tuple[Address, ...]:
    """Node-style addresses: public v4 and v6 are ExternalIP, private v4 InternalIP, plus the Hostname."""
    found: list[Address] = []
    listed = raw.get("ip_addresses")
    for ip in listed if isinstance(listed, list) else ():
        if not isinstance(ip, dict) or not isinstance(ip.get("address"), str) or ip.get("enabled") is False:
            continue
        public = ip.get("public", True) is not False
        entry = Address(ip["address"], "InternalIP" if ip.get("address_family") == 4 and not public else "ExternalIP")
        if entry not in found:
            found.append(entry)
    order = {"InternalIP": 0, "ExternalIP": 1}
    found.sort(key=lambda a: (order[a.type], ":" in a.address))
    host = raw.get("hostname") or hostname
    if host:
        found.append(Address(str(host), "Hostname"))
    return tuple(found)


def to_device(raw: Mapping[str, Any], *, fallback_metro: str, hostname: str) -> Device:
    """The neutral view of an API device (its id already checked); the metro comes from the class when the API
    answer does not include it."""
    metro = raw.get("metro")
    code = metro.get("code") if isinstance(metro, dict) else None
    provider_state = str(raw.get("state")) if isinstance(raw.get("state"), str) else ""
    state = DeviceState.GONE if provider_state in GONE_STATES else _STATES.get(provider_state, DeviceState.PROVISIONING)
    return Device(
        id=str(raw["id"]),
        provider_id=format_provider_id(code or fallback_metro, str(raw["id"])),
        state=state,
        provider_state=provider_state,
        hostname=str(raw.get("hostname") or ""),
        addresses=addresses(raw, hostname),
        created_at=_created_at(raw),
        owner_uid=tags.owner_uid(device_tags(raw)),
    )


def create_body(spec: ProviderSpec, name: str, uid: str, user_data: str | None,
                reservation: str | None, *, class_name: str = "", tenant: Sequence[str] = ()) -> DeviceCreate:
    """A fresh create request for one attempt (attempts never share one); `<<MACHINE_NAME>>` in userData, plain
    or URL-encoded, becomes the Machine name. `tenant` are the installation and namespace tags
    (hooks.equinix.tenancy) that keep orphan collection inside its tenant."""
    text = (user_data or "").replace(MACHINE_NAME_PLACEHOLDER, name)
    text = text.replace(quote(MACHINE_NAME_PLACEHOLDER), quote(name))
    return DeviceCreate(
        metro=spec.metro,
        plan=spec.machine_type,
        operating_system=spec.operating_system,
        hostname=name,
        billing_cycle=spec.billing_cycle,
        userdata=text,
        tags=[*spec.tags, *tags.ownership_tags(uid), *([tags.class_tag(class_name)] if class_name else []),
              *tenant],
        project_ssh_keys=list(spec.ssh_keys) or None,
        hardware_reservation_id=reservation,
        ipxe_script_url=spec.ipxe_script_url,
    )
