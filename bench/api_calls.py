"""Part 2: Metal API calls, for N Machines from nothing to Running and for one steady resync of the fleet.

The Machine hook runs under gunicorn (project config, 2 workers) and is driven by bench.fleet: one sync per
Machine per round, Nodes joining once their device is active, as Metacontroller and the kubelets would. Run
twice: with the device listing cache off (default) and on (METAL_DEVICE_CACHE_SECONDS). Each mode has its own
project in the simulator; the simulator's call counters are read before and after each phase.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import requests

from bench.fleet import Fleet, machine_request
from bench.overhead import active_devices, http_sync
from bench.servers import Gunicorn, Simulator, calls_delta

Obj = dict[str, Any]
POST = "POST /projects/{id}/devices"
LIST = "GET /projects/{id}/devices"
GET = "GET /devices/{id}"


def fleet_calls(sim: Simulator, hooks: Gunicorn, project: str, token: str, n: int, prefix: str,
                new_period: Callable[[], Gunicorn] | None = None) -> Obj:
    """N Machines to Running, then one steady resync; `new_period` gives a server whose caches start empty, as
    they are at the start of a cache period (without it, the resync may be answered from listings still fresh)."""
    with requests.Session() as session:
        fleet = Fleet([machine_request(i, project, token, prefix=prefix) for i in range(n)],
                      http_sync(session, hooks.base_url + "/machine/sync"), active_devices(sim))
        before = sim.calls()
        t0 = time.perf_counter()
        rounds = fleet.converge()
        seconds = time.perf_counter() - t0
        converged = sim.calls()
        create = calls_delta(before, converged)
        hook_calls = fleet.hook_calls
        if new_period is not None:
            hooks = new_period()
            fleet.sync = http_sync(session, hooks.base_url + "/machine/sync")
            converged = sim.calls()
        fleet.round(only_unready=False)  # one resync period of a steady fleet: every Machine synced once
        steady = calls_delta(converged, sim.calls())
    total = sum(create.values())
    devices = [d for d in sim.devices() if d["hostname"].startswith(prefix + "-")]
    return {
        "machines": n,
        "devices_created": len(devices),
        "posts": create.get(POST, 0),
        "posts_per_machine": round(create.get(POST, 0) / n, 3),
        "total_calls": total,
        "calls_per_machine": round(total / n, 3),
        "calls_by_route": create,
        "hook_calls": hook_calls,
        "rounds": rounds,
        "seconds": round(seconds, 2),
        "steady_resync": {
            "syncs": n,
            "calls": sum(steady.values()),
            "calls_per_sync": round(sum(steady.values()) / n, 4),
            "list_calls": steady.get(LIST, 0),
            "device_gets": steady.get(GET, 0),
            "calls_by_route": steady,
        },
    }


def measure(sim: Simulator, hooks_plain: Gunicorn, hooks_cached: Callable[[], Gunicorn], projects: tuple[str, str],
            token: str, *, n: int = 200, cache_seconds: float) -> Obj:
    """`hooks_cached` starts a hook server with the cache on (stopping any it started before)."""
    off = fleet_calls(sim, hooks_plain, projects[0], token, n, "nocache")
    on = fleet_calls(sim, hooks_cached(), projects[1], token, n, "cache", new_period=hooks_cached)
    return {
        "n": n,
        "cache_off": off,
        "cache_on": {**on, "cache_seconds": cache_seconds},
        "steady_list_calls_target": math.ceil(n / 100),
        "note": ("cache on: one listing (per_page=1000) per gunicorn worker per cache period answers every steady "
                 "Machine of that worker; creates still look up by tag and POST on fresh data"),
    }
