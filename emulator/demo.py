"""`make demo`: the whole product on a laptop, end to end, in about a minute.

It starts the Equinix Metal simulator and the hook server under gunicorn (subprocesses, exactly as deployed),
runs the Metacontroller emulator in this process with the real controller configs, applies
`kubernetes/examples/`, and then drives the example MachineDeployment through a scale-up, a rollout to the
second MachineClass, a scale-down and deletion, showing a live table of Machines, MachineSets and
MachineDeployments. It ends with a summary (devices, hook calls, API calls, time per phase) and a leak check,
and exits 0 only if every step converged. Any step that does not converge in time prints what is stuck and
exits 1.

    python -m emulator.demo            # the flow with short, realistic delays
    python -m emulator.demo --keep     # stop before the deletion and leave everything running (Ctrl-C ends it)
    python -m emulator.demo --fast     # zero delays (tests)
    python -m emulator.demo --two-clusters   # Machines in one cluster, their Nodes in another (issue 17)

With --two-clusters the emulator runs a control cluster (Machines, Secrets, Jobs; Metacontroller) and a target
cluster (Nodes, their pods, bootstrap tokens) with its own REST API, and a kubeconfig Secret naming the target in
the Machines' namespace (docs/operations.md, "Two clusters"). The flow is the same: the Machines read their Nodes
from the target, and the drain and Node-side Jobs act there through the mounted kubeconfig. Target Nodes are not
watched, so the Machine controller resyncs every TARGET_RESYNC seconds in this topology.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import requests
import yaml

from emulator import demo_view as view
from emulator.demo_processes import REPO, Child, StartError, start_hook_server, start_simulator
from emulator.store import ApiError, Conflict, Store

Obj = dict[str, Any]
EXAMPLES = REPO / "kubernetes" / "examples"
CRDS = REPO / "kubernetes" / "crds"
CONTROLLERS = REPO / "metacontroller"
MACHINE_API = view.MACHINE_API
NAMESPACE = "default"
MACHINE = "eqx-test-machine"
DEPLOYMENT = "eqx-test-machine-deployment"
NEW_CLASS = "eqx-mc-v2"
HOOK_SERVICE = "metal-machine-hooks.metal-machine-hooks"
JOIN_LINE = "kubeadm join api.demo.example:443 --token <<BOOTSTRAP_TOKEN>> --node-name <<MACHINE_NAME>>\n"
TARGET_RESYNC = 2  # seconds: the Machine controller's resync with --two-clusters (a Node change is seen within it)


@dataclass(frozen=True)
class Timing:
    """Delays of the stand-ins: short enough for a one-minute demo, long enough to watch each phase."""

    provision: float = 4.0        # simulator: queued + provisioning
    deprovision: float = 2.0      # simulator: deprovisioning
    node_ready: float = 2.0       # kubelet: Node Ready after the device is active
    drain: float = 1.0            # drain Job run time
    min_ready: int = 3            # MachineDeployment minReadySeconds (the example's 10 s would double the run)
    refresh: float = 0.5          # table refresh / poll interval
    step_timeout: float = 60.0

    @classmethod
    def fast(cls) -> Timing:
        return cls(provision=0.0, deprovision=0.0, node_ready=0.0, drain=0.0, min_ready=0, refresh=0.05,
                   step_timeout=30.0)


class StepTimeout(Exception):
    def __init__(self, title: str, seconds: float, obs: view.Observation) -> None:
        super().__init__(f"step '{title}' did not converge within {seconds:.0f} s")
        self.obs = obs


# ---------------------------------------------------------------- what "done" means for each step

def _ready_count(obs: view.Observation, replicas: int, template_class: str | None, plans: dict[str, str]) -> bool:
    """The deployment has exactly `replicas` Running Machines (on `template_class` if given), the standalone
    Machine runs, and the simulator holds exactly one active device per Machine, on its class's plan."""
    deployment = next((d for d in obs.deployments if view.meta(d).get("name") == DEPLOYMENT), None)
    if deployment is None:
        return False
    st = view.status(deployment)
    if (st.get("observedGeneration") or 0) < (view.meta(deployment).get("generation") or 0):
        return False
    if any(st.get(k) != replicas for k in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas")):
        return False
    if any(view.meta(m).get("deletionTimestamp") or view.phase(m) != "Running" for m in obs.machines):
        return False
    names = {view.meta(m).get("name") for m in obs.machines}
    if MACHINE not in names or len(obs.machines) != replicas + 1 or len(obs.ours()) != len(obs.machines):
        return False
    for machine in obs.machines:
        device = obs.device_of(machine)
        cls = ((machine.get("spec") or {}).get("class") or {}).get("name", "")
        if device is None or device.get("state") != "active" or view.plan_of(device) != plans.get(cls):
            return False
        if template_class and view.meta(machine).get("name") != MACHINE and cls != template_class:
            return False
    return True


def _all_gone(obs: view.Observation) -> bool:
    return not (obs.machines or obs.machinesets or obs.deployments or obs.ours())


# ---------------------------------------------------------------- output

class Display:
    """A table refreshed in place on a terminal; elsewhere (CI logs, a file) one line per object that changed."""

    def __init__(self, out: TextIO, *, tty: bool | None = None) -> None:
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self.done: list[str] = []
        self._last_lines: dict[str, str] = {}
        self._last_obs: view.Observation | None = None
        self._frames = 0

    def width(self) -> int:
        return shutil.get_terminal_size((160, 40)).columns if self.tty else 200

    def step_started(self, index: int, total: int, title: str) -> None:
        if not self.tty:
            self._print(f"\n==> [{index}/{total}] {title}")

    def step_finished(self, index: int, total: int, title: str, seconds: float) -> None:
        line = f"  ok [{index}/{total}] {title}  ({seconds:.1f} s)"
        self.done.append(line)
        if not self.tty:
            self._print(line.strip())
        elif self._last_obs is not None:
            self._draw(self._last_obs, None)

    def frame(self, obs: view.Observation, heading: str, elapsed: float) -> None:
        self._last_obs = obs
        if self.tty:
            self._draw(obs, f"  .. {heading}  ({elapsed:.1f} s)")
            return
        lines = view.snapshot(obs)
        for change in view.changes(self._last_lines, lines):
            self._print(f"{elapsed:6.1f} s  {change}")
        self._last_lines = lines

    def _draw(self, obs: view.Observation, current: str | None) -> None:
        """Redraw the terminal from the top: finished steps, the running one, the tables."""
        lines = ["metal-machine-hooks demo  (Ctrl-C stops it cleanly)", *self.done,
                 *([current] if current else []), "", *view.render(obs, width=self.width())]
        # A wrapped line would push the frame down on every refresh: cut each line to the terminal.
        lines = [view.clip(line, self.width() - 1) for line in lines]
        prefix = "\x1b[2J\x1b[H" if self._frames == 0 else "\x1b[H"
        self.out.write(prefix + "".join(line + "\x1b[K\n" for line in lines) + "\x1b[J")
        self.out.flush()
        self._frames += 1

    def _print(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()


# ---------------------------------------------------------------- the run

@dataclass
class Demo:
    timing: Timing
    keep: bool = False
    out: TextIO | None = None
    tty: bool | None = None
    two_clusters: bool = False

    def __post_init__(self) -> None:
        self.out = self.out or sys.stdout
        self.display = Display(self.out, tty=self.tty)
        self.children: list[Child] = []
        self.workers: list[Any] = []
        self.mc: Any = None
        self.store: Store | None = None
        self.node_store: Store | None = None  # where Nodes live: the target cluster with --two-clusters
        self.target_api: Any = None
        self.target_token = ""
        self.sim_url = ""
        self.session = requests.Session()
        self.peak_machines = 0
        self.phases: list[tuple[str, float]] = []
        self.workdir = Path(tempfile.mkdtemp(prefix="metal-demo-"))
        self._stopped = False
        self.keeping = False  # in --keep's wait, where Ctrl-C is the normal way out
        self.node_side = view.NodeSide()
        # The simulator accepts exactly the example Secret's token for the example classes' project.
        self.token = _docs(EXAMPLES / "secret.yaml")[0]["stringData"]["apiToken"]
        self.hook_token = ""  # the bearer token the hook server requires, set when it starts
        self.project = next(d for d in _docs(EXAMPLES / "machine-class.yaml")
                            if d.get("kind") == "MachineClass")["providerSpec"]["projectID"]

    # ------------------------------------------------------------ start and stop

    def start(self) -> None:
        from emulator.hookauth import seed_auth_secrets
        from emulator.jobs import JobRunner
        from emulator.metacontroller import Metacontroller, load_controllers
        from emulator.nodes import NodeJoiner

        token, project = self.token, self.project
        started = time.monotonic()
        self.note("starting the Equinix Metal simulator, the hook server (gunicorn) and the Metacontroller emulator")
        sim = start_simulator(self.workdir, token=token, project=project, provision_seconds=self.timing.provision,
                              deprovision_seconds=self.timing.deprovision)
        self.children.append(sim)
        self.sim_url = sim.url
        # The key bootstrap tokens are derived with (docs/nodes.md), as the deployment mounts it from a Secret.
        key_file = self.workdir / "bootstrap-token-key"
        key_file.write_text(secrets.token_hex(32))
        key_file.chmod(0o600)
        # The install step (docs/operations.md): one random token in the Secret the controllers' endpointConfigs name.
        hook_token = self.hook_token = secrets.token_urlsafe(32)
        hooks = start_hook_server(self.workdir, metal_api_url=sim.url + "/metal/v1", token=hook_token,
                                  env={"BOOTSTRAP_TOKEN_KEY_FILE": str(key_file)})
        self.children.append(hooks)
        store = Store()
        store.load_yaml(sorted(p for p in CRDS.glob("*.yaml") if p.name != "kustomization.yaml"))
        self.store = store
        store.watch(self.node_side.record)
        controllers = load_controllers(CONTROLLERS)
        if self.two_clusters:  # the target's Nodes are not watched: a change reaches a Machine at its next resync
            for controller in controllers:
                if controller["metadata"]["name"] == "metal-machines":
                    controller["spec"]["resyncPeriodSeconds"] = TARGET_RESYNC
        seed_auth_secrets(store, controllers, hook_token)
        self.mc = Metacontroller(store, controllers, service_urls={HOOK_SERVICE: hooks.url},
                                 backoff_cap=2.0, keep_bodies=self.keep)
        self.mc.start()
        self.node_store = store
        if self.two_clusters:
            self.node_store = self.start_target(store)
            self.node_store.watch(self.node_side.record)  # bootstrap tokens go to the target's kube-system
        # No cloud node lifecycle controller: the Machines remove their Nodes, as MCM does (docs/nodes.md).
        # Jobs that mount the target kubeconfig act on the target, as their programs would through KUBECONFIG.
        self.workers = [NodeJoiner(self.node_store, sim.url, ready_delay=self.timing.node_ready, poll_interval=0.1,
                                   delete_gone=False),
                        JobRunner(store, delay=self.timing.drain, poll_interval=0.1,
                                  node_jobs_key_file=str(key_file),
                                  node_store=self.node_store if self.two_clusters else None)]
        if self.target_api is not None:
            self.workers.append(self.target_api)
        for worker in self.workers:
            worker.start()
        self.phases.append(("start simulator, hook server and emulator", time.monotonic() - started))
        self.note(f"  simulator {sim.url}   hook server {hooks.url}   ({time.monotonic() - started:.1f} s)")

    def start_target(self, control: Store) -> Store:
        """The target cluster: its own store and REST API, and the kubeconfig Secret for it in the control store."""
        import secrets

        from emulator.kubeapi import KubeApiServer
        from hooks.target.kubeconfig import KUBECONFIG_KEY, TARGET_LABEL, TARGET_LABEL_VALUE

        target = Store()
        self.target_token = secrets.token_urlsafe(24)
        self.target_api = KubeApiServer(target, tokens={self.target_token: "metal-machine-hooks-target"}).start()
        text = json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "target",
            "clusters": [{"name": "target", "cluster": {"server": self.target_api.url}}],
            "contexts": [{"name": "target", "context": {"cluster": "target", "user": "hooks"}}],
            "users": [{"name": "hooks", "user": {"token": self.target_token}}]})
        control.create({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                        "metadata": {"name": "target-kubeconfig", "namespace": NAMESPACE,
                                     "labels": {TARGET_LABEL: TARGET_LABEL_VALUE}},
                        "data": {KUBECONFIG_KEY: base64.b64encode(text.encode()).decode()}})
        self.note(f"  target cluster API {self.target_api.url}  (kubeconfig Secret {NAMESPACE}/target-kubeconfig "
                  "in the control cluster)")
        return target

    def stop(self) -> None:
        """Stop everything this demo started, newest first; safe to call twice (finally and atexit)."""
        if self._stopped:
            return
        self._stopped = True
        main = threading.current_thread() is threading.main_thread()
        # A second Ctrl-C must not cut the cleanup short and leave a server behind.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
        try:
            for worker in reversed(self.workers):
                with contextlib.suppress(Exception):
                    worker.stop()
            if self.mc is not None:
                with contextlib.suppress(Exception):
                    self.mc.stop()
            for child in reversed(self.children):
                child.stop()
            self.session.close()
        finally:
            if main:
                signal.signal(signal.SIGINT, previous)

    # ------------------------------------------------------------ observing

    def observe(self) -> view.Observation:
        assert self.store is not None
        state = self.sim_state()
        obs = view.Observation(
            machines=self.store.list(MACHINE_API, "Machine", NAMESPACE),
            machinesets=self.store.list(MACHINE_API, "MachineSet", NAMESPACE),
            deployments=self.store.list(MACHINE_API, "MachineDeployment", NAMESPACE),
            devices=state.get("devices") or [], deleted=state.get("deleted") or [],
            nodes=(self.node_store or self.store).list("v1", "Node"))
        self.peak_machines = max(self.peak_machines, len(obs.machines))
        return obs

    def sim_state(self) -> Obj:
        return self.session.get(self.sim_url + "/_sim/state", timeout=5).json()

    def run_step(self, index: int, total: int, title: str, action: Callable[[], None],
                 done: Callable[[view.Observation], bool]) -> None:
        self.display.step_started(index, total, title)
        started = time.monotonic()
        action()
        while True:
            obs = self.observe()
            elapsed = time.monotonic() - started
            self.display.frame(obs, f"[{index}/{total}] {title}", elapsed)
            if done(obs):
                break
            if elapsed > self.timing.step_timeout:
                raise StepTimeout(title, self.timing.step_timeout, obs)
            time.sleep(self.timing.refresh)
        self.phases.append((title, elapsed))
        self.display.step_finished(index, total, title, elapsed)

    # ------------------------------------------------------------ acting

    def apply_examples(self) -> None:
        assert self.store is not None
        resources = yaml.safe_load((EXAMPLES / "kustomization.yaml").read_text())["resources"]
        for name in resources:
            for doc in _docs(EXAMPLES / name):
                if doc.get("kind") == "Secret" and "userData" in (doc.get("stringData") or {}):
                    doc["stringData"]["userData"] += JOIN_LINE  # a Gardener-style join: MCM's token placeholder
                if doc.get("kind") == "MachineDeployment":
                    doc["spec"]["minReadySeconds"] = self.timing.min_ready
                self.store.apply(doc)

    def edit_deployment(self, change: Callable[[Obj], None]) -> None:
        assert self.store is not None
        for _ in range(20):
            deployment = self.store.get(MACHINE_API, "MachineDeployment", DEPLOYMENT, NAMESPACE)
            change(deployment)
            try:
                self.store.update(deployment)
                return
            except Conflict:
                continue
        raise RuntimeError(f"MachineDeployment {DEPLOYMENT} kept conflicting")

    def delete_all(self) -> None:
        assert self.store is not None
        self.store.delete(MACHINE_API, "Machine", MACHINE, NAMESPACE)
        self.store.delete(MACHINE_API, "MachineDeployment", DEPLOYMENT, NAMESPACE)

    def class_plans(self) -> dict[str, str]:
        docs = _docs(EXAMPLES / "machine-class.yaml")
        return {d["metadata"]["name"]: d["providerSpec"]["machineType"]
                for d in docs if d.get("kind") == "MachineClass"}

    def flow(self) -> None:
        plans = self.class_plans()

        def scale(n: int) -> Callable[[], None]:
            return lambda: self.edit_deployment(lambda d: d["spec"].__setitem__("replicas", n))

        def roll_out() -> None:
            self.edit_deployment(lambda d: d["spec"]["template"]["spec"]["class"].__setitem__("name", NEW_CLASS))

        steps: list[tuple[str, Callable[[], None], Callable[[view.Observation], bool]]] = [
            (f"apply kubernetes/examples/ (a Machine, a MachineDeployment x3, minReadySeconds {self.timing.min_ready})",
             self.apply_examples, lambda o: _ready_count(o, 3, None, plans)),
            (f"scale {DEPLOYMENT} to 5", scale(5), lambda o: _ready_count(o, 5, None, plans)),
            (f"roll out: template class eqx-mc -> {NEW_CLASS}", roll_out,
             lambda o: _ready_count(o, 5, NEW_CLASS, plans)),
            (f"scale {DEPLOYMENT} to 2", scale(2), lambda o: _ready_count(o, 2, NEW_CLASS, plans)),
        ]
        if self.two_clusters:
            steps.insert(1, ("read the Nodes from the target cluster through the kubeconfig Secret", self.read_target,
                             lambda o: True))
        if not self.keep:
            steps.append((f"delete Machine {MACHINE} and MachineDeployment {DEPLOYMENT}", self.delete_all, _all_gone))
        for index, (title, action, done) in enumerate(steps, 1):
            self.run_step(index, len(steps), title, action, done)

    def read_target(self) -> None:
        """Where things live: every Node in the target, none in the control cluster, each read as the hooks read it."""
        from hooks.target.api import TargetReader
        from hooks.target.kubeconfig import customize_rule, from_related

        assert self.store is not None and self.node_store is not None
        rule = customize_rule(NAMESPACE)
        related = {"Secret.v1": {f"{NAMESPACE}/{s['metadata']['name']}": s for s in
                                 self.store.list("v1", "Secret", NAMESPACE, rule["labelSelector"])}}
        config = from_related(related, NAMESPACE)
        assert config is not None
        reader = TargetReader(config)
        machines = self.store.list(MACHINE_API, "Machine", NAMESPACE)
        ready = 0
        for machine in machines:
            node = reader.get_node(str(((machine.get("metadata") or {}).get("labels") or {}).get("node") or ""),
                                   deadline=5.0) or {}
            ready += any(c.get("type") == "Ready" and c.get("status") == "True"
                         for c in (node.get("status") or {}).get("conditions") or [])
        self.note("\n".join([
            f"  Nodes in the control cluster: {len(self.store.list('v1', 'Node'))}; "
            f"in the target cluster: {len(self.node_store.list('v1', 'Node'))}",
            f"  {ready} of {len(machines)} Running Machines have a Ready Node read from {config.server} "
            f"(Secret {config.source})",
        ]))

    # ------------------------------------------------------------ reporting

    def summary(self, total: float) -> list[str]:
        calls = self.session.get(self.sim_url + "/_sim/calls", timeout=5).json()
        self.node_side.removed_by_jobs(log for worker in self.workers for log in getattr(worker, "logs", {}).values())
        lines = view.summary(state=self.sim_state(), calls=calls, events=list(self.mc.events),
                             peak_machines=self.peak_machines, phases=self.phases, total_seconds=total,
                             deleted_all=not self.keep, node_side=self.node_side)
        if self.target_api is not None:
            lines[1:1] = self.target_lines()
        return lines

    def target_lines(self) -> list[str]:
        """What the target cluster's API served: the hooks' Node reads (the stand-in Jobs act on its store)."""
        requests_ = self.target_api.requests()
        counts: dict[str, int] = {}
        for r in requests_:
            key = f"{r.verb} {r.resource}"
            counts[key] = counts.get(key, 0) + 1
        shown = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        return [f"  target cluster API: {len(requests_)} requests ({shown or 'none'}), "
                f"Nodes left in it: {len(self.node_store.list('v1', 'Node')) if self.node_store else 0}"]

    def note(self, text: str) -> None:
        out = self.out or sys.stdout
        out.write(text + "\n")
        out.flush()

    def keep_running(self) -> None:
        """Print how to reach each piece, then wait for Ctrl-C (or a child dying)."""
        sim, hooks = self.children
        token, project = self.token, self.project
        request_file = self.save_request()
        python = os.path.relpath(sys.executable, Path.cwd()) if sys.executable.startswith(str(REPO)) else sys.executable
        lines = [
            "", "Everything keeps running. Talk to it:",
            f"  Equinix Metal simulator  {sim.url}/metal/v1   (token {token}, project {project})",
            f"    curl -s -H 'X-Auth-Token: {token}' '{sim.url}/metal/v1/projects/{project}/devices?per_page=10'",
            f"    curl -s {sim.url}/_sim/state          # every device, for inspection",
            f"  Hook server (gunicorn)   {hooks.url}",
            f"    curl -s {hooks.url}/healthz; curl -s {hooks.url}/metrics | grep ^metal",
        ]
        if request_file:
            lines += [
                f"    a recorded Machine sync request: {request_file}",
                f"    curl -s -H 'Authorization: Bearer {self.hook_token}' -H 'Content-Type: application/json' "
                f"--data @{request_file} {hooks.url}/machine/sync",
                f"    METAL_API_URL={sim.url}/metal/v1 {python} -m hooks replay {request_file}",
            ]
        lines += [
            "  The cluster (Metacontroller emulator, Nodes, drain Jobs) runs inside this process.",
            f"  Logs: {self.workdir}/simulator.log, {self.workdir}/hooks.log",
            "Stop: Ctrl-C (shuts everything down cleanly).",
        ]
        self.note("\n".join(lines))
        while all(c.process.poll() is None for c in self.children):
            time.sleep(0.5)
        dead = [c for c in self.children if c.process.poll() is not None]
        raise StartError(f"{dead[0].name} exited with {dead[0].process.returncode}:\n{dead[0].tail()}")

    def save_request(self) -> str:
        """The latest Machine sync request the emulator sent, as a file for `python -m hooks replay`."""
        for event in reversed(list(self.mc.events)):
            request = event.get("request")
            if (event.get("controller") == "metal-machines" and event.get("hook") == "sync" and request
                    and (request.get("parent") or request.get("object") or {}).get("metadata", {}).get("name")
                    == MACHINE):
                path = self.workdir / "machine-sync-request.json"
                path.write_text(json.dumps(request, indent=2))
                return str(path)
        return ""

    # ------------------------------------------------------------ main

    def run(self) -> int:
        started = time.monotonic()
        atexit.register(self.stop)
        keep_logs = False
        try:
            self.start()
            self.flow()
            total = time.monotonic() - started
            self.note("")
            self.note("\n".join(self.summary(total)))
            if self.keep:
                self.keeping = True
                self.keep_running()
            return 0
        except StepTimeout as exc:
            self.note(f"\nFAILED: {exc}. What is stuck:")
            self.note("\n".join(view.stuck_report(exc.obs)))
            errors = [e for e in list(self.mc.events) if e.get("outcome") in ("error", "sync-error")
                      and "informer not synced" not in str(e.get("error"))]  # expected once per related kind
            if errors:
                self.note("Recent hook errors:")
                self.note("\n".join(f"  {e['controller']} {e['key']}: {e.get('error')}" for e in errors[-5:]))
            self.note(f"Logs: {self.workdir}")
            keep_logs = True
            return 1
        except StartError as exc:
            self.note(f"\nFAILED: {exc}\nLogs: {self.workdir}")
            keep_logs = True
            return 1
        except requests.RequestException as exc:
            self.note(f"\nFAILED: the simulator stopped answering ({exc})")
            for child in self.children:
                self.note(f"{child.name} (exit code {child.process.poll()}):\n{child.tail()}")
            self.note(f"Logs: {self.workdir}")
            keep_logs = True
            return 1
        except ApiError as exc:
            self.note(f"\nFAILED: the emulated API server refused a write: {exc}")
            keep_logs = True
            return 1
        except KeyboardInterrupt:
            self.note("\nstopping ...")
            return 0 if self.keeping else 130
        finally:
            self.stop()
            atexit.unregister(self.stop)
            if not keep_logs:
                shutil.rmtree(self.workdir, ignore_errors=True)


def _docs(path: Path) -> list[Obj]:
    return [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM and SIGHUP end the demo the way Ctrl-C does: through the cleanup in Demo.run."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulator.demo", description=__doc__.splitlines()[0],
                                     epilog="\n".join(__doc__.splitlines()[9:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true",
                        help="skip the deletion and leave everything running; prints how to reach it (Ctrl-C stops)")
    parser.add_argument("--fast", action="store_true", help="zero delays everywhere (what the tests run)")
    parser.add_argument("--step-timeout", type=float, default=None, metavar="S",
                        help="seconds a step may take before the demo gives up (default 60, 30 with --fast)")
    parser.add_argument("--two-clusters", action="store_true",
                        help="Machines in a control cluster, their Nodes in a target cluster (issue 17)")
    args = parser.parse_args(argv)
    timing = Timing.fast() if args.fast else Timing()
    if args.step_timeout is not None:
        timing = dataclasses.replace(timing, step_timeout=args.step_timeout)
    # A shell starting us in the background leaves SIGINT ignored; Ctrl-C / kill -INT must still stop the demo.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    return Demo(timing, keep=args.keep, two_clusters=args.two_clusters).run()


if __name__ == "__main__":
    sys.exit(main())
