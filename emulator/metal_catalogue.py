"""The simulator's fixed catalogue: metros (with one facility each), plans and operating systems.

Small on purpose, but shaped like the real API's objects (ids, codes, names, countries, plan classes, OS
distros) so clients that read nested fields see realistic values. Ids are constants so tests and demos can
rely on them between runs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Metro:
    id: str
    code: str
    name: str
    country: str
    facility_id: str
    facility_code: str

    def as_api(self) -> dict[str, Any]:
        return {"id": self.id, "code": self.code, "name": self.name, "country": self.country}

    def facility_api(self) -> dict[str, Any]:
        """The facility object; the spec models a reservation's location only as a facility with a metro inside."""
        return {
            "id": self.facility_id,
            "code": self.facility_code,
            "name": f"{self.name} {self.facility_code.upper()}",
            "features": ["baremetal", "backend_transfer", "global_ipv4"],
            "metro": self.as_api(),
        }


METROS: dict[str, Metro] = {
    m.code: m
    for m in (
        Metro("96a57b6d-c62c-41b5-ab8e-f8d63a7f9887", "ny", "New York", "US",
              "0a6ab3c4-1ebf-4a8c-9c3b-1e3f0c5a7d11", "ny5"),
        Metro("d3d6b29f-042d-43b7-b3ce-0bf53d5754ca", "da", "Dallas", "US",
              "5e0b2a1c-7d33-4c5f-8f0e-2b6a9d4c3e22", "da11"),
        Metro("2991b022-b8c4-497e-8db7-5a407c3a209b", "sv", "Silicon Valley", "US",
              "8c1d4e5f-2a3b-4c6d-9e7f-3a4b5c6d7e33", "sv15"),
        Metro("108b2cfb-246b-45e3-885a-bf3e82fce1a0", "am", "Amsterdam", "NL",
              "e1f2a3b4-c5d6-4e7f-8a9b-4c5d6e7f8a44", "am6"),
    )
}


def _plan(
    plan_id: str, slug: str, description: str, cpu: str, cores: int, memory: str, drives: list[dict[str, Any]],
    nic: str, *, legacy_gen: bool = False,
) -> dict[str, Any]:
    return {
        "id": plan_id,
        "slug": slug,
        "name": slug,
        "class": slug,
        "line": "baremetal",
        "description": description,
        "type": "standard",
        "legacy": False,
        "categories": ["compute", "legacy_gen" if legacy_gen else "current_gen"],
        "deployment_types": ["on_demand"],
        "specs": {
            "cpus": [{"count": 1, "type": f"{cpu} ({cores} cores)"}],
            "memory": {"total": memory},
            "drives": drives,
            "nics": [{"count": 2, "type": nic}],
            "features": {"raid": True, "txt": True, "uefi": True},
        },
    }


PLANS: dict[str, dict[str, Any]] = {
    p["slug"]: p
    for p in (
        _plan("6d1f1ffa-7912-4b78-b50d-88cc7c8ab40f", "t1.small.x86", "Tiny legacy server", "Intel Atom C2550",
              4, "8GB", [{"count": 1, "type": "SSD", "size": "80GB", "category": "boot"}], "1Gbps",
              legacy_gen=True),
        _plan("e69c0169-4726-46ea-98f1-939c9e8a3607", "c3.small.x86", "Small compute server", "Intel Xeon E-2278G",
              8, "32GB", [{"count": 2, "type": "SSD", "size": "480GB", "category": "boot"}], "10Gbps"),
        _plan("f04d6f2f-0a2b-4c17-86f5-0c0b4a36f7a1", "c3.medium.x86", "Medium compute server", "AMD EPYC 7402P",
              24, "64GB", [{"count": 2, "type": "SSD", "size": "240GB", "category": "boot"},
                           {"count": 2, "type": "SSD", "size": "480GB", "category": "storage"}], "25Gbps"),
        _plan("8b4a4a6b-0f4a-4a4f-9a48-2c1d0c9bd7d2", "m3.large.x86", "Large memory server", "AMD EPYC 7502P",
              32, "256GB", [{"count": 2, "type": "SSD", "size": "240GB", "category": "boot"},
                            {"count": 2, "type": "NVME", "size": "3.8TB", "category": "cache"}], "25Gbps"),
    )
}


def _os(os_id: str, slug: str, name: str, distro: str, version: str, label: str) -> dict[str, Any]:
    return {
        "id": os_id,
        "slug": slug,
        "name": name,
        "distro": distro,
        "distro_label": label,
        "version": version,
        "licensed": False,
        "preinstallable": False,
        "lifecycle_state": "active",
        "pricing": {},
        "provisionable_on": sorted(PLANS),
    }


OPERATING_SYSTEMS: dict[str, dict[str, Any]] = {
    o["slug"]: o
    for o in (
        _os("06e21644-a769-11e9-a5d8-6f7d1f8a1ab0", "alpine_3", "Alpine 3", "alpine", "3", "Alpine"),
        _os("1a2b3c4d-5e6f-4a1b-8c2d-3e4f5a6b7c01", "ubuntu_22_04", "Ubuntu 22.04 LTS", "ubuntu", "22.04", "Ubuntu"),
        _os("1a2b3c4d-5e6f-4a1b-8c2d-3e4f5a6b7c02", "ubuntu_24_04", "Ubuntu 24.04 LTS", "ubuntu", "24.04", "Ubuntu"),
        _os("1a2b3c4d-5e6f-4a1b-8c2d-3e4f5a6b7c03", "debian_12", "Debian 12", "debian", "12", "Debian"),
        _os("1a2b3c4d-5e6f-4a1b-8c2d-3e4f5a6b7c04", "flatcar_stable", "Flatcar Container Linux (Stable)",
            "flatcar", "stable", "Flatcar"),
        _os("1a2b3c4d-5e6f-4a1b-8c2d-3e4f5a6b7c05", "custom_ipxe", "Custom iPXE", "custom_ipxe", "1", "Custom"),
    )
}

IPXE_OS = "custom_ipxe"


def find_metro(code_or_id: str) -> Metro | None:
    """A metro by code (case-insensitive) or id, as the API accepts both."""
    key = code_or_id.strip().lower()
    if key in METROS:
        return METROS[key]
    return next((m for m in METROS.values() if m.id == key), None)


def plan_api(slug: str) -> dict[str, Any]:
    return copy.deepcopy(PLANS[slug])


def os_api(slug: str) -> dict[str, Any]:
    return copy.deepcopy(OPERATING_SYSTEMS[slug])
