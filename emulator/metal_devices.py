"""The device and hardware-reservation endpoints: create (with reservation fallback), update, delete, list."""

from __future__ import annotations

from typing import Any

from emulator.metal_catalogue import METROS, PLANS, Metro, find_metro
from emulator.metal_model import (
    _WITHOUT_IPS,
    API_PREFIX,
    ApiError,
    DeviceRecord,
    ReservationRecord,
    SimRequest,
    _capacity_message,
    _expansions,
    _iso,
    _json_body,
    _last,
    _metro_candidates,
    _paginate,
)
from emulator.metal_render import RenderMixin
from emulator.metal_validation import NEXT_AVAILABLE, create_errors, parse_datetime, update_errors


class DevicesMixin(RenderMixin):
    """The API operations on devices and reservations, called with the lock held."""

    def _create(self, project_id: str, request: SimRequest, now: float) -> dict[str, Any]:
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
    ) -> ReservationRecord | None:
        if not wanted:
            return None
        codes = {m.code for m in candidates}
        if wanted == NEXT_AVAILABLE:
            for reservation in sorted(self._reservations.values(), key=lambda r: r.seq):
                if (reservation.project_id == project_id and reservation.plan == plan
                        and reservation.metro in codes and self._provisionable(reservation, now)):
                    return reservation
            raise ApiError(422, "There are no available hardware reservations for selected plan and metro")
        named = self._reservations.get(wanted)
        if named is None or named.project_id != project_id:
            raise ApiError(422, f"{wanted} is not a valid hardware reservation")
        if named.plan != plan:
            raise ApiError(422, f"Hardware reservation {wanted} is for plan {named.plan}, not {plan}")
        if named.metro not in codes:
            raise ApiError(422, f"Hardware reservation {wanted} is in metro {named.metro}, "
                                f"not in {', '.join(requested)}")
        if not self._provisionable(named, now):
            raise ApiError(422, "Server is not provisionable")
        return named

    def _update(self, device: DeviceRecord, request: SimRequest, now: float) -> None:
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

    def _delete(self, device: DeviceRecord, request: SimRequest, now: float) -> None:
        force = request.query.get("force_delete", ["false"])[-1].lower()
        if force not in ("true", "false", "1", "0", ""):
            raise ApiError(422, "force_delete must be true or false")
        if device.locked:
            raise ApiError(422, "Device is locked and cannot be deleted; unlock it first")
        if device.deleted_at is None:
            self._start_deletion(device, now)

    def _start_deletion(self, device: DeviceRecord, now: float) -> None:
        device.had_ips_at_delete = self._state(device, now)[0] not in _WITHOUT_IPS
        device.deleted_at = device.updated = now
        self._reap()

    def _force_state(self, device: DeviceRecord, state: str, now: float) -> None:
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

    def _list_devices(self, project_id: str, request: SimRequest, now: float) -> dict[str, Any]:
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

    def _search_text(self, device: DeviceRecord, now: float) -> str:
        parts = [device.hostname, device.description or "", device.short_id, device.plan, PLANS[device.plan]["name"],
                 device.operating_system, device.metro, METROS[device.metro].facility_code, *device.tags]
        if self._state(device, now)[0] not in _WITHOUT_IPS:
            parts += [ip["address"] for ip in self._ip_addresses(device)]
        return "\n".join(parts).lower()

    def _provisionable(self, reservation: ReservationRecord, now: float) -> bool:
        if not reservation.enabled or reservation.device_id is not None:
            return False
        released = reservation.released_at
        return released is None or now >= released + self.reservation_cooldown_seconds

    def _list_reservations(self, project_id: str, request: SimRequest, now: float) -> dict[str, Any]:
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
