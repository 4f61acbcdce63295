"""Part 4: fleet convergence, a MachineDeployment scaled from 0 to N under the Metacontroller emulator.

Everything real except the cluster: the repository's controller YAMLs and CRDs in the emulator (in this process),
the hooks under gunicorn with the project's config, the Metal simulator (zero provisioning delay) in its own
process, and Nodes joining as devices turn active (emulator.nodes). Reported: seconds from the scale-up until
every Machine is Running, Machines per second, hook calls by controller and hook, and Metal API calls.
The emulator's own cost (deep copies of every object it stores and serves) is part of the time: it is an upper
bound for the hooks' share, not the hooks alone.
"""

from __future__ import annotations

import collections
import copy
import statistics
import time
from pathlib import Path
from typing import Any

import yaml

from bench.servers import Gunicorn, Simulator, calls_delta

REPO = Path(__file__).resolve().parent.parent
CRDS = REPO / "kubernetes" / "crds"
EXAMPLES = REPO / "kubernetes" / "examples"
CONTROLLERS = REPO / "metacontroller"
MACHINE_API = "machine.sapcloud.io/v1alpha1"
Obj = dict[str, Any]


def missing() -> list[str]:
    """What part 4 needs that this checkout lacks (the emulator and the set hooks are separate pieces)."""
    needed = [CRDS, EXAMPLES / "secret.yaml", EXAMPLES / "machine-class.yaml", EXAMPLES / "machine-deployment.yaml",
              CONTROLLERS / "machines.yaml", CONTROLLERS / "machinesets.yaml", CONTROLLERS / "machinedeployments.yaml",
              REPO / "emulator" / "metacontroller.py", REPO / "emulator" / "nodes.py", REPO / "emulator" / "store.py"]
    return [str(p.relative_to(REPO)) for p in needed if not p.exists()]


def example_credentials() -> tuple[str, str]:
    """The token and project the example Secret and MachineClass use (the simulator must accept them)."""
    token = yaml.safe_load((EXAMPLES / "secret.yaml").read_text())["stringData"]["apiToken"]
    docs = [d for d in yaml.safe_load_all((EXAMPLES / "machine-class.yaml").read_text()) if d]
    cls = next(d for d in docs if d.get("kind") == "MachineClass")
    return token, cls["providerSpec"]["projectID"]


def example_store(deployment_name: str, replicas: int) -> Any:
    """An emulated store with our CRDs, the example Secret and MachineClasses, and the example MachineDeployment
    under `deployment_name` with `replicas` and no minReadySeconds (parts 4 and 7)."""
    from emulator.store import Store

    store = Store()
    store.load_yaml(sorted(p for p in CRDS.glob("*.yaml") if p.name != "kustomization.yaml"))
    store.load_yaml([EXAMPLES / "secret.yaml"])
    for doc in yaml.safe_load_all((EXAMPLES / "machine-class.yaml").read_text()):
        if doc and doc.get("kind") == "MachineClass":
            store.create(doc)
    deployment = copy.deepcopy(yaml.safe_load((EXAMPLES / "machine-deployment.yaml").read_text()))
    deployment["metadata"]["name"] = deployment_name
    deployment["spec"].update(replicas=replicas, minReadySeconds=0)
    store.create(deployment)
    return store


def emulator(store: Any, sim: Simulator, hooks: Gunicorn) -> tuple[Any, Any]:
    """The Metacontroller emulator with the repository's controllers calling `hooks`, and a Node joiner for `sim`
    (neither started)."""
    from emulator.hookauth import seed_auth_secrets
    from emulator.metacontroller import Metacontroller, load_controllers
    from emulator.nodes import NodeJoiner

    controllers = load_controllers(CONTROLLERS)
    seed_auth_secrets(store, controllers, "bench-local-token")  # the hooks run with HOOK_AUTH_DISABLED=true
    mc = Metacontroller(store, controllers,
                        service_urls={"metal-machine-hooks.metal-machine-hooks": hooks.base_url})
    return mc, NodeJoiner(store, sim.base_url, poll_interval=0.1)


def _phase(machine: Obj) -> str:
    return ((machine.get("status") or {}).get("currentStatus") or {}).get("phase", "")


def measure(sim: Simulator, hooks: Gunicorn, *, replicas: int = 500, timeout: float = 240.0) -> Obj:
    store = example_store("bench-converge", 0)
    mc, joiner = emulator(store, sim, hooks)
    mc.start()
    joiner.start()
    try:
        mc.wait_idle(timeout=30)
        before_calls = sim.calls()
        before_hooks = len(mc.hook_calls())
        cpu0 = (time.process_time(), hooks.cpu_seconds(), sim.cpu_seconds())
        current = store.get(MACHINE_API, "MachineDeployment", "bench-converge", "default")
        current["spec"]["replicas"] = replicas
        t0 = time.monotonic()
        store.update(current)
        running = 0
        progress = []
        while time.monotonic() - t0 < timeout:
            time.sleep(0.5)
            machines = store.list(MACHINE_API, "Machine", "default")
            running = sum(1 for m in machines if _phase(m) == "Running")
            progress.append((round(time.monotonic() - t0, 1), running))
            if running >= replicas:
                break
        seconds = time.monotonic() - t0
        cpu1 = (time.process_time(), hooks.cpu_seconds(), sim.cpu_seconds())
        api = calls_delta(before_calls, sim.calls())
        calls = mc.hook_calls()[before_hooks:]
        by_hook = collections.Counter(f"{c.get('controller')}/{c.get('hook')}" for c in calls)
        hook_seconds = collections.defaultdict(list)
        for c in calls:
            hook_seconds[f"{c.get('controller')}/{c.get('hook')}"].append(float(c.get("seconds") or 0.0))
        failures = collections.Counter(c.get("outcome") for c in calls if c.get("outcome") != "ok")
    finally:
        joiner.stop()
        mc.stop()
    converged = running >= replicas
    samples = progress[:: max(1, len(progress) // 10)]
    return {
        "replicas": replicas,
        "converged": converged,
        "running": running,
        "seconds": round(seconds, 2) if converged else None,
        "timeout_s": timeout,
        "machines_per_second": round(replicas / seconds, 2) if converged else None,
        "hook_calls": sum(by_hook.values()),
        "hook_calls_by_controller": dict(sorted(by_hook.items())),
        "hook_call_problems": dict(failures),
        # Round trip as the emulator saw it (its encoding and decoding included): p50 and sum per hook.
        "hook_call_ms_p50": {k: round(statistics.median(v) * 1000, 2) for k, v in sorted(hook_seconds.items())},
        "hook_call_s_total": {k: round(sum(v), 2) for k, v in sorted(hook_seconds.items())},
        # Where the CPU went: the emulator (this process), the hook server, the simulator.
        "cpu_s": {name: (round(b - a, 2) if a is not None and b is not None else None)
                  for name, a, b in zip(("emulator", "hooks", "simulator"), cpu0, cpu1, strict=True)},
        "api_calls": sum(api.values()),
        "api_calls_by_route": api,
        "progress_s_running": samples,
    }
