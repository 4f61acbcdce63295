"""A spec-faithful Equinix Metal API simulator for tests, demos and chaos runs.

The real API is gone (sunset 2026-06-30), so this is what our client and hooks talk to. It serves the device
and hardware-reservation endpoints under /metal/v1 with the spec's shapes, status codes and error bodies,
computes every device's lifecycle lazily from an injectable clock (no timer threads), and injects faults
reproducibly from a seed. Test-only inspection and seeding live outside the API under /_sim/.

Run it:  python -m emulator.metal --port 8090 --token t --project 7f3c1a52-5d7e-4b8a-9c1d-2e3f4a5b6c7d
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ipaddress
import json
import math
import random
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from emulator.metal_catalogue import METROS, OPERATING_SYSTEMS, PLANS, Metro, find_metro, os_api, plan_api
from emulator.metal_faults import FaultDecision, Faults, decide
from emulator.metal_http import SimResponse, SimulatorServer
from emulator.metal_validation import NEXT_AVAILABLE, create_errors, parse_datetime, update_errors

__all__ = ["DEVICE_STATES", "Faults", "MetalSimulator", "SimResponse", "SimulatorServer", "main"]

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
ADMIN_HELP = """\
admin endpoints (no token, never faulted):
  GET    /_sim/state                 live and deleted devices, reservations, project ids, faults
  GET    /_sim/calls                 request counters per "METHOD /route" and per "METHOD /route STATUS"
  GET|PUT|DELETE /_sim/faults        read, change (JSON object of knobs) or reset the fault knobs
  PUT    /_sim/capacity              {"capacity": N} or {"capacity": {"plan:metro": N, ...}}
  POST   /_sim/devices               seed a device: {"project_id", "hostname", "tags", "state", "plan", ...}
  POST   /_sim/devices/{id}/state    force a state: {"state": "failed"}
  POST   /_sim/reservations          {"project_id", "plan", "metro", "provisionable"}

example:
  python -m emulator.metal --port 8090 --token t --project 7f3c1a52-5d7e-4b8a-9c1d-2e3f4a5b6c7d
  curl -H 'X-Auth-Token: t' -H 'Content-Type: application/json' \\
    -d '{"metro": "da", "plan": "c3.small.x86", "operating_system": "ubuntu_22_04"}' \\
    http://127.0.0.1:8090/metal/v1/projects/7f3c1a52-5d7e-4b8a-9c1d-2e3f4a5b6c7d/devices
"""


class ApiError(Exception):
    """An API answer other than success: status plus the spec's Error body."""

    def __init__(self, status: int, *messages: str, single: bool = False) -> None:
        super().__init__(messages[0] if messages else str(status))
        self.status = status
        self.body: dict[str, Any] = {"error": messages[0]} if single else {"errors": list(messages)}


def _not_found() -> ApiError:
    return ApiError(404, "Not found", single=True)


@dataclass
class _Device:
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
class _Reservation:
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
class _Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Mapping[str, str]
    body: bytes
    params: dict[str, str] = field(default_factory=dict)


