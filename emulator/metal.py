"""A spec-faithful Equinix Metal API simulator for tests, demos and chaos runs.

The real API is gone (sunset 2026-06-30), so this is what our client and hooks talk to. It serves the device
and hardware-reservation endpoints under /metal/v1 with the spec's shapes, status codes and error bodies,
computes every device's lifecycle lazily from an injectable clock (no timer threads), and injects faults
reproducibly from a seed. Test-only inspection and seeding live outside the API under /_sim/.

Layout: this module holds MetalSimulator's constructor, request routing and the command line; the class is
made of metal_admin (Python API and /_sim), metal_devices (device and reservation endpoints), metal_render
(wire shapes) and metal_lifecycle (states from the clock, capacity, ids, answers); metal_model has the
records and pure helpers.

Run it:  python -m emulator.metal --port 8090 --token t --project 7f3c1a52-5d7e-4b8a-9c1d-2e3f4a5b6c7d
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from emulator.metal_admin import AdminMixin
from emulator.metal_faults import Faults, decide
from emulator.metal_http import SimResponse, SimulatorServer
from emulator.metal_model import (
    _ROUTES,
    ADMIN_PREFIX,
    API_PREFIX,
    CREATE_ROUTE,
    DEFAULT_CAPACITY,
    DEVICE_STATES,
    ApiError,
    DeviceRecord,
    ReservationRecord,
    SimRequest,
    _expansions,
    _json,
    _not_found,
    _template_for,
)

__all__ = ["DEVICE_STATES", "Faults", "MetalSimulator", "SimResponse", "SimulatorServer", "main"]

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



class MetalSimulator(AdminMixin):
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
        self._devices: dict[str, DeviceRecord] = {}
        self._deleted: list[DeviceRecord] = []
        self._reservations: dict[str, ReservationRecord] = {}
        self._rate_windows: dict[str, tuple[float, int]] = {}
        self._faults = Faults()
        if faults is not None:
            self._faults = faults if isinstance(faults, Faults) else Faults().updated(**dict(faults))
        self.calls: collections.Counter[str] = collections.Counter()  # "METHOD /route/template" -> requests
        self.responses: collections.Counter[str] = collections.Counter()  # "METHOD /route/template STATUS"

    def handle(self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes) -> SimResponse:
        """Answer one HTTP request (the server calls this; tests may too, without a server)."""
        parts = urlsplit(raw_path)
        lowered = {name.lower(): value for name, value in headers.items()}
        request = SimRequest(method.upper(), parts.path, parse_qs(parts.query, keep_blank_values=True), lowered, body)
        if request.path == ADMIN_PREFIX or request.path.startswith(ADMIN_PREFIX + "/"):
            return self._handle_admin(request)
        if not request.path.startswith(API_PREFIX + "/"):
            return _json(404, {"error": "Not found"})
        return self._handle_api(request)

    def _handle_api(self, request: SimRequest) -> SimResponse:
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

    def _dispatch(self, request: SimRequest, route: str | None, allowed: list[str], token: str) -> SimResponse:
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

    def _route(self, route: str, request: SimRequest, token: str, now: float) -> tuple[int, Any]:
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
