"""A device's lifecycle computed from the clock, capacity, ids, times and the answer envelope."""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, datetime
from typing import Any

from emulator.metal_faults import FaultDecision
from emulator.metal_http import SimResponse
from emulator.metal_model import (
    _STATUS_TEXT,
    DEFAULT_CAPACITY,
    QUEUED_FRACTION,
    RATE_LIMIT,
    RATE_WINDOW_SECONDS,
    DeviceRecord,
    SimulatorState,
)


class LifecycleMixin(SimulatorState):
    """Lazy lifecycle (no timers): a device's state is a function of its times and `clock`."""

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

    def _state(self, device: DeviceRecord, now: float) -> tuple[str, float | None]:
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

    def _updated_at(self, device: DeviceRecord, now: float) -> float:
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
                    now: float) -> DeviceRecord:
        return DeviceRecord(
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
