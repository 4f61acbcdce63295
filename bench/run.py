"""`make bench`: measure the hooks at fleet scale (issue 8), print a table and write bench/results.json.

Parts: 1 hook overhead (bench.overhead), 2 API calls with and without the device cache (bench.api_calls),
3 large parents (bench.parents), 4 fleet convergence (bench.converge), 5 MachineClass sync bytes per Machine change
(bench.classes), 6 what the device listing cache costs in bytes against the calls it saves (bench.cache_cost), 7 the
load of kubelet heartbeats on a steady fleet of --machines (bench.heartbeats). A part that cannot run (a missing
piece, an error) is reported as null with the reason in results.json instead of failing the whole run.

    python -m bench.run                      # everything, a few minutes
    python -m bench.run --parts 1,3          # some parts
    python -m bench.run --quick              # tiny counts: checks the harness works (the smoke test uses it)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import api_calls, cache_cost, classes, converge, heartbeats, overhead, parents
from bench.servers import Gunicorn, Simulator

RESULTS = Path(__file__).resolve().parent / "results.json"
TARGETS = {
    "overhead_ratio": ("<=", 1.3),
    "api_calls_per_steady_sync": ("<=", 1.0),
    "posts_per_machine": ("==", 1.0),
    "machineset_1000_ms": ("<=", 20.0),
    "machinedeployment_10_ms": ("<=", 5.0),
    "converge_500_s": (None, None),
    "class_sync_ratio_10_to_1": ("<=", 1.5),
    "syncs_per_heartbeat_period": (None, None),
}
STEADY_PROJECT = "b0000000-0000-4000-8000-00000000000a"
NOCACHE_PROJECT = "b0000000-0000-4000-8000-00000000000b"
CACHE_PROJECT = "b0000000-0000-4000-8000-00000000000c"
CACHE_SECONDS = 60.0
Obj = dict[str, Any]


def machine_info() -> Obj:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model or platform.processor(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _met(name: str, value: Any) -> bool | None:
    op, target = TARGETS[name]
    if value is None or op is None:
        return None
    return value <= target if op == "<=" else value == target


def run_part(results: Obj, name: str, work: Callable[[], Obj]) -> Obj | None:
    t0 = time.monotonic()
    print(f"[bench] {name} ...", file=sys.stderr, flush=True)
    try:
        value = work()
    except Exception as exc:
        results["errors"][name] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
        return None
    print(f"[bench] {name} done in {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
    results["parts"][name] = value
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="1,2,3,4,5,6,7", help="comma list of parts to run (default 1,2,3,4,5,6,7)")
    parser.add_argument("--quick", action="store_true", help="tiny counts, to check the harness (no targets)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results file (default {RESULTS})")
    parser.add_argument("--machines", type=int, default=200, help="part 2 and 5 fleet size (default 200)")
    parser.add_argument("--replicas", type=int, default=500, help="part 4 MachineDeployment size (default 500)")
    args = parser.parse_args(argv)
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    quick = args.quick
    machines = 5 if quick else args.machines
    replicas = 5 if quick else args.replicas

    results: Obj = {"machine": machine_info(), "quick": quick, "parts": {}, "errors": {}}
    token, example_project = converge.example_credentials()
    sim = Simulator(token, [STEADY_PROJECT, NOCACHE_PROJECT, CACHE_PROJECT, example_project])
    servers = [sim]
    try:
        # A local benchmark: hook authentication is off explicitly (the emulator parts still find their Secret).
        hook_env = {"METAL_API_URL": sim.url, "HOOK_AUTH_DISABLED": "true"}
        hooks = Gunicorn("hooks.app:create_app()", env=hook_env, name="hooks")
        servers.append(hooks)
        steady: Obj | None = None
        if "1" in parts or "3" in parts:
            try:
                steady = overhead.steady_machine(sim, hooks, STEADY_PROJECT, token)
            except Exception as exc:
                results["errors"]["steady_machine"] = f"{type(exc).__name__}: {exc}"
        if "1" in parts and steady is not None:
            noop = Gunicorn("bench.noop_app:create_app()", name="noop")
            warm = Gunicorn("hooks.app:create_app()", name="hooks-cached-steady",
                            env={**hook_env, "METAL_DEVICE_CACHE_SECONDS": str(CACHE_SECONDS)})
            servers += [noop, warm]
            sizes = {"rounds": 3, "per_round": 20, "throughput_per_round": 20} if quick else {}
            run_part(results, "overhead", lambda: overhead.measure(sim, hooks, noop, steady, token,
                                                                   hooks_cached=warm, **sizes))
            noop.stop()
            warm.stop()
        if "2" in parts:
            cached: list[Gunicorn] = []

            def start_cached() -> Gunicorn:
                for old in cached:
                    old.stop()
                cached.append(Gunicorn("hooks.app:create_app()", name="hooks-cached",
                                       env={**hook_env, "METAL_DEVICE_CACHE_SECONDS": str(CACHE_SECONDS)}))
                servers.append(cached[-1])
                return cached[-1]

            run_part(results, "api_calls", lambda: api_calls.measure(
                sim, hooks, start_cached, (NOCACHE_PROJECT, CACHE_PROJECT), token, n=machines,
                cache_seconds=CACHE_SECONDS))
            for server in cached:
                server.stop()
        if "3" in parts:
            child = steady["object"] if steady is not None else None
            run_part(results, "large_parents", lambda: parents.measure(child, repeats=3 if quick else 30))
        if "4" in parts:
            absent = converge.missing()
            if absent:
                results["errors"]["convergence"] = f"not run: missing {', '.join(absent)}"
            else:
                run_part(results, "convergence", lambda: converge.measure(
                    sim, hooks, replicas=replicas, timeout=60.0 if quick else 240.0))
        if "5" in parts:
            run_part(results, "class_syncs", lambda: classes.measure(per_class=5 if quick else 100))
        if "6" in parts:
            run_part(results, "cache_cost", lambda: cache_cost.measure(machines, others=(0, 50 if quick else 2000)))
        if "7" in parts and not converge.missing():
            run_part(results, "heartbeats", lambda: heartbeats.measure(
                sim, hooks, machines=machines, period=1.0 if quick else 10.0, rounds=2,
                timeout=60.0 if quick else 240.0))
    finally:
        for server in reversed(servers):
            server.stop()
    results["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    summarise(results, replicas)
    args.out.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    print_table(results)
    print(f"\nwrote {args.out}")
    return 0


def summarise(results: Obj, replicas: int) -> None:
    """The headline figures the issue asks for, each null with a reason when its part did not produce it."""
    p = results["parts"]
    errors = results["errors"]
    o, a, lp, c = p.get("overhead"), p.get("api_calls"), p.get("large_parents"), p.get("convergence")
    cs = p.get("class_syncs")
    h = p.get("heartbeats")
    figures = {
        "overhead_ratio": o and o["overhead_ratio"],
        "api_calls_per_steady_sync": o and o["api_calls_per_steady_sync"],
        "api_calls_per_steady_sync_cached": a and a["cache_on"]["steady_resync"]["calls_per_sync"],
        "posts_per_machine": a and a["cache_off"]["posts_per_machine"],
        "machineset_1000_ms": lp and lp["machineset_1000"]["hook_time_ms"],
        "machinedeployment_10_ms": lp and lp["machinedeployment_10"]["hook_time_ms"],
        "converge_500_s": c and c["seconds"],
        "class_sync_bytes_per_machine_change": cs and cs["class_sync_bytes_per_machine_change"],
        "class_sync_ratio_10_to_1": cs and cs["class_sync_bytes_per_machine_change"]["ratio"],
        # Per kubelet report period in a steady fleet: sync/finalize calls of each controller, Metal API calls.
        "syncs_per_heartbeat_period": h and {**h["hook_calls_per_period"],
                                             "metal_api_calls": h["metal_api_calls_per_period"]},
    }
    if c and not c["converged"]:
        errors.setdefault("convergence", f"{c['running']} of {c['replicas']} Running after {c['timeout_s']} s")
    reasons = {}
    if replicas != 500 and c:
        figures["converge_500_s"] = None
        reasons["converge_500_s"] = errors["convergence_size"] = f"ran with {replicas} replicas, not 500"
    for name, value in figures.items():
        if value is None and name not in reasons:
            part = {"overhead_ratio": "overhead", "api_calls_per_steady_sync": "overhead",
                    "api_calls_per_steady_sync_cached": "api_calls", "posts_per_machine": "api_calls",
                    "machineset_1000_ms": "large_parents", "machinedeployment_10_ms": "large_parents",
                    "converge_500_s": "convergence", "class_sync_bytes_per_machine_change": "class_syncs",
                    "class_sync_ratio_10_to_1": "class_syncs", "syncs_per_heartbeat_period": "heartbeats"}[name]
            reasons[name] = errors.get(part) or errors.get("steady_machine") or "part not run"
    results.update({k: v for k, v in figures.items()})
    results["null_reasons"] = reasons
    results["targets"] = {
        name: {"target": f"{op} {target}" if op else "report only", "met": _met(name, results.get(name))}
        for name, (op, target) in TARGETS.items()
    }
    # The headline keys first, details after.
    ordered = {k: results[k] for k in (*figures, "targets", "null_reasons", "machine", "quick", "parts", "errors")}
    results.clear()
    results.update(ordered)


def print_table(results: Obj) -> None:
    p = results["parts"]
    rows: list[tuple[str, str]] = []
    o = p.get("overhead")
    if o:
        for name in ("hook", "noop", "simulator_get", "hook_cached"):
            if name not in o:
                continue
            s = o[name]
            rows.append((f"1 {name}", f"p50 {s['p50_ms']:.2f} ms  p99 {s['p99_ms']:.2f} ms  {s['rps']:.0f} req/s  "
                                      f"server CPU {s['server_cpu_ms_per_request']:.2f} ms/req"))
        pr = o["overhead_ratio_per_round"]
        rows.append(("1 overhead_ratio", f"{o['overhead_ratio']:.3f}  (per round: median {pr['median']:.3f}, "
                                         f"{pr['min']:.3f}..{pr['max']:.3f}; target <= 1.3)"))
        if "overhead_ratio_cached" in o:
            rows.append(("1 overhead_ratio_cached", f"{o['overhead_ratio_cached']:.3f}  (device cache on; "
                                                    "informational)"))
        rows.append(("1 api_calls_per_steady_sync", f"{o['api_calls_per_steady_sync']}  (target <= 1.0)"))
    a = p.get("api_calls")
    if a:
        for mode in ("cache_off", "cache_on"):
            m = a[mode]
            s = m["steady_resync"]
            rows.append((f"2 N={m['machines']} {mode}",
                         f"POSTs {m['posts']} ({m['posts_per_machine']}/machine), {m['total_calls']} calls "
                         f"({m['calls_per_machine']}/machine) to Running"))
            rows.append((f"2 steady resync {mode}", f"{s['calls']} calls for {s['syncs']} syncs "
                                                   f"({s['list_calls']} list, {s['device_gets']} GET)"))
    lp = p.get("large_parents")
    if lp:
        for name, target in (("machineset_1000", 20), ("machinedeployment_10", 5)):
            r = lp[name]
            rows.append((f"3 {name}", f"p50 {r['hook_time_ms']:.2f} ms, best {r['hook_time_min_ms']:.2f} ms "
                                      f"(decode {r['decode_ms']:.2f} + hook "
                                      f"{r['hook_function_ms']:.2f} + encode {r['encode_ms']:.2f}; target <= "
                                      f"{target}); request {r['request_bytes'] / 1024:.0f} KiB"))
    c = p.get("convergence")
    if c:
        rows.append((f"4 converge {c['replicas']}", f"{c['seconds']} s, {c['machines_per_second']} machines/s, "
                                                    f"{c['hook_calls']} hook calls, {c['api_calls']} API calls"
                     if c["converged"] else f"not converged: {c['running']}/{c['replicas']} Running"))
    cs = p.get("class_syncs")
    h = p.get("heartbeats")
    if cs:
        f = cs["class_sync_bytes_per_machine_change"]
        per = cs["after"]["1_classes"]["machines_per_class"]
        rows.append(("5 class sync bytes per Machine change",
                     f"1 class of {per}: {f['one_class']} B, 10 classes of {per}: {f['ten_classes']} B "
                     f"(ratio {f['ratio']}, target <= 1.5); before: {f['before_one_class']} B and "
                     f"{f['before_ten_classes']} B"))
    if h:
        rows.append((f"7 heartbeats N={h['machines']}", f"per {h['period_s']} s report period ({h['rounds']} rounds): "
                     + ", ".join(f"{k} {v}" for k, v in h["hook_calls_per_period"].items())
                     + f", Metal API calls {h['metal_api_calls_per_period']}"))
    for name, reason in results["null_reasons"].items():
        rows.append((f"! {name}", f"null: {reason}"))
    width = max((len(k) for k, _ in rows), default=10)
    m = results["machine"]
    print(f"\nbench on {m['cpu']} x{m['cpus']}, Python {m['python']}, load {m['loadavg_at_start']}")
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    sys.exit(main())
