"""Part 5: what kubelet heartbeats cost a steady fleet: hook calls per controller and Metal API calls per period.

A kubelet reports its Node's status every nodeStatusReportFrequency even when nothing changed; only
lastHeartbeatTime moves. The Machine controller relates each Machine's Node, so every report re-syncs that Machine,
and whatever the Machine hook then writes fans out to the MachineSet and MachineClass controllers. This part
measures that load: a MachineDeployment of N Machines converges with heartbeats off, then the Node joiner reports
every Node at `period` seconds (each Node k periods after it joined, so reports spread over the period) for `rounds`
rounds, and every hook call and API call those reports caused, until the emulator is idle again, is counted and
divided by the number of rounds (heartbeats / Nodes). A queued key that is triggered again is synced once, so an
overloaded controller merges work: the figures are what the controllers did, not an upper bound. The Jobs the
Machines declare (the Node-side sync Job that labels a new Node) finish at once, as in `make chaos` (the emulator's
stand-in Job runner): without a Job runner each Machine would wait for its Job and look again every few seconds,
which is not a steady fleet. Everything else as in part 4 (bench.converge).
"""

from __future__ import annotations

import collections
import time
from typing import Any

from bench.converge import MACHINE_API, _phase, emulator, example_store
from bench.servers import Gunicorn, Simulator, calls_delta

CONTROLLER_NAMES = ("metal-machines", "metal-machinesets", "metal-machinedeployments", "metal-machineclasses")
Obj = dict[str, Any]


def measure(sim: Simulator, hooks: Gunicorn, *, machines: int = 200, period: float = 10.0, rounds: int = 2,
            timeout: float = 240.0) -> Obj:
    from emulator.jobs import JobRunner

    store = example_store("bench-heartbeats", machines)
    mc, joiner = emulator(store, sim, hooks)
    jobs = JobRunner(store, poll_interval=0.1)
    mc.start()
    joiner.start()
    jobs.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            fleet = store.list(MACHINE_API, "Machine", "default")
            if len(fleet) == machines and all(_phase(m) == "Running" and (m["metadata"].get("labels") or {}).get(
                    "node") for m in fleet):
                break
            time.sleep(0.5)
        else:
            raise TimeoutError(f"the fleet of {machines} did not reach Running within {timeout} s")
        # Settling takes a while at 200: every MachineSet status write while the fleet converged re-syncs each
        # Machine of the set (the Machine hook relates its MachineSet), and those syncs drain before the count starts.
        mc.wait_idle(timeout=timeout)
        time.sleep(1.0)  # the last label writes' echoes
        mc.wait_idle(timeout=timeout)
        before_calls, before_hooks, before_beats = sim.calls(), len(mc.hook_calls()), joiner.heartbeats
        joiner.heartbeat_period = period
        started = time.monotonic()
        while joiner.heartbeats - before_beats < rounds * machines and time.monotonic() - started < timeout:
            time.sleep(0.2)
        joiner.heartbeat_period = 0.0  # then count everything those rounds caused, however long it takes
        beats = joiner.heartbeats - before_beats
        reported = time.monotonic() - started
        mc.wait_idle(timeout=timeout)
        api = calls_delta(before_calls, sim.calls())
        calls = [c for c in mc.hook_calls()[before_hooks:] if c.get("hook") in ("sync", "finalize")]
    finally:
        jobs.stop()
        joiner.stop()
        mc.stop()
    measured_rounds = beats / machines
    by_controller = collections.Counter(str(c.get("controller")) for c in calls)
    per_round = {name: round(by_controller[name] / measured_rounds, 2) for name in CONTROLLER_NAMES}
    return {
        "machines": machines,
        "period_s": period,
        "rounds": round(measured_rounds, 2),
        "seconds_reporting": round(reported, 1),
        "seconds_until_idle": round(time.monotonic() - started, 1),
        "heartbeats": beats,
        "hook_calls_per_period": per_round,
        "metal_api_calls_per_period": round(sum(api.values()) / measured_rounds, 2),
        "api_calls_by_route": api,
    }
