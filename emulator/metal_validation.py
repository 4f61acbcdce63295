"""Request-body checks the Metal API answers with 422 `{"errors": [...]}`.

Pure functions: a parsed JSON body in, a list of human-readable messages out (empty = valid). Every problem is
reported at once, as the real API lists several errors together. Unknown fields are ignored, as the API
ignores them, except `facility`, which the API has stopped accepting.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any

from emulator.metal_catalogue import IPXE_OS, OPERATING_SYSTEMS, PLANS, find_metro

BILLING_CYCLES = ("hourly", "daily", "monthly", "yearly")
MAX_TAG_LENGTH = 80
NEXT_AVAILABLE = "next-available"
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")

# JSON type of each DeviceCreateInput / DeviceUpdateInput field we check.
_STRING, _BOOL, _OBJECT, _INT, _NUMBER = "string", "boolean", "object", "integer", "number"
_STRING_LIST, _OBJECT_LIST = "array of strings", "array of objects"
CREATE_TYPES: dict[str, str] = {
    "plan": _STRING, "operating_system": _STRING, "hostname": _STRING, "description": _STRING,
    "billing_cycle": _STRING, "userdata": _STRING, "ipxe_script_url": _STRING, "hardware_reservation_id": _STRING,
    "termination_time": _STRING, "always_pxe": _BOOL, "locked": _BOOL, "network_frozen": _BOOL,
    "no_ssh_keys": _BOOL, "spot_instance": _BOOL, "customdata": _OBJECT, "storage": _OBJECT, "tags": _STRING_LIST,
    "features": _STRING_LIST, "project_ssh_keys": _STRING_LIST, "user_ssh_keys": _STRING_LIST,
    "ip_addresses": _OBJECT_LIST, "ssh_keys": _OBJECT_LIST, "private_ipv4_subnet_size": _INT,
    "public_ipv4_subnet_size": _INT, "spot_price_max": _NUMBER,
}
UPDATE_TYPES: dict[str, str] = {
    "hostname": _STRING, "description": _STRING, "userdata": _STRING, "ipxe_script_url": _STRING,
    "billing_cycle": _STRING, "firmware_set_id": _STRING, "always_pxe": _BOOL, "locked": _BOOL,
    "network_frozen": _BOOL, "spot_instance": _BOOL, "customdata": _OBJECT, "tags": _STRING_LIST,
}


def _has_type(value: Any, kind: str) -> bool:
    if kind == _STRING:
        return isinstance(value, str)
    if kind == _BOOL:
        return isinstance(value, bool)
    if kind == _OBJECT:
        return isinstance(value, dict)
    if kind == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == _NUMBER:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == _STRING_LIST:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == _OBJECT_LIST:
        return isinstance(value, list) and all(isinstance(v, dict) for v in value)
    raise AssertionError(kind)


def type_errors(body: dict[str, Any], types: dict[str, str]) -> list[str]:
    return [
        f"{name} must be {'an' if kind[0] in 'aeiou' else 'a'} {kind}"
        for name, kind in types.items()
        if name in body and not _has_type(body[name], kind)
    ]


def is_valid_hostname(hostname: str) -> bool:
    """RFC 1123: dot-separated labels of letters, digits and inner hyphens; no underscores."""
    if not hostname or len(hostname) > 253:
        return False
    return all(_LABEL.match(label) for label in hostname.removesuffix(".").split("."))


def hostname_errors(hostname: Any) -> list[str]:
    if not isinstance(hostname, str):
        return []
    if "_" in hostname:
        return [f"Hostname {hostname!r} is invalid: underscores are not allowed in hostnames"]
    if not is_valid_hostname(hostname):
        return [f"Hostname {hostname!r} is invalid: use letters, digits, hyphens and dots (labels of 1-63 "
                "characters, 253 in all)"]
    return []


def tag_errors(tags: Any) -> list[str]:
    if not _has_type(tags, _STRING_LIST):
        return []
    return [
        f"Tag {tag[:20]!r}... is too long (maximum is {MAX_TAG_LENGTH} characters)"
        for tag in tags if len(tag) > MAX_TAG_LENGTH
    ]


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def parse_datetime(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None


def _metro_errors(body: dict[str, Any]) -> list[str]:
    if "metro" not in body:
        return ["metro is required"]
    metro = body["metro"]
    codes = [metro] if isinstance(metro, str) else metro
    if not isinstance(codes, list) or not codes or not all(isinstance(c, str) for c in codes):
        return ["metro must be a metro code or a non-empty array of metro codes"]
    return [f"Metro {code!r} is not a valid metro" for code in codes if code != "any" and find_metro(code) is None]


def _ip_address_errors(items: Any) -> list[str]:
    if not _has_type(items, _OBJECT_LIST):
        return []
    errors = []
    private_v4 = False
    for index, item in enumerate(items):
        family, public = item.get("address_family", 4), item.get("public", True)
        if not _has_type(family, _INT) or family not in (4, 6):
            errors.append(f"ip_addresses[{index}].address_family must be 4 or 6")
        if not isinstance(public, bool):
            errors.append(f"ip_addresses[{index}].public must be a boolean")
        if "cidr" in item and not _has_type(item["cidr"], _INT):
            errors.append(f"ip_addresses[{index}].cidr must be an integer")
        private_v4 = private_v4 or (family == 4 and public is False)
    if not errors and not private_v4:
        errors.append("Private IPv4 address is required: one of ip_addresses must be address_family 4, public false")
    return errors


def create_errors(body: Any) -> list[str]:
    """Everything wrong with a DeviceCreateInMetroInput body, catalogue look-ups included."""
    if not isinstance(body, dict):
        return ["The request body must be a JSON object"]
    errors = type_errors(body, CREATE_TYPES)
    if "facility" in body:
        errors.append("facility is no longer supported; provision with metro instead")
    errors += _metro_errors(body)
    for field in ("plan", "operating_system"):
        if field not in body or body[field] == "":
            errors.append(f"{field} is required")
    plan, os_slug = body.get("plan"), body.get("operating_system")
    if isinstance(plan, str) and plan and plan not in PLANS:
        errors.append(f"Plan {plan!r} is not a valid plan")
    if isinstance(os_slug, str) and os_slug and os_slug not in OPERATING_SYSTEMS:
        errors.append(f"Operating system {os_slug!r} is not a valid operating system")
    if os_slug == IPXE_OS and not body.get("ipxe_script_url"):
        errors.append("ipxe_script_url is required when operating_system is custom_ipxe")
    cycle = body.get("billing_cycle")
    if isinstance(cycle, str) and cycle not in BILLING_CYCLES:
        errors.append(f"billing_cycle {cycle!r} is not valid; use one of {', '.join(BILLING_CYCLES)}")
    errors += hostname_errors(body.get("hostname"))
    errors += tag_errors(body.get("tags"))
    errors += _ip_address_errors(body.get("ip_addresses"))
    for field in ("project_ssh_keys", "user_ssh_keys"):
        value: Any = body.get(field)
        if _has_type(value, _STRING_LIST) and not all(_is_uuid(v) for v in value):
            errors.append(f"{field} must contain UUIDs")
    when = body.get("termination_time")
    if isinstance(when, str) and parse_datetime(when) is None:
        errors.append(f"termination_time {when!r} is not a valid date-time")
    if body.get("spot_instance") is True:
        errors.append("Spot Market has been discontinued; spot_instance must be false")
    reservation = body.get("hardware_reservation_id")
    if isinstance(reservation, str) and reservation not in ("", NEXT_AVAILABLE) and not _is_uuid(reservation):
        errors.append(f"{reservation} is not a valid hardware reservation")
    return errors


def update_errors(body: Any) -> list[str]:
    """Everything wrong with a DeviceUpdateInput body."""
    if not isinstance(body, dict):
        return ["The request body must be a JSON object"]
    errors = type_errors(body, UPDATE_TYPES)
    errors += hostname_errors(body.get("hostname"))
    errors += tag_errors(body.get("tags"))
    return errors
