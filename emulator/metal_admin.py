"""Test-only control of the simulator: the Python API (seed, force, faults, capacity) and /_sim."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from emulator.metal_catalogue import OPERATING_SYSTEMS, PLANS, find_metro
from emulator.metal_devices import DevicesMixin
from emulator.metal_faults import Faults
from emulator.metal_http import SimResponse, SimulatorServer
from emulator.metal_model import (
    _SEED_FIELDS,
    ADMIN_PREFIX,
    DEVICE_STATES,
    ReservationRecord,
    SimRequest,
    _admin_object,
    _json,
)


class AdminMixin(DevicesMixin):
    """Seeding, inspection and fault knobs, never faulted themselves."""

    # The request dispatcher, defined by MetalSimulator (emulator/metal.py) on top of the mixins.
    handle: Callable[[str, str, Mapping[str, str], bytes], Any]

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
            reservation = ReservationRecord(self._new_id(), project_id, self._next_seq(), plan, found.code, now,
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

    def _handle_admin(self, request: SimRequest) -> SimResponse:
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
