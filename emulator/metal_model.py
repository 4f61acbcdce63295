"""The simulator's records (devices, reservations, requests), its constants and pure request/paging helpers."""

from __future__ import annotations

import collections
import ipaddress
import json
import math
import random
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from emulator.metal_catalogue import METROS, Metro, find_metro
from emulator.metal_faults import Faults
from emulator.metal_http import SimResponse

API_PREFIX = "/metal/v1"
ADMIN_PREFIX = "/_sim"
DEFAULT_CAPACITY = 100
DEFAULT_PER_PAGE = 10
MAX_PER_PAGE = 1000
MAX_PAGE = 100000
RATE_LIMIT = 5000  # requests per token per window, reported in X-RateLimit-* (informational, never enforced)
RATE_WINDOW_SECONDS = 3600.0
QUEUED_FRACTION = 0.1  # share of provision_seconds a new device spends queued before provisioning starts
DEVICE_STATES = (
    "queued", "provisioning", "deprovisioning", "reinstalling", "active", "inactive", "failed", "powering_on",
    "powering_off", "deleted",
)
_WITHOUT_IPS = ("queued", "provisioning", "failed")
_SEED_FIELDS = frozenset({
    "id", "hostname", "description", "tags", "state", "plan", "metro", "operating_system", "billing_cycle",
    "userdata", "customdata", "locked", "always_pxe", "ipxe_script_url", "network_frozen", "termination_time",
    "hardware_reservation_id",
})
_STATUS_TEXT = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
_ROUTES: tuple[tuple[str, str, re.Pattern[str]], ...] = tuple(
    (method, template, re.compile("^" + template.replace("{id}", "(?P<id>[^/]+)") + "$"))
    for method, template in (
        ("POST", "/projects/{id}/devices"),
        ("GET", "/projects/{id}/devices"),
        ("GET", "/devices/{id}"),
        ("PUT", "/devices/{id}"),
        ("DELETE", "/devices/{id}"),
        ("GET", "/projects/{id}/hardware-reservations"),
        ("GET", "/hardware-reservations/{id}"),
    )
)
CREATE_ROUTE = "POST /projects/{id}/devices"


class ApiError(Exception):
    """An API answer other than success: status plus the spec's Error body."""

    def __init__(self, status: int, *messages: str, single: bool = False) -> None:
        super().__init__(messages[0] if messages else str(status))
        self.status = status
        self.body: dict[str, Any] = {"error": messages[0]} if single else {"errors": list(messages)}


def _not_found() -> ApiError:
    return ApiError(404, "Not found", single=True)


@dataclass
class DeviceRecord:
    id: str
    project_id: str
    seq: int
    hostname: str
    plan: str
    metro: str
    operating_system: str
    created: float
    updated: float
    provision_seconds: float
    deprovision_seconds: float
    billing_cycle: str = "hourly"
    description: str | None = None
    tags: list[str] = field(default_factory=list)
    userdata: str | None = None
    customdata: dict[str, Any] = field(default_factory=dict)
    locked: bool = False
    always_pxe: bool = False
    network_frozen: bool = False
    ipxe_script_url: str | None = None
    termination_time: str | None = None
    reservation_id: str | None = None
    forced_state: str | None = None
    deleted_at: float | None = None
    had_ips_at_delete: bool = False
    gone_at: float | None = None
    ip_ids: tuple[str, str, str] = ("", "", "")

    @property
    def short_id(self) -> str:
        return self.id[:8]


@dataclass
class ReservationRecord:
    id: str
    project_id: str
    seq: int
    plan: str
    metro: str
    created: float
    enabled: bool = True  # False: not provisionable regardless of use (a spare, or set so by a test)
    device_id: str | None = None
    released_at: float | None = None


@dataclass
class SimRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Mapping[str, str]
    body: bytes
    params: dict[str, str] = field(default_factory=dict)



# ---------------------------------------------------------------------- helpers


def _json(status: int, payload: Any) -> SimResponse:
    return SimResponse(status, json.dumps(payload).encode(), {"Content-Type": "application/json; charset=utf-8"})


def _admin_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    return dict(body)


def _json_body(raw: bytes) -> Any:
    if not raw.strip():
        raise ApiError(422, "The request body must be a JSON object")
    try:
        return json.loads(raw)
    except ValueError:
        raise ApiError(422, "The request body is not valid JSON") from None


