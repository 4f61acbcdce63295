"""How devices and reservations look on the wire (spec shapes, includes/excludes, IPs) and to /_sim."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from emulator.metal_catalogue import METROS, os_api, plan_api
from emulator.metal_lifecycle import LifecycleMixin
from emulator.metal_model import (
    _WITHOUT_IPS,
    API_PREFIX,
    DeviceRecord,
    ReservationRecord,
    _actions,
    _apply_exclude,
    _ip,
)


class RenderMixin(LifecycleMixin):
    """Rendering of records as the API and the admin view show them."""

    # Provided by DevicesMixin, which sits above this mixin in MetalSimulator's bases.
    _provisionable: Callable[[ReservationRecord, float], bool]

    def _render_device(self, device: DeviceRecord, now: float, expansions: tuple[set[str], set[str]]) -> dict[str, Any]:
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

    def _ip_addresses(self, device: DeviceRecord) -> list[dict[str, Any]]:
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
        self, reservation: ReservationRecord, now: float, expansions: tuple[set[str], set[str]]
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

    def _internal_view(self, device: DeviceRecord, now: float) -> dict[str, Any]:
        data = self._render_device(device, now, ({"project"}, set()))
        data["project_id"] = device.project_id
        data["hardware_reservation_id"] = device.reservation_id
        data["deleted"] = device.gone_at is not None
        return data

    def _internal_reservation(self, reservation: ReservationRecord, now: float) -> dict[str, Any]:
        data = self._render_reservation(reservation, now, ({"project"}, set()))
        data["project_id"] = reservation.project_id
        data["metro"] = reservation.metro
        data["device_id"] = reservation.device_id
        return data