class MetalSimulator:
    """An in-memory Equinix Metal API. Thread-safe: one lock guards all state.

    `tokens` maps each API token to the project ids it can see. Delays are in seconds of `clock`; 0 = instant.
    `capacity` is the on-demand servers per plan and metro: an int for all, or a dict keyed by
    "plan:metro", (plan, metro), "plan", "metro" or "default" (most specific wins, then DEFAULT_CAPACITY).
    `faults` takes the knobs of `metal_faults.Faults`; `sleep` is how latency is waited (tests pass a recorder).
    A device is queued for the first 10% of provision_seconds, then provisioning, then active; a deleted one is
    deprovisioning for deprovision_seconds, then gone (404) and kept in the deleted history. A reservation is
    provisionable again reservation_cooldown_seconds after its device is gone.
    """

    def __init__(
        self,
        tokens: dict[str, list[str]],
        *,
        provision_seconds: float = 0.0,
        deprovision_seconds: float = 0.0,
        capacity: int | dict = DEFAULT_CAPACITY,
        seed: int = 0,
        reservation_cooldown_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        faults: Faults | Mapping[str, Any] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._tokens = {token: list(projects) for token, projects in tokens.items()}
        self.provision_seconds = float(provision_seconds)
        self.deprovision_seconds = float(deprovision_seconds)
        self.reservation_cooldown_seconds = float(reservation_cooldown_seconds)
        self.seed = seed
        self._capacity: int | dict = capacity
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.RLock()
        self._ids = random.Random(f"metal-sim-ids:{seed}")
        self._epoch0 = time.time()
        self._mono0 = clock()
        self._seq = 0
        self._request_number = 0
        self._devices: dict[str, _Device] = {}
        self._deleted: list[_Device] = []
        self._reservations: dict[str, _Reservation] = {}
        self._rate_windows: dict[str, tuple[float, int]] = {}
        self._faults = Faults()
        if faults is not None:
            self._faults = faults if isinstance(faults, Faults) else Faults().updated(**dict(faults))
        self.calls: collections.Counter[str] = collections.Counter()  # "METHOD /route/template" -> requests
        self.responses: collections.Counter[str] = collections.Counter()  # "METHOD /route/template STATUS"

    # ------------------------------------------------------------------ Python API for tests and demos

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> SimulatorServer:
        """Start serving on a background thread; port 0 picks a free port."""
        return SimulatorServer(self.handle, host, port).start()

    @property
    def projects(self) -> list[str]:
        return sorted({p for projects in self._tokens.values() for p in projects})

    @property
    def faults(self) -> dict[str, Any]:
        with self._lock:
            return self._faults.as_dict()

    def set_faults(self, **knobs: Any) -> None:
        """Change the given fault knobs (others keep their value). `seed=N` also restarts the fault sequence."""
        with self._lock:
            if "seed" in knobs:
                self.seed = int(knobs.pop("seed"))
                self._request_number = 0
            self._faults = self._faults.updated(**knobs)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults = Faults()

    def set_capacity(self, capacity: int | dict) -> None:
        with self._lock:
            self._capacity = capacity

    def add_device(self, project_id: str, **fields: Any) -> dict[str, Any]:
        """Seed a device as if someone else had created it: any tags and hostname, a fixed `state` if given.

        Seeding skips validation and capacity on purpose (foreign, untagged or odd devices are the point).
        """
        unknown = sorted(set(fields) - _SEED_FIELDS)
        if unknown:
            raise ValueError(f"unknown device field(s): {', '.join(unknown)}")
        plan = fields.get("plan", "c3.small.x86")
        metro = find_metro(str(fields.get("metro", "da")))
        os_slug = fields.get("operating_system", "ubuntu_22_04")
        state = fields.get("state")
        if plan not in PLANS or metro is None or os_slug not in OPERATING_SYSTEMS:
            raise ValueError("plan, metro and operating_system must come from the simulator's catalogue")
        if state is not None and state not in DEVICE_STATES:
            raise ValueError(f"state must be one of {', '.join(DEVICE_STATES)}")
        tags = fields.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ValueError("tags must be a list of strings")
        with self._lock:
            now = self._reap()
            device_id = str(fields.get("id") or self._new_id())
            if device_id in self._devices:
                raise ValueError(f"device {device_id} already exists")
            device = self._new_device(device_id, project_id, plan, metro.code, os_slug, now)
            device.hostname = str(fields.get("hostname") or device.hostname)
            device.tags = list(tags)
            device.provision_seconds = 0.0
            for name in ("description", "userdata", "ipxe_script_url", "termination_time"):
                if fields.get(name) is not None:
                    setattr(device, name, str(fields[name]))
            for name in ("locked", "always_pxe", "network_frozen"):
                setattr(device, name, bool(fields.get(name, False)))
            device.customdata = dict(fields.get("customdata") or {})
            device.billing_cycle = str(fields.get("billing_cycle", "hourly"))
            reservation_id = fields.get("hardware_reservation_id")
            if reservation_id:
                reservation = self._reservations.get(str(reservation_id))
                if reservation is None or reservation.device_id is not None:
                    raise ValueError(f"hardware reservation {reservation_id} is unknown or in use")
                reservation.device_id, device.reservation_id = device.id, reservation.id
            self._devices[device.id] = device
            if state is not None:
                self._force_state(device, state, now)
            return self._internal_view(device, now)

    def add_reservation(
        self, project_id: str, *, plan: str, metro: str, provisionable: bool = True
    ) -> dict[str, Any]:
        """A hardware reservation of `plan` in `metro` owned by `project_id`; returned as the API shows it."""
        found = find_metro(metro)
        if plan not in PLANS or found is None:
            raise ValueError("plan and metro must come from the simulator's catalogue")
        with self._lock:
            now = self._reap()
            reservation = _Reservation(self._new_id(), project_id, self._next_seq(), plan, found.code, now,
                                       enabled=bool(provisionable))
            self._reservations[reservation.id] = reservation
            return self._internal_reservation(reservation, now)

    def devices(self, *, include_deleted: bool = False) -> list[dict[str, Any]]:
        """Every device as the API renders it (all includes), plus `project_id`; deleted ones at the end."""
        with self._lock:
            now = self._reap()
            live = [self._internal_view(d, now) for d in sorted(self._devices.values(), key=lambda d: d.seq)]
            if include_deleted:
                live += [self._internal_view(d, now) for d in self._deleted]
            return live

    def reservations(self) -> list[dict[str, Any]]:
        with self._lock:
            now = self._reap()
            return [self._internal_reservation(r, now)
                    for r in sorted(self._reservations.values(), key=lambda r: r.seq)]

    def set_device_state(self, device_id: str, state: str) -> None:
        """Force a state (e.g. "failed"). "deprovisioning" starts a deletion; "deleted" removes it at once."""
        if state not in DEVICE_STATES:
            raise ValueError(f"state must be one of {', '.join(DEVICE_STATES)}")
        with self._lock:
            now = self._reap()
            device = self._devices.get(device_id)
            if device is None:
                raise KeyError(device_id)
            self._force_state(device, state, now)

    def state(self) -> dict[str, Any]:
        """What GET /_sim/state answers: live and deleted devices, reservations, project ids (never tokens)."""
        with self._lock:
            every = self.devices(include_deleted=True)  # rendered once: it is the costly part at fleet sizes
            return {
                "projects": self.projects,
                "devices": [d for d in every if not d["deleted"]],
                "deleted": [d for d in every if d["deleted"]],
                "reservations": self.reservations(),
                "faults": self._faults.as_dict(),
            }

    # ------------------------------------------------------------------ request entry point

    def handle(self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes) -> SimResponse:
        """Answer one HTTP request (the server calls this; tests may too, without a server)."""
        parts = urlsplit(raw_path)
        lowered = {name.lower(): value for name, value in headers.items()}
        request = _Request(method.upper(), parts.path, parse_qs(parts.query, keep_blank_values=True), lowered, body)
        if request.path == ADMIN_PREFIX or request.path.startswith(ADMIN_PREFIX + "/"):
            return self._handle_admin(request)
        if not request.path.startswith(API_PREFIX + "/"):
            return _json(404, {"error": "Not found"})
        return self._handle_api(request)

    def _handle_api(self, request: _Request) -> SimResponse:
        api_path = request.path[len(API_PREFIX):]
        handler_route, allowed = None, []
        for method, template, pattern in _ROUTES:
            match = pattern.match(api_path)
            if match:
                allowed.append(method)
                if method == request.method:
                    handler_route = template
                    request.params = match.groupdict()
        template = handler_route or (_template_for(api_path) if allowed else "*")
        route_key = f"{request.method} {template}"
        token = request.headers.get("x-auth-token", "")
        with self._lock:
            self.calls[route_key] += 1
            number = self._request_number
            self._request_number += 1
            decision = decide(self._faults, self.seed, number, request.method, template, request.path)
        if decision.latency > 0:
            self._sleep(decision.latency)
        if decision.before is not None:
            response = self._fault_response(decision, decision.before, token)
        else:
            response = self._dispatch(request, handler_route, allowed, token)
            if route_key == CREATE_ROUTE and response.status == 201 and decision.lose_create:
                response = self._fault_response(decision, decision.lose_create, token)
        with self._lock:
            self.responses[f"{route_key} {'dropped' if response.drop else response.status}"] += 1
        return response

    def _dispatch(self, request: _Request, route: str | None, allowed: list[str], token: str) -> SimResponse:
        with self._lock:
            now = self._reap()
            try:
                if token not in self._tokens:
                    raise ApiError(401, "Invalid authentication token", single=True)
                if route is None:
                    if allowed:
                        raise ApiError(405, f"Method {request.method} not allowed; use {', '.join(allowed)}",
                                       single=True)
                    raise _not_found()
                status, payload = self._route(route, request, token, now)
            except ApiError as error:
                status, payload = error.status, error.body
            return self._api_response(status, payload, token, now)

    def _route(self, route: str, request: _Request, token: str, now: float) -> tuple[int, Any]:
        key = f"{request.method} {route}"
        resource_id = request.params.get("id", "")
        if route.startswith("/projects/"):
            if resource_id not in self._tokens[token]:
                raise _not_found()
            if key == CREATE_ROUTE:
                return 201, self._create(resource_id, request, now)
            if route.endswith("/devices"):
                return 200, self._list_devices(resource_id, request, now)
            return 200, self._list_reservations(resource_id, request, now)
        if route.startswith("/hardware-reservations/"):
            reservation = self._reservations.get(resource_id)
            if reservation is None or reservation.project_id not in self._tokens[token]:
                raise _not_found()
            return 200, self._render_reservation(reservation, now, _expansions(request.query))
        device = self._devices.get(resource_id)
        if device is None or device.project_id not in self._tokens[token]:
            raise _not_found()
        if request.method == "DELETE":
            self._delete(device, request, now)
            return 204, None
        if request.method == "PUT":
            self._update(device, request, now)
        return 200, self._render_device(device, now, _expansions(request.query))

    # ------------------------------------------------------------------ devices

    def _create(self, project_id: str, request: _Request, now: float) -> dict[str, Any]:
        body = _json_body(request.body)
        errors = create_errors(body)
        if errors:
            raise ApiError(422, *errors)
        plan, os_slug = body["plan"], body["operating_system"]
        requested = [body["metro"]] if isinstance(body["metro"], str) else list(body["metro"])
        candidates = _metro_candidates(requested)
        reservation = self._pick_reservation(project_id, body.get("hardware_reservation_id") or "", plan,
                                             requested, candidates, now)
        metro: str | None
        if reservation is not None:
            metro = reservation.metro
        else:
            metro = next((m.code for m in candidates if self._free_capacity(plan, m.code) > 0), None)
            if metro is None:
                raise ApiError(422, _capacity_message(plan, candidates))
        device = self._new_device(self._new_id(), project_id, plan, metro, os_slug, now)
        device.hostname = body.get("hostname") or device.hostname
        device.description = body.get("description")
        device.tags = list(body.get("tags") or [])
        device.userdata = body.get("userdata") or None
        device.customdata = dict(body.get("customdata") or {})
        device.billing_cycle = body.get("billing_cycle") or "hourly"
        device.locked = bool(body.get("locked", False))
        device.always_pxe = bool(body.get("always_pxe", False))
        device.network_frozen = bool(body.get("network_frozen", False))
        device.ipxe_script_url = body.get("ipxe_script_url") or None
        when = body.get("termination_time")
        if when:
            device.termination_time = _iso(parse_datetime(when))
        if reservation is not None:
            reservation.device_id, device.reservation_id = device.id, reservation.id
        self._devices[device.id] = device
        return self._render_device(device, now, _expansions(request.query))

    def _pick_reservation(
        self, project_id: str, wanted: str, plan: str, requested: list[str], candidates: list[Metro], now: float
    ) -> _Reservation | None:
        if not wanted:
            return None
        codes = {m.code for m in candidates}
        reservation: _Reservation | None
        if wanted == NEXT_AVAILABLE:
            for reservation in sorted(self._reservations.values(), key=lambda r: r.seq):
                if (reservation.project_id == project_id and reservation.plan == plan
                        and reservation.metro in codes and self._provisionable(reservation, now)):
                    return reservation
            raise ApiError(422, "There are no available hardware reservations for selected plan and metro")
        reservation = self._reservations.get(wanted)
        if reservation is None or reservation.project_id != project_id:
            raise ApiError(422, f"{wanted} is not a valid hardware reservation")
        if reservation.plan != plan:
            raise ApiError(422, f"Hardware reservation {wanted} is for plan {reservation.plan}, not {plan}")
        if reservation.metro not in codes:
            raise ApiError(422, f"Hardware reservation {wanted} is in metro {reservation.metro}, "
                                f"not in {', '.join(requested)}")
        if not self._provisionable(reservation, now):
            raise ApiError(422, "Server is not provisionable")
        return reservation

    def _update(self, device: _Device, request: _Request, now: float) -> None:
        body = _json_body(request.body)
        errors = update_errors(body)
        if errors:
            raise ApiError(422, *errors)
        for name in ("hostname", "locked", "always_pxe", "network_frozen", "billing_cycle"):
            if name in body:
                setattr(device, name, body[name])
        for name in ("description", "userdata", "ipxe_script_url"):
            if name in body:
                setattr(device, name, body[name] or None)
        if "tags" in body:
            device.tags = list(body["tags"])
        if "customdata" in body:
            device.customdata = dict(body["customdata"])
        device.updated = now

    def _delete(self, device: _Device, request: _Request, now: float) -> None:
        force = request.query.get("force_delete", ["false"])[-1].lower()
        if force not in ("true", "false", "1", "0", ""):
            raise ApiError(422, "force_delete must be true or false")
        if device.locked:
            raise ApiError(422, "Device is locked and cannot be deleted; unlock it first")
        if device.deleted_at is None:
            self._start_deletion(device, now)

    def _start_deletion(self, device: _Device, now: float) -> None:
        device.had_ips_at_delete = self._state(device, now)[0] not in _WITHOUT_IPS
        device.deleted_at = device.updated = now
        self._reap()

    def _force_state(self, device: _Device, state: str, now: float) -> None:
        if state == "deprovisioning":
            if device.deleted_at is None:
                self._start_deletion(device, now)
            return
        if state == "deleted":
            device.deleted_at = now
            device.deprovision_seconds = 0.0
            self._reap()
            return
        device.forced_state = state
        device.updated = now

    def _list_devices(self, project_id: str, request: _Request, now: float) -> dict[str, Any]:
        query = request.query
        devices = sorted((d for d in self._devices.values() if d.project_id == project_id), key=lambda d: d.seq)
        tag, hostname, search = _last(query, "tag"), _last(query, "hostname"), _last(query, "search")
        metro, facility, reserved = _last(query, "metro"), _last(query, "facility"), _last(query, "reserved")
        if tag is not None:
            devices = [d for d in devices if tag in d.tags]
        if hostname:
            devices = [d for d in devices if hostname.lower() in d.hostname.lower()]
        if search:
            devices = [d for d in devices if search.lower() in self._search_text(d, now)]
        if metro:
            found = find_metro(metro)
            devices = [d for d in devices if found is not None and d.metro == found.code]
        if facility:
            devices = [d for d in devices if METROS[d.metro].facility_code == facility.lower()]
        if reserved in ("true", "false"):
            devices = [d for d in devices if (d.reservation_id is not None) == (reserved == "true")]
        page, meta = _paginate(devices, query, f"{API_PREFIX}/projects/{project_id}/devices")
        expansions = _expansions(query)
        return {"devices": [self._render_device(d, now, expansions) for d in page], "meta": meta}

    def _search_text(self, device: _Device, now: float) -> str:
        parts = [device.hostname, device.description or "", device.short_id, device.plan, PLANS[device.plan]["name"],
                 device.operating_system, device.metro, METROS[device.metro].facility_code, *device.tags]
        if self._state(device, now)[0] not in _WITHOUT_IPS:
            parts += [ip["address"] for ip in self._ip_addresses(device)]
        return "\n".join(parts).lower()

    # ------------------------------------------------------------------ reservations

    def _provisionable(self, reservation: _Reservation, now: float) -> bool:
        if not reservation.enabled or reservation.device_id is not None:
            return False
        released = reservation.released_at
        return released is None or now >= released + self.reservation_cooldown_seconds

    def _list_reservations(self, project_id: str, request: _Request, now: float) -> dict[str, Any]:
        query = request.query
        reservations = sorted((r for r in self._reservations.values() if r.project_id == project_id),
                              key=lambda r: r.seq)
        provisionable, state = _last(query, "provisionable"), _last(query, "state")
        if provisionable is not None:
            if provisionable != "only":
                raise ApiError(422, "provisionable must be 'only'")
            reservations = [r for r in reservations if self._provisionable(r, now)]
        if state is not None:
            if state not in ("active", "spare", "need_of_service"):
                raise ApiError(422, "state must be one of active, spare, need_of_service")
            reservations = reservations if state == "active" else []
        search = _last(query, "query")
        if search:
            needle = search.lower()
            reservations = [r for r in reservations if needle in "\n".join(
                [METROS[r.metro].facility_code, r.plan, r.id[:8],
                 self._devices[r.device_id].hostname if r.device_id in self._devices else ""]).lower()]
        page, meta = _paginate(reservations, query, f"{API_PREFIX}/projects/{project_id}/hardware-reservations")
        expansions = _expansions(query)
        return {"hardware_reservations": [self._render_reservation(r, now, expansions) for r in page], "meta": meta}

    # ------------------------------------------------------------------ lifecycle and capacity

    def _reap(self) -> float:
        """Finish deprovisioning that is due; frees reservations. Returns the clock reading used."""
        now = self._clock()
        for device in list(self._devices.values()):
            if device.deleted_at is not None and now >= device.deleted_at + device.deprovision_seconds:
                device.gone_at = device.deleted_at + device.deprovision_seconds
                del self._devices[device.id]
                self._deleted.append(device)
                reservation = self._reservations.get(device.reservation_id or "")
                if reservation is not None and reservation.device_id == device.id:
                    reservation.device_id, reservation.released_at = None, device.gone_at
        return now

    def _state(self, device: _Device, now: float) -> tuple[str, float | None]:
        """The state and provisioning percentage at `now`, derived from timestamps alone."""
        if device.gone_at is not None:
            return "deleted", None
        if device.deleted_at is not None:
            return "deprovisioning", None
        if device.forced_state is not None:
            return device.forced_state, (50.0 if device.forced_state == "provisioning" else None)
        total = device.provision_seconds
        elapsed = now - device.created
        if total <= 0 or elapsed >= total:
            return "active", None
        queued = total * QUEUED_FRACTION
        if elapsed < queued:
            return "queued", None
        return "provisioning", round(100.0 * (elapsed - queued) / (total - queued), 1)

    def _updated_at(self, device: _Device, now: float) -> float:
        latest = device.updated
        if device.forced_state is None and device.deleted_at is None and device.provision_seconds > 0:
            for moment in (device.created + device.provision_seconds * QUEUED_FRACTION,
                           device.created + device.provision_seconds):
                if moment <= now:
                    latest = max(latest, moment)
        return latest

    def _capacity_of(self, plan: str, metro: str) -> int:
        capacity = self._capacity
        if not isinstance(capacity, dict):
            return int(capacity)
        for key in ((plan, metro), f"{plan}:{metro}", plan, metro, "default"):
            if key in capacity:
                return int(capacity[key])
        return DEFAULT_CAPACITY

    def _free_capacity(self, plan: str, metro: str) -> int:
        used = sum(1 for d in self._devices.values()
                   if d.plan == plan and d.metro == metro and d.reservation_id is None)
        return self._capacity_of(plan, metro) - used

    # ------------------------------------------------------------------ rendering

    def _render_device(self, device: _Device, now: float, expansions: tuple[set[str], set[str]]) -> dict[str, Any]:
        include, exclude = expansions
        state, percentage = self._state(device, now)
        metro = METROS[device.metro]
        href = f"{API_PREFIX}/devices/{device.id}"
        data: dict[str, Any] = {
            "id": device.id,
            "short_id": device.short_id,
            "href": href,
            "hostname": device.hostname,
            "state": state,
            "tags": list(device.tags),
            "billing_cycle": device.billing_cycle,
            "customdata": json.loads(json.dumps(device.customdata)),
            "locked": device.locked,
            "always_pxe": device.always_pxe,
            "network_frozen": device.network_frozen,
            "spot_instance": False,
            "created_at": self._wall(device.created),
            "updated_at": self._wall(self._updated_at(device, now)),
            "user": "root",
            "iqn": f"iqn.{self._wall(device.created)[:7]}.net.packet:device.{device.short_id}",
            "sos": f"sos.{metro.facility_code}.platformequinix.com",
            "plan": plan_api(device.plan),
            "operating_system": os_api(device.operating_system),
            "metro": metro.as_api(),
            "facility": metro.facility_api(),
            "project": {"href": f"{API_PREFIX}/projects/{device.project_id}"},
            "ssh_keys": [],
            "volumes": [],
            "actions": _actions(state),
            "ip_addresses": [],
        }
        if percentage is not None and state == "provisioning":
            data["provisioning_percentage"] = percentage
        for name in ("description", "userdata", "ipxe_script_url", "termination_time"):
            if getattr(device, name):
                data[name] = getattr(device, name)
        if state not in _WITHOUT_IPS and (state != "deprovisioning" or device.had_ips_at_delete):
            data["ip_addresses"] = self._ip_addresses(device)
            data["switch_uuid"] = uuid.UUID(device.id).hex[-8:]
            data["bonding_mode"] = 4
        if device.reservation_id:
            reservation = self._reservations.get(device.reservation_id)
            if reservation is not None and "hardware_reservation" in include:
                data["hardware_reservation"] = self._render_reservation(reservation, now, (set(), set()))
            else:
                data["hardware_reservation"] = {"href": f"{API_PREFIX}/hardware-reservations/{device.reservation_id}"}
        if "project" in include:
            data["project"] = {"id": device.project_id, "href": data["project"]["href"]}
        return _apply_exclude(data, exclude)

    def _ip_addresses(self, device: _Device) -> list[dict[str, Any]]:
        """Management addresses: public /31 IPv4, private /31 IPv4 and public /127 IPv6, unique per device."""
        n = device.seq
        public_net = 0x934B0000 + 2 * n  # 147.75.0.0 and up, two addresses per device
        private_net = 0x0A460000 + 2 * n  # 10.70.0.0 and up
        v6_net = (0x2604_1380_4641_0000 << 64) + 2 * n
        created = self._wall(device.created + device.provision_seconds)
        metro = METROS[device.metro].as_api()
        addresses = []
        for ip_id, family, public, network, cidr in (
            (device.ip_ids[0], 4, True, public_net, 31),
            (device.ip_ids[1], 4, False, private_net, 31),
            (device.ip_ids[2], 6, True, v6_net, 127),
        ):
            width = 32 if family == 4 else 128
            mask = ((1 << width) - 1) ^ ((1 << (width - cidr)) - 1)
            block = 29 if family == 4 else 56
            block_mask = ((1 << width) - 1) ^ ((1 << (width - block)) - 1)
            addresses.append({
                "id": ip_id,
                "href": f"{API_PREFIX}/ips/{ip_id}",
                "address_family": family,
                "public": public,
                "management": True,
                "manageable": True,
                "enabled": True,
                "global_ip": False,
                "address": _ip(network + 1, family),
                "gateway": _ip(network, family),
                "network": _ip(network, family),
                "netmask": _ip(mask, family),
                "cidr": cidr,
                "created_at": created,
                "assigned_to": {"href": f"{API_PREFIX}/devices/{device.id}"},
                "metro": metro,
                "parent_block": {"network": _ip(network & block_mask, family), "netmask": _ip(block_mask, family),
                                 "cidr": block, "href": f"{API_PREFIX}/ips/{ip_id}"},
            })
        return addresses

    def _render_reservation(
        self, reservation: _Reservation, now: float, expansions: tuple[set[str], set[str]]
    ) -> dict[str, Any]:
        include, exclude = expansions
        metro = METROS[reservation.metro]
        data: dict[str, Any] = {
            "id": reservation.id,
            "short_id": reservation.id[:8],
            "href": f"{API_PREFIX}/hardware-reservations/{reservation.id}",
            "created_at": self._wall(reservation.created),
            "plan": plan_api(reservation.plan),
            "facility": metro.facility_api(),
            "project": {"href": f"{API_PREFIX}/projects/{reservation.project_id}"},
            "provisionable": self._provisionable(reservation, now),
            "spare": False,
            "need_of_service": False,
            "switch_uuid": uuid.UUID(reservation.id).hex[-8:],
        }
        device = self._devices.get(reservation.device_id or "")
        if device is not None:
            data["device"] = ({"href": f"{API_PREFIX}/devices/{device.id}"} if "device" not in include
                              else self._render_device(device, now, (set(), {"hardware_reservation"})))
        if "project" in include:
            data["project"] = {"id": reservation.project_id, "href": data["project"]["href"]}
        return _apply_exclude(data, exclude)

    def _internal_view(self, device: _Device, now: float) -> dict[str, Any]:
        data = self._render_device(device, now, ({"project"}, set()))
        data["project_id"] = device.project_id
        data["hardware_reservation_id"] = device.reservation_id
        data["deleted"] = device.gone_at is not None
        return data

    def _internal_reservation(self, reservation: _Reservation, now: float) -> dict[str, Any]:
        data = self._render_reservation(reservation, now, ({"project"}, set()))
        data["project_id"] = reservation.project_id
        data["metro"] = reservation.metro
        data["device_id"] = reservation.device_id
        return data

    # ------------------------------------------------------------------ answers, ids, time

    def _api_response(self, status: int, payload: Any, token: str, now: float) -> SimResponse:
        headers = {"X-Request-Id": str(uuid.uuid4()), **self._rate_headers(token, now)}
        if status == 204:
            return SimResponse(204, b"", headers)
        headers["Content-Type"] = "application/json; charset=utf-8"
        return SimResponse(status, json.dumps(payload).encode(), headers)

    def _fault_response(self, decision: FaultDecision, kind: str, token: str) -> SimResponse:
        with self._lock:
            now = self._clock()
            if kind == "drop":
                return SimResponse(0, drop=True)
            if kind in ("429", "403"):
                # A rate-limited answer: nothing left until retry_after from now. Only 429 says so in Retry-After;
                # the 403 masquerade, like the real one, leaves a client only the X-RateLimit-* headers.
                wait = math.ceil(self._faults.retry_after)
                if kind == "429":
                    response = self._api_response(429, {"error": "Too Many Requests"}, token, now)
                    response.headers["Retry-After"] = str(wait)
                else:
                    response = self._api_response(403, {"error": "Rate limit exceeded"}, token, now)
                response.headers["X-RateLimit-Remaining"] = "0"
                response.headers["X-RateLimit-Reset"] = str(math.ceil(self._epoch(now) + wait))
                return response
            status = 503 if kind == "503" else decision.status_5xx
            if decision.html:
                page = f"<html><head><title>{status} {_STATUS_TEXT[status]}</title></head><body><center><h1>" \
                       f"{status} {_STATUS_TEXT[status]}</h1></center></body></html>\n"
                return SimResponse(status, page.encode(), {"Content-Type": "text/html"})
            return self._api_response(status, {"error": _STATUS_TEXT[status]}, token, now)

    def _rate_headers(self, token: str, now: float) -> dict[str, str]:
        start, used = self._rate_windows.get(token, (now, 0))
        if now >= start + RATE_WINDOW_SECONDS:
            start, used = now, 0
        used += 1
        self._rate_windows[token] = (start, used)
        return {
            "X-RateLimit-Limit": str(RATE_LIMIT),
            "X-RateLimit-Remaining": str(max(0, RATE_LIMIT - used)),
            "X-RateLimit-Reset": str(int(self._epoch(start + RATE_WINDOW_SECONDS))),
        }

    def _new_device(self, device_id: str, project_id: str, plan: str, metro: str, os_slug: str,
                    now: float) -> _Device:
        return _Device(
            id=device_id, project_id=project_id, seq=self._next_seq(),
            hostname=f"{plan.split('.')[0]}-{metro}-{device_id[:8]}", plan=plan, metro=metro,
            operating_system=os_slug, created=now, updated=now, provision_seconds=self.provision_seconds,
            deprovision_seconds=self.deprovision_seconds,
            ip_ids=(self._new_id(), self._new_id(), self._new_id()),
        )

    def _new_id(self) -> str:
        return str(uuid.UUID(int=self._ids.getrandbits(128), version=4))

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _epoch(self, moment: float) -> float:
        return self._epoch0 + (moment - self._mono0)

    def _wall(self, moment: float) -> str:
        return datetime.fromtimestamp(self._epoch(moment), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    # ------------------------------------------------------------------ admin API (/_sim), never faulted

    def _handle_admin(self, request: _Request) -> SimResponse:
        path = request.path[len(ADMIN_PREFIX):].rstrip("/")
        try:
            body = json.loads(request.body) if request.body.strip() else {}
        except ValueError:
            return _json(400, {"error": "body must be JSON"})
        try:
            return self._admin_route(request.method, path, body)
        except (ValueError, TypeError) as error:
            return _json(400, {"error": str(error)})
        except KeyError as error:
            return _json(404, {"error": f"not found: {error.args[0] if error.args else ''}"})

    def _admin_route(self, method: str, path: str, body: Any) -> SimResponse:
        if (method, path) == ("GET", "/state"):
            return _json(200, self.state())
        if (method, path) == ("GET", "/calls"):
            with self._lock:
                return _json(200, {"calls": dict(self.calls), "responses": dict(self.responses)})
        if path == "/faults" and method in ("GET", "PUT", "DELETE"):
            if method == "PUT":
                if not isinstance(body, dict):
                    raise ValueError("faults must be a JSON object of knobs")
                self.set_faults(**body)
            elif method == "DELETE":
                self.clear_faults()
            return _json(200, self.faults)
        if (method, path) == ("PUT", "/capacity"):
            if isinstance(body, dict) and isinstance(body.get("capacity"), int | dict):
                self.set_capacity(body["capacity"])
                return _json(200, {"capacity": body["capacity"]})
            raise ValueError('body must be {"capacity": N} or {"capacity": {"plan:metro": N, ...}}')
        if (method, path) == ("POST", "/devices"):
            fields = _admin_object(body)
            project_id = fields.pop("project_id", None) or (self.projects[0] if self.projects else None)
            if not project_id:
                raise ValueError("project_id is required")
            return _json(201, self.add_device(str(project_id), **fields))
        match = re.fullmatch(r"/devices/([^/]+)/state", path)
        if match and method == "POST":
            state = _admin_object(body).get("state")
            if not isinstance(state, str):
                raise ValueError('body must be {"state": "<device state>"}')
            self.set_device_state(match.group(1), state)
            view = next(d for d in self.devices(include_deleted=True) if d["id"] == match.group(1))
            return _json(200, view)
        if (method, path) == ("POST", "/reservations"):
            fields = _admin_object(body)
            project_id = fields.get("project_id") or (self.projects[0] if self.projects else None)
            if not project_id or "plan" not in fields or "metro" not in fields:
                raise ValueError("project_id, plan and metro are required")
            return _json(201, self.add_reservation(str(project_id), plan=str(fields["plan"]),
                                                   metro=str(fields["metro"]),
                                                   provisionable=bool(fields.get("provisionable", True))))
        return _json(404, {"error": f"no admin endpoint {method} {ADMIN_PREFIX}{path}"})


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


# ---------------------------------------------------------------------- command line


def _parse_capacity(values: list[str]) -> int | dict[str, int]:
    if not values:
        return DEFAULT_CAPACITY
    if len(values) == 1 and values[0].isdigit():
        return int(values[0])
    capacity: dict[str, int] = {}
    for value in values:
        key, sep, number = value.rpartition("=")
        if value.isdigit():
            capacity["default"] = int(value)
        elif sep and number.isdigit():
            capacity[key] = int(number)
        else:
            raise argparse.ArgumentTypeError(f"--capacity {value!r}: use N or PLAN:METRO=N")
    return capacity


def _parse_fault(value: str) -> tuple[str, Any]:
    name, sep, raw = value.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--fault {value!r}: use KNOB=VALUE")
    try:
        return name, json.loads(raw)
    except ValueError:
        return name, raw


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m emulator.metal",
        description="Equinix Metal API simulator (devices and hardware reservations under /metal/v1, "
                    "test inspection under /_sim/). Prints the API URL on one line, then serves until killed.",
        epilog=ADMIN_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8090, help="port to bind; 0 picks a free one (default 8090)")
    parser.add_argument("--token", action="append", default=[], metavar="TOKEN[=PROJECT,...]",
                        help="an API token (repeatable). A bare TOKEN sees every --project; TOKEN=P1,P2 sees only "
                             "those projects")
    parser.add_argument("--project", action="append", default=[], metavar="UUID",
                        help="a project id the bare tokens can see (repeatable)")
    parser.add_argument("--provision-seconds", type=float, default=0.0, help="queued+provisioning time (0 = instant)")
    parser.add_argument("--deprovision-seconds", type=float, default=0.0,
                        help="time a deleted device stays deprovisioning before it is gone (0 = instant)")
    parser.add_argument("--reservation-cooldown-seconds", type=float, default=0.0,
                        help="time a reservation stays unprovisionable after its device is gone")
    parser.add_argument("--capacity", action="append", default=[], metavar="N|PLAN:METRO=N",
                        help=f"on-demand servers per plan and metro (default {DEFAULT_CAPACITY}); repeat "
                             "PLAN:METRO=N for specific pairs")
    parser.add_argument("--seed", type=int, default=0, help="seed for ids and faults (default 0)")
    parser.add_argument("--reservation", action="append", default=[], metavar="PLAN:METRO[@PROJECT]",
                        help="create a provisionable hardware reservation (repeatable); in the first project "
                             "unless @PROJECT is given")
    parser.add_argument("--fault", action="append", default=[], type=_parse_fault, metavar="KNOB=VALUE",
                        help="set a fault knob, e.g. rate_429=0.1, retry_after=1, rate_5xx=0.05, "
                             "html_fraction=0.5, rate_403_ratelimit=0.02, latency_seconds=0.05, rate_drop=0.01, "
                             "rate_lost_create=0.1, only_methods=POST, only_paths=/devices/{id}")
    return parser


def _tokens_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, list[str]]:
    if not args.token:
        parser.error("give at least one --token")
    tokens: dict[str, list[str]] = {}
    for value in args.token:
        token, sep, projects = value.partition("=")
        listed = [p.strip() for p in projects.split(",") if p.strip()] if sep else list(args.project)
        if not token or not listed:
            parser.error(f"token {token[:4]}...: no project; give --project UUID or TOKEN=PROJECT")
        tokens.setdefault(token, [])
        tokens[token] += [p for p in listed if p not in tokens[token]]
    return tokens


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM ends the CLI as cleanly as Ctrl-C does."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    tokens = _tokens_from_args(parser, args)
    try:
        sim = MetalSimulator(
            tokens, provision_seconds=args.provision_seconds, deprovision_seconds=args.deprovision_seconds,
            capacity=_parse_capacity(args.capacity), seed=args.seed,
            reservation_cooldown_seconds=args.reservation_cooldown_seconds, faults=dict(args.fault),
        )
        first_project = args.project[0] if args.project else next(iter(tokens.values()))[0]
        for value in args.reservation:
            spec, _, project = value.partition("@")
            plan, _, metro = spec.partition(":")
            sim.add_reservation(project or first_project, plan=plan, metro=metro)
    except (ValueError, argparse.ArgumentTypeError) as error:
        parser.error(str(error))
    server = SimulatorServer(sim.handle, args.host, args.port)
    signal.signal(signal.SIGTERM, _interrupt)
    print(f"Equinix Metal simulator listening on {server.url}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