def _template_for(api_path: str) -> str:
    for _method, template, pattern in _ROUTES:
        if pattern.match(api_path):
            return template
    return "*"


def _last(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def _expansions(query: dict[str, list[str]]) -> tuple[set[str], set[str]]:
    """include= and exclude= as sets of top-level names (the wire form is comma-joined, maybe repeated)."""

    def names(key: str) -> set[str]:
        return {part.strip().split(".")[0] for value in query.get(key, []) for part in value.split(",") if part.strip()}

    return names("include"), names("exclude")


def _apply_exclude(data: dict[str, Any], exclude: Iterable[str]) -> dict[str, Any]:
    """exclude= collapses a nested resource to {href}; nested objects with no href of their own are left out."""
    for name in exclude:
        value = data.get(name)
        if isinstance(value, dict):
            if "href" in value:
                data[name] = {"href": value["href"]}
            else:
                del data[name]
        elif isinstance(value, list) and value and all(isinstance(v, dict) and "href" in v for v in value):
            data[name] = [{"href": v["href"]} for v in value]
    return data


def _paginate(items: list[Any], query: dict[str, list[str]], base: str) -> tuple[list[Any], dict[str, Any]]:
    page = _int_param(query, "page", 1, MAX_PAGE)
    per_page = _int_param(query, "per_page", DEFAULT_PER_PAGE, MAX_PER_PAGE)
    total = len(items)
    last_page = max(1, math.ceil(total / per_page))
    kept = [(k, v) for k, values in sorted(query.items()) if k not in ("page", "per_page") for v in values]

    def href(number: int) -> dict[str, str]:
        return {"href": f"{base}?{urlencode([*kept, ('page', number), ('per_page', per_page)])}"}

    meta: dict[str, Any] = {
        "first": href(1), "last": href(last_page), "self": href(page),
        "total": total, "current_page": page, "last_page": last_page,
    }
    if page > 1:
        meta["previous"] = href(min(page - 1, last_page))
    if page < last_page:
        meta["next"] = href(page + 1)
    return items[(page - 1) * per_page: page * per_page], meta


def _int_param(query: dict[str, list[str]], name: str, default: int, maximum: int) -> int:
    raw = _last(query, name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(422, f"{name} must be an integer") from None
    if not 1 <= value <= maximum:
        raise ApiError(422, f"{name} must be between 1 and {maximum}")
    return value


def _metro_candidates(requested: list[str]) -> list[Metro]:
    """Metros to try in order; "any" adds every metro not already listed."""
    found: list[Metro] = []
    for code in requested:
        for metro in (METROS.values() if code == "any" else [find_metro(code)]):
            if metro is not None and metro not in found:
                found.append(metro)
    return found


def _capacity_message(plan: str, candidates: list[Metro]) -> str:
    if len(candidates) == 1:
        return f"The facility {candidates[0].facility_code} has no provisionable {plan} servers matching your criteria"
    codes = ", ".join(m.code for m in candidates)
    return f"The metros {codes} have no provisionable {plan} servers matching your criteria"


def _actions(state: str) -> list[dict[str, str]]:
    if state in ("active",):
        return [{"type": "power_off", "name": "Power Off"}, {"type": "reboot", "name": "Reboot"},
                {"type": "reinstall", "name": "Reinstall"}, {"type": "rescue", "name": "Rescue"}]
    if state == "inactive":
        return [{"type": "power_on", "name": "Power On"}]
    return []


def _ip(value: int, family: int) -> str:
    return str(ipaddress.IPv4Address(value) if family == 4 else ipaddress.IPv6Address(value))


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")




class SimulatorState:
    """The attributes MetalSimulator.__init__ sets, declared once so each part of the simulator can be type-checked."""

    _tokens: dict[str, list[str]]
    provision_seconds: float
    deprovision_seconds: float
    reservation_cooldown_seconds: float
    seed: int
    _capacity: int | dict
    _clock: Callable[[], float]
    _sleep: Callable[[float], None]
    _lock: threading.RLock
    _ids: random.Random
    _epoch0: float
    _mono0: float
    _seq: int
    _request_number: int
    _devices: dict[str, DeviceRecord]
    _deleted: list[DeviceRecord]
    _reservations: dict[str, ReservationRecord]
    _rate_windows: dict[str, tuple[float, int]]
    _faults: Faults
    calls: collections.Counter[str]
    responses: collections.Counter[str]
