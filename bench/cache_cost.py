"""Part 6: what the device listing cache costs against what it saves (the METAL_DEVICE_CACHE_SECONDS decision).

With the cache off, a steady Machine costs one `GET /devices/{id}` per resync. With it on, each gunicorn worker lists
the whole project (every device in it, ours or not, `per_page=1000`) once per cache period instead. Calls drop from
N to ceil(P/1000) per worker, but bytes and listing time grow with the project's size P, not with our fleet N.
Measured against the simulator for a fleet of `machines` devices, alone in the project and with other devices
beside it: API calls, response bytes and wall time of N GETs versus one full listing.
"""

from __future__ import annotations

import time
from typing import Any

import requests

from emulator.metal import MetalSimulator

TOKEN = "bench-cache-token"
PROJECT = "b0000000-0000-4000-8000-0000000000c6"
Obj = dict[str, Any]


def _cost(base: str, paths: list[str]) -> Obj:
    session = requests.Session()
    session.headers["X-Auth-Token"] = TOKEN
    total = 0
    started = time.perf_counter()
    for path in paths:
        response = session.get(base + path, timeout=30)
        response.raise_for_status()
        total += len(response.content)
    return {"calls": len(paths), "bytes": total, "ms": round((time.perf_counter() - started) * 1000, 1)}


def measure(machines: int = 200, others: tuple[int, ...] = (0, 2000)) -> Obj:
    out: Obj = {"machines": machines}
    for extra in others:
        sim = MetalSimulator({TOKEN: [PROJECT]})
        server = sim.serve()
        try:
            ours = [sim.add_device(PROJECT, hostname=f"m{i}", state="active",
                                   tags=["metal-machine-hooks:managed", f"metal-machine-hooks:uid:{i}"])
                    for i in range(machines)]
            for i in range(extra):
                sim.add_device(PROJECT, hostname=f"other-{i}", state="active", tags=["team: other"])
            gets = _cost(server.url, [f"/devices/{d['id']}" for d in ours])
            pages = -(-(machines + extra) // 1000)
            listing = _cost(server.url, [f"/projects/{PROJECT}/devices?per_page=1000&page={p + 1}"
                                         for p in range(pages)])
        finally:
            server.shutdown()
        out[f"project_with_{extra}_other_devices"] = {"cache_off_gets": gets, "cache_on_listing": listing}
    return out
