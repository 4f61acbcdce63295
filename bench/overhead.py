"""Part 1: what a steady-state Machine sync costs beyond the one API call it cannot avoid.

Three loads, measured side by side in interleaved rounds (the order rotates each round) so that noise from other
work on this shared machine hits all three alike:

* hook: POST /machine/sync of a Running Machine whose device is active and Node Ready, served by gunicorn with
  the project's gunicorn.conf.py, against the simulator (one device GET per sync);
* noop: the same request body to a Flask app under the same gunicorn config that parses it and answers `{}`;
* simulator: the simulator's GET /devices/{id}?include=metro on its own (what the hook's one API call costs).

overhead_ratio = hook p50 / (noop p50 + simulator p50): 1.0 would mean the hook costs nothing but the HTTP
serving and the API call.
"""

from __future__ import annotations

import json
import statistics
from typing import Any

import requests

from bench import loadgen
from bench.fleet import Fleet, machine_request
from bench.servers import Gunicorn, Simulator, calls_delta

Obj = dict[str, Any]


def http_sync(session: requests.Session, url: str) -> Any:
    def sync(body: Obj) -> Obj:
        response = session.post(url, data=json.dumps(body), headers={"Content-Type": "application/json"}, timeout=30)
        if response.status_code != 200:
            raise RuntimeError(f"{url} answered {response.status_code}: {response.text[:300]}")
        return response.json()

    return sync


def active_devices(sim: Simulator) -> Any:
    def active(ids: set[str]) -> set[str]:
        if not ids:
            return set()
        return {d["id"] for d in sim.devices() if d["id"] in ids and d.get("state") == "active"}

    return active


def steady_machine(sim: Simulator, hooks: Gunicorn, project: str, token: str) -> Obj:
    """A Machine request in steady state: driven to Running through the hook, then checked to sync unchanged."""
    with requests.Session() as session:
        sync = http_sync(session, hooks.base_url + "/machine/sync")
        fleet = Fleet([machine_request(0, project, token, prefix="steady")], sync, active_devices(sim))
        fleet.converge()
        body = fleet.bodies[0]
        answer = sync(body)
    if answer.get("status") != body["object"]["status"] or answer.get("labels") or answer.get("annotations"):
        raise RuntimeError(f"the steady Machine does not sync unchanged: {json.dumps(answer)[:500]}")
    return body


def measure(sim: Simulator, hooks: Gunicorn, noop: Gunicorn, body: Obj, token: str, *, rounds: int = 12,
            per_round: int = 150, concurrency: int = 8, throughput_per_round: int = 400,
            hooks_cached: Gunicorn | None = None) -> Obj:
    """`hooks_cached`, when given, is a fourth load: the same hook with the device cache on (informational: most
    of its syncs make no API call, so it is not the figure the target is about)."""
    raw = json.dumps(body).encode()
    device = body["object"]["metadata"]["annotations"]["metal-machine-hooks/device-id"]
    expected_status = json.dumps(body["object"]["status"], sort_keys=True)

    def hook_ok(_status: int, data: bytes) -> str | None:
        return None if b'"Running"' in data else "the hook did not answer a Running Machine"

    targets = [
        loadgen.Target("hook", hooks.port, "POST", "/machine/sync", raw, check=hook_ok),
        loadgen.Target("noop", noop.port, "POST", "/sync", raw),
        loadgen.Target("simulator_get", sim.port, "GET", f"/metal/v1/devices/{device}?include=metro",
                       headers={"X-Auth-Token": token}),
    ]
    if hooks_cached is not None:
        targets.append(loadgen.Target("hook_cached", hooks_cached.port, "POST", "/machine/sync", raw, check=hook_ok))
    # Warm up every server and connection path once before measuring.
    for target in targets:
        loadgen.run(target, 50, 1)
    answer = json.loads(requests.post(hooks.base_url + "/machine/sync", data=raw, timeout=30).content)
    if json.dumps(answer.get("status"), sort_keys=True) != expected_status:
        raise RuntimeError("the hook's answer changed the steady Machine's status")

    # API calls per steady sync: only the hook load runs while the simulator counts.
    before = sim.calls()
    steady_syncs = 200
    loadgen.run(targets[0], steady_syncs, 4)
    api = calls_delta(before, sim.calls())
    api_per_sync = sum(api.values()) / steady_syncs

    # CPU seconds the serving processes spend per request (noise-robust: waiting for a core does not count).
    servers = {"hook": hooks, "noop": noop, "simulator_get": sim, "hook_cached": hooks_cached}
    cpu: dict[str, float] = {t.name: 0.0 for t in targets}
    sim_cpu_for_hook = 0.0
    latencies: dict[str, list[float]] = {t.name: [] for t in targets}
    rps: dict[str, list[float]] = {t.name: [] for t in targets}
    per_round_ratio = []
    for r in range(rounds):
        order = targets[r % len(targets):] + targets[: r % len(targets)]
        p50 = {}
        for target in order:
            server = servers[target.name]
            before_cpu, before_sim = server.cpu_seconds() if server else None, sim.cpu_seconds()
            batch = loadgen.run(target, per_round, 1)
            after_cpu, after_sim = server.cpu_seconds() if server else None, sim.cpu_seconds()
            if before_cpu is not None and after_cpu is not None:
                cpu[target.name] += after_cpu - before_cpu
            if target.name == "hook" and before_sim is not None and after_sim is not None:
                sim_cpu_for_hook += after_sim - before_sim
            latencies[target.name] += batch.latencies
            p50[target.name] = statistics.median(batch.latencies)
        per_round_ratio.append(p50["hook"] / (p50["noop"] + p50["simulator_get"]))
        for target in order:
            if r % 3 == 0:  # throughput rounds are fewer: they are for requests per second, not latency
                rps[target.name].append(loadgen.run(target, throughput_per_round, concurrency).rps)

    result: Obj = {name: loadgen.summary(latencies[name], rps[name]) for name in latencies}
    ratio = result["hook"]["p50_ms"] / (result["noop"]["p50_ms"] + result["simulator_get"]["p50_ms"])
    result["overhead_ratio"] = round(ratio, 3)
    result["overhead_ratio_per_round"] = {
        "median": round(statistics.median(per_round_ratio), 3),
        "min": round(min(per_round_ratio), 3),
        "max": round(max(per_round_ratio), 3),
    }
    if hooks_cached is not None:
        cached = result["hook_cached"]["p50_ms"]
        result["overhead_ratio_cached"] = round(cached / (result["noop"]["p50_ms"] + result["simulator_get"]["p50_ms"]),
                                                3)
    for name in cpu:
        result[name]["server_cpu_ms_per_request"] = round(cpu[name] / len(latencies[name]) * 1000, 3)
    result["hook"]["simulator_cpu_ms_per_request"] = round(sim_cpu_for_hook / len(latencies["hook"]) * 1000, 3)
    result["api_calls_per_steady_sync"] = round(api_per_sync, 3)
    result["api_calls_steady"] = api
    result["request_bytes"] = len(raw)
    result["method"] = (f"{rounds} interleaved rounds x {per_round} requests per load at concurrency 1 (latency); "
                        f"{(rounds + 2) // 3} rounds x {throughput_per_round} at concurrency {concurrency} (rps)")
    return result
