"""Chaos convergence run (issue 7): a MachineDeployment through its whole life while everything around it misbehaves.

    python -m bench.chaos --machines N [--seed S] [--timeout SECONDS]

What runs: the Metal simulator (in this process, served over HTTP), the real hook server under gunicorn with
`gunicorn.conf.py` (a subprocess), the Metacontroller emulator with the controllers of `metacontroller/`, the Node
joiner and the drain Job runner. A MachineDeployment of the example classes goes through four phases: created with
N/2 replicas and scaled up to N, rolled to the second class (eqx-mc-v2), scaled down to N/4, deleted.

Faults, all from `--seed`:
- simulator: 10% of API calls answered 429 with `Retry-After: 1` (1 s, not the real API's minutes, or a run takes
  hours), 5% answered 500/502/503 (half of them with a load balancer's HTML page), 2% of connections dropped without
  an answer, 2% of creates succeed and then lose their answer (half dropped connection, half 503);
- cluster realism (what a real cluster does and the plain emulator does not): controllers read from informer caches
  0.15-0.45 s behind the store, per kind (`informer_lag=0.3`), dependents are garbage-collected 1 s after their
  owner, one level per pass (`gc_delay`), kubelets report Node status at `heartbeat_period` (300 s, the kubelet's
  default nodeStatusReportFrequency; 10 s up to 20 Machines, so that a short run sees several rounds):
  lastHeartbeatTime moves; and 10% of a decorator's labels/annotations writes that follow its status write conflict
  (`metadata_conflict_rate`);
- emulator: 10% of status writes answered with a Conflict (`conflict_rate=0.1`), and one Metacontroller restart
  (`mc.restart()`: queues, timers, backoff and customize cache lost) once a quarter of the Machines are gone
  in the deletion phase, while finalizers, drain Jobs and garbage collection are at work;
- hook server: restarted twice on the same port: halfway through the scale-up with SIGTERM (gunicorn finishes
  in-flight calls, as in a rolling update), and with SIGKILL once a quarter of the Machines are on the new class
  in the rollout (a crash: in-flight creates and deletes lose their answers).
The emulator's per-key backoff is capped at 2 s (`backoff_cap`; Metacontroller's is 1000 s), so a key that failed
during the hook server's downtime comes back within seconds instead of minutes.

Seeded before the run and required to survive it: a device in a second project (only a second token sees it) that
carries our managed tag and the demo cluster tag, an untagged device in our project, a device in our project
tagged as managed by another cluster, a device of a second installation with the same cluster tag text and
namespace name (only its installation tag differs), and a device of this installation in a namespace without classes.
A second namespace (`team-b`) has its own Secret, a class with the same project and cluster tag, and two Machines
that run through the whole scenario and are deleted with the MachineDeployment. The hook server runs with
`INSTALLATION_ID` set.

Invariants, checked by a monitor thread every `--poll` seconds from the simulator's state and the emulator's
event log, not only at the end:
- duplicates: a Machine (ownership tag `metal-machine-hooks:uid:<uid>`) with two live devices (any state but
  deprovisioning and deleted) is allowed only until the sync that finds it. Rule: the duplicate must be gone once
  two syncs or finalizes of that Machine have completed after it was first seen (the first may have started before
  the duplicate existed; the second started after it and must have removed it), and never live longer than
  DUPLICATE_LIMIT seconds. `duplicates_max` is the most live devices one Machine had at once (1 when no duplicate
  ever showed): the larger of the sampled figure and the exact one computed at the end from every device's
  creation and deletion times, which no sampling interval can miss.
- foreign deletions: every device seen deprovisioning or deleted must be ours: in our project, with the managed
  tag, a uid tag, the demo cluster tag and this installation's and one of its namespaces' tenant tags. Any other
  counts in `foreign_deleted`.
- wrong deletions: a device of ours may be deleted only when its Machine is being deleted or gone, or when the
  Machine has another live device (a duplicate); deleting the only device of a wanted Machine is a violation.
At the end: no MachineDeployment, MachineSet or Machine; `leaked` = devices of ours that are still live (not
deprovisioning, not deleted); `late_devices` = devices of ours created after their Machine's MachineSet or
MachineDeployment had begun deleting (or was gone): a deleting owner must create nothing; the three seeded devices
alive; no hook answer other than 200 (a 4xx or 5xx from our hooks to a well-formed Metacontroller request is a bug;
calls that failed because the server was down are counted apart); and neither the API token nor the userData (canary
values made for the run) anywhere in the hook server's log, the stored objects (statuses, annotations, labels: every
applied hook answer), the emulator's errors or /metrics.

Output: progress lines, then a fault breakdown, then as the LAST line:
    chaos: machines=N faults=K duplicates_max=D leaked=L foreign_deleted=F converged_s=S late_devices=V
K = injected faults: simulator answers that were faults (429, 5xx, dropped, lost create answers), injected status
and metadata conflicts and the three restarts. S = seconds from the MachineDeployment's creation until the final
state (every phase included). Exit status 0 only when the run converged within `--timeout`, leaked=0,
foreign_deleted=0, no invariant was violated, late_devices=0, the seeded devices survived, no hook answered an error
and no canary leaked.

With `--doc docs/reliability.md` (what `make chaos` passes) the figures replace the table between the
`<!-- chaos:begin -->` and `<!-- chaos:end -->` markers of that file.

Sizing knobs (environment): GUNICORN_WORKERS / GUNICORN_THREADS for the hook server (default 2 x 8, as deployed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
import yaml

from emulator.hookauth import seed_auth_secrets
from emulator.jobs import JobRunner
from emulator.metacontroller import Metacontroller, load_controllers
from emulator.metal import CREATE_ROUTE, MetalSimulator
from emulator.metal_faults import Faults, decide
from emulator.nodes import NodeJoiner
from emulator.store import Conflict, Store, WatchEvent
from hooks.equinix import tags, tenancy

REPO = Path(__file__).resolve().parent.parent
CRDS = REPO / "kubernetes" / "crds"
EXAMPLES = REPO / "kubernetes" / "examples"
CONTROLLERS = REPO / "metacontroller"
MACHINE_API = "machine.sapcloud.io/v1alpha1"
NAMESPACE = "default"
# A second team's namespace in the same cluster: its own Secret, a class with the same project and cluster tag, and
# Machines that live through the whole run (their devices must survive every scan of the default namespace's classes).
TEAM_B = "team-b"
TEAM_B_MACHINES = 2
# The hook server runs with INSTALLATION_ID set (the configured form of the installation id); a second installation
# shares the project and the cluster tag text.
INSTALLATION = "chaos-installation-1"
OTHER_INSTALLATION = "chaos-installation-2"
OUR_NAMESPACES = (NAMESPACE, TEAM_B)
DEPLOYMENT = "chaos"
OLD_CLASS, NEW_CLASS = "eqx-mc", "eqx-mc-v2"
CLUSTER_TAG = "kubernetes.io/cluster/demo: 1"
FOREIGN_PROJECT = "0c4f7a3e-9b1d-4e2a-8f6c-5d3b2a1e9f70"
FOREIGN_TOKEN = "chaos-foreign-token"
SERVICE = "metal-machine-hooks.metal-machine-hooks"
NOT_LIVE = ("deprovisioning", "deleted")
DUPLICATE_LIMIT = 30.0  # seconds a duplicate may live whatever the syncs say
SYNCS_TO_CLEAR_DUPLICATE = 2
FAULT_STATUSES = ("429", "500", "502", "503", "dropped")
DOC_BEGIN, DOC_END = "<!-- chaos:begin -->", "<!-- chaos:end -->"
Obj = dict[str, Any]


@dataclass(frozen=True)
class ChaosConfig:
    """One run's size, faults and timings. The fault rates are the issue's; the delays keep a small run fast."""

    machines: int = 200
    seed: int = 7
    rate_429: float = 0.10
    retry_after: float = 1.0
    rate_5xx: float = 0.05
    html_fraction: float = 0.5
    rate_drop: float = 0.02
    rate_lost_create: float = 0.02
    conflict_rate: float = 0.10
    metadata_conflict_rate: float = 0.10  # a decorator's labels/annotations write after its status write
    informer_lag: float = 0.3  # controllers read and are woken from a cache this far behind the store
    gc_delay: float = 1.0  # dependents are garbage-collected this long after their owner, per level
    heartbeat_period: float = 300.0  # kubelet status reports, nodeStatusReportFrequency default (lastHeartbeatTime)
    provision_seconds: float = 0.5
    deprovision_seconds: float = 0.5
    backoff_cap: float = 2.0
    timeout: float = 1800.0
    poll: float = 0.2
    node_poll: float = 0.25
    mc_workers: int = 5


# ---------------------------------------------------------------------------------------------- the simulator


@dataclass(frozen=True)
class DeviceView:
    """What the invariants need of a device; cheap to take for hundreds of devices several times a second."""

    id: str
    project_id: str
    hostname: str
    tags: tuple[str, ...]
    state: str
    metro: str
    plan: str
    created: float = 0.0  # simulator clock
    deleted_at: float | None = None  # when its deletion started (deprovisioning), simulator clock

    @property
    def owner(self) -> str | None:
        return tags.owner_uid(self.tags)


class ChaosSimulator(MetalSimulator):
    """The Metal simulator plus a light read of its devices.

    `devices()` renders every device as the API would (all includes): at a few hundred devices that costs a tenth
    of a second, too much for a monitor polling five times a second next to the emulator on a shared core.
    """

    def views(self) -> tuple[list[DeviceView], list[DeviceView]]:
        """(live devices, deleted devices) at this instant; live ones include those still deprovisioning."""
        with self._lock:
            now = self._reap()
            live = [self._view(d, self._state(d, now)[0]) for d in self._devices.values()]
            gone = [self._view(d, "deleted") for d in self._deleted]
        return live, gone

    @staticmethod
    def _view(device: Any, state: str) -> DeviceView:
        return DeviceView(device.id, device.project_id, device.hostname, tuple(device.tags), state, device.metro,
                          device.plan, device.created, device.deleted_at)


class ChaosNodeJoiner(NodeJoiner):
    """The Node joiner reading the in-process simulator's light view instead of rendering `/_sim/state`."""

    def __init__(self, store: Store, sim: ChaosSimulator, **kwargs: Any) -> None:
        super().__init__(store, "http://unused.invalid", **kwargs)
        self.sim = sim

    def devices(self) -> list[Obj]:
        live, _ = self.sim.views()
        return [{"id": d.id, "hostname": d.hostname, "state": d.state, "metro": d.metro, "plan": d.plan}
                for d in live]


# ---------------------------------------------------------------------------------------- the emulator


# ----------------------------------------------------------------------------------------- the hook server


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class HookServer:
    """gunicorn with gunicorn.conf.py, as the image runs it, on one fixed port so restarts keep the address."""

    def __init__(self, metal_api_url: str, workdir: Path, port: int | None = None, token: str = "") -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "gunicorn.log"
        dropped = ("PORT", "HOOK_AUTH_TOKEN", "TLS_CERT_FILE", "TLS_KEY_FILE", "METAL_DEVICE_CACHE_SECONDS")
        self.env = {k: v for k, v in os.environ.items() if k not in dropped}
        self.env.update({
            "BIND": f"127.0.0.1:{self.port}",
            "METAL_API_URL": metal_api_url,
            # The real token path: Metacontroller (the emulator) sends what the endpointConfigs Secret holds.
            "HOOK_AUTH_TOKEN": token,
            "GUNICORN_WORKERS": os.environ.get("GUNICORN_WORKERS", "2"),
            "GUNICORN_THREADS": os.environ.get("GUNICORN_THREADS", "8"),
            "GUNICORN_GRACEFUL_TIMEOUT": os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "10"),
            "GUNICORN_ACCESS_LOG": "false",
            "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
            "PROMETHEUS_MULTIPROC_DIR": str(workdir / "prometheus"),
            "PYTHONUNBUFFERED": "1",
            "INSTALLATION_ID": INSTALLATION,
        })
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 60.0) -> None:
        """Start gunicorn and wait until a worker answers /healthz."""
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts + 1} ---\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "hooks.app:create_app()"],
                cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn did not answer /healthz within {timeout} s:\n{self.log_tail()}")

    def stop(self, *, crash: bool = False) -> None:
        """SIGTERM (graceful, as Kubernetes stops a pod) or SIGKILL of the master (a crash; its workers notice
        their parent is gone within a second and exit, as they would when the container dies)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL if crash else signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self, *, crash: bool) -> None:
        self.stop(crash=crash)
        self.start()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


# ------------------------------------------------------------------------------------------- the monitor


def is_ours(device: DeviceView, project_id: str) -> bool:
    """A device the hooks of this cluster may delete: our project, our ownership tags, our cluster's tag and the
    tenant tags of this installation and one of its namespaces (hooks/equinix/tenancy.py)."""
    return (device.project_id == project_id and device.owner is not None and CLUSTER_TAG in device.tags
            and any(tenancy.in_tenant(device.tags, INSTALLATION, ns) for ns in OUR_NAMESPACES))


def overlaps(devices: list[DeviceView], project_id: str) -> tuple[int, float]:
    """Exact, from creation and deletion times: (most live devices any one Machine had at once, longest time one
    Machine had two or more). Sampling can miss a duplicate that lived a few milliseconds; this cannot."""
    by_owner: dict[str, list[tuple[float, int]]] = {}
    for device in devices:
        if device.project_id == project_id and device.owner:
            edges = by_owner.setdefault(device.owner, [])
            edges.append((device.created, 1))
            edges.append((device.deleted_at if device.deleted_at is not None else math.inf, -1))
    most, longest = 0, 0.0
    for edges in by_owner.values():
        live, since = 0, 0.0
        for moment, step in sorted(edges):  # at equal times a deletion (-1) comes before a creation
            if step > 0 and live == 1:
                since = moment
            if step < 0 and live == 2:
                longest = max(longest, moment - since)
            live += step
            most = max(most, live)
    return most, longest


@dataclass
class DuplicateEpisode:
    """A Machine seen with two or more live devices."""

    uid: str
    hostname: str
    first_seen: float  # wall clock, as the emulator's event log
    most: int
    last_seen: float = 0.0
    violation: str = ""


@dataclass
class MonitorReport:
    duplicates_max: int = 0
    episodes: list[DuplicateEpisode] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    foreign_deleted: dict[str, str] = field(default_factory=dict)  # device id -> what it was
    samples: int = 0


class Monitor:
    """Checks the invariants every `poll` seconds in a background thread (see the module docstring for the rules)."""

    def __init__(self, sim: ChaosSimulator, mc: Metacontroller, project_id: str, poll: float,
                 store: Store | None = None, clock: Callable[[], float] = time.time) -> None:
        self.sim = sim
        self.mc = mc
        self.store = store
        self.project_id = project_id
        self.poll = poll
        self.clock = clock
        self.report = MonitorReport()
        self._open: dict[str, DuplicateEpisode] = {}
        self._syncs: dict[str, list[float]] = {}  # "Machine ns/name" -> completion times of ok sync/finalize calls
        self._event_index = 0
        self._seen_deleted: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> Monitor:
        self._thread = threading.Thread(target=self._run, name="chaos-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
        self.check()

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            self.check()

    def _read_events(self) -> None:
        events = self.mc.events
        end = len(events)
        for event in events[self._event_index:end]:
            if (event.get("controller") == "metal-machines" and event.get("hook") in ("sync", "finalize")
                    and event.get("outcome") == "ok"):
                self._syncs.setdefault(str(event.get("key")), []).append(float(event["time"]))
        self._event_index = end

    def _check_deletion(self, device: DeviceView, per_owner: dict[str, list[DeviceView]]) -> None:
        """A device seen deprovisioning or deleted for the first time: it must be ours, and it must not be the only
        device of a Machine that is still wanted (the hooks delete a device only in finalize or as a duplicate)."""
        if not is_ours(device, self.project_id):
            self.report.foreign_deleted[device.id] = (
                f"{device.hostname} project={device.project_id} tags={list(device.tags)}")
            return
        machine = self.store.get_by_uid(device.owner or "") if self.store is not None else None
        if machine is not None and not machine["metadata"].get("deletionTimestamp") and not per_owner.get(
                device.owner or ""):
            self.report.violations.append(
                f"device {device.id} of machine {machine['metadata']['name']} was deleted while the Machine is "
                "not being deleted and has no other device")

    def check(self) -> None:
        """One sample of every invariant."""
        with self._lock:
            now = self.clock()
            live, gone = self.sim.views()
            self._read_events()
            report = self.report
            report.samples += 1
            per_owner: dict[str, list[DeviceView]] = {}
            for device in live:
                if device.state not in NOT_LIVE and device.owner and device.project_id == self.project_id:
                    per_owner.setdefault(device.owner, []).append(device)
            for device in [*live, *gone]:
                if device.state in NOT_LIVE and device.id not in self._seen_deleted:
                    self._seen_deleted.add(device.id)
                    self._check_deletion(device, per_owner)
            for uid, devices in per_owner.items():
                report.duplicates_max = max(report.duplicates_max, len(devices))
                if len(devices) < 2:
                    continue
                episode = self._open.get(uid)
                if episode is None:
                    episode = DuplicateEpisode(uid, devices[0].hostname, now, len(devices))
                    self._open[uid] = episode
                    report.episodes.append(episode)
                episode.most = max(episode.most, len(devices))
                episode.last_seen = now
                if not episode.violation:
                    key = f"Machine {NAMESPACE}/{episode.hostname}"
                    after = [t for t in self._syncs.get(key, []) if t > episode.first_seen]
                    if len(after) >= SYNCS_TO_CLEAR_DUPLICATE:
                        episode.violation = (f"machine {episode.hostname} still has {len(devices)} live devices "
                                             f"after {len(after)} completed syncs since it was first seen")
                    elif now - episode.first_seen > DUPLICATE_LIMIT:
                        episode.violation = (f"machine {episode.hostname} has had {len(devices)} live devices for "
                                             f"{now - episode.first_seen:.1f} s")
                    if episode.violation:
                        report.violations.append(episode.violation)
            for uid in [u for u in self._open if len(per_owner.get(u, ())) < 2]:
                del self._open[uid]


class OwnerLog:
    """Who owns which Machine, and since when each MachineSet and MachineDeployment has been deleting or gone.

    A store watcher (called right after each write, monotonic time, the simulator's clock too), so that a device
    created after its Machine's MachineSet or MachineDeployment started deleting can be told apart: with informer
    lag a deleting owner's controller may still create Machines from its stale view, and the garbage collector
    removes them only later; a device made for such a Machine is one a real cluster would pay for.
    """

    OWNER_KINDS = ("MachineSet", "MachineDeployment")

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.owner_of: dict[str, str] = {}  # Machine or MachineSet uid -> its controller's uid
        self.deleting_since: dict[str, float] = {}  # MachineSet / MachineDeployment uid -> first deleting or gone
        self._lock = threading.Lock()

    def see(self, event: WatchEvent) -> None:
        obj = event.object
        kind, meta = obj.get("kind"), obj.get("metadata") or {}
        if kind not in ("Machine", *self.OWNER_KINDS):
            return
        with self._lock:
            ref = next((r for r in meta.get("ownerReferences") or [] if r.get("controller")), None)
            if ref is not None:
                self.owner_of[meta["uid"]] = ref["uid"]
            if kind in self.OWNER_KINDS and (event.type == "DELETED" or meta.get("deletionTimestamp")):
                self.deleting_since.setdefault(meta["uid"], self.clock())

    def late_devices(self, devices: list[DeviceView], project_id: str) -> list[DeviceView]:
        """Our devices created after their Machine's MachineSet or MachineDeployment began deleting."""
        late = []
        with self._lock:
            for device in devices:
                if not is_ours(device, project_id) or not device.owner:
                    continue
                machine_set = self.owner_of.get(device.owner)
                owners = [machine_set, self.owner_of.get(machine_set or "")]
                since = [self.deleting_since[o] for o in owners if o and o in self.deleting_since]
                if since and device.created > min(since):
                    late.append(device)
        return late


# ------------------------------------------------------------------------------------------- the scenario


def _docs(path: Path) -> list[Obj]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _phase(machine: Obj) -> str:
    return ((machine.get("status") or {}).get("currentStatus") or {}).get("phase", "")


class Run:
    """Everything one chaos run starts, drives and tears down."""

    def __init__(self, config: ChaosConfig, out: Callable[[str], None] = print) -> None:
        self.config = config
        self.out = out
        self.started = time.monotonic()
        self.workdir = Path(tempfile.mkdtemp(prefix="chaos-"))
        # Canary credentials: any trace of them outside the Secret (logs, statuses, metrics, errors) is a leak.
        self.secret = yaml.safe_load((EXAMPLES / "secret.yaml").read_text())
        self.token = f"chaos-canary-token-{secrets.token_hex(8)}"
        self.user_data_canary = f"chaos-canary-userdata-{secrets.token_hex(8)}"
        self.secret["stringData"] = {"apiToken": self.token,
                                     "userData": f"#!/bin/sh\necho {self.user_data_canary} <<MACHINE_NAME>>\n"}
        classes = [d for d in _docs(EXAMPLES / "machine-class.yaml") if d.get("kind") == "MachineClass"]
        self.project = classes[0]["providerSpec"]["projectID"]
        self.sim = ChaosSimulator(
            {self.token: [self.project], FOREIGN_TOKEN: [FOREIGN_PROJECT]},
            provision_seconds=config.provision_seconds, deprovision_seconds=config.deprovision_seconds,
            capacity=max(100, 10 * config.machines), seed=config.seed,
        )
        self.sim_server = self.sim.serve()
        hook_token = secrets.token_urlsafe(32)
        self.hooks = HookServer(self.sim_server.url, self.workdir, token=hook_token)
        self.store = Store(gc_delay=config.gc_delay)
        self.store.load_yaml(sorted(p for p in CRDS.glob("*.yaml") if p.name != "kustomization.yaml"))
        controllers = load_controllers(CONTROLLERS)
        seed_auth_secrets(self.store, controllers, hook_token)
        self.mc = Metacontroller(
            self.store, controllers, service_urls={SERVICE: self.hooks.url},
            workers=config.mc_workers, backoff_cap=config.backoff_cap, conflict_rate=config.conflict_rate,
            seed=config.seed, informer_lag=config.informer_lag, metadata_conflict_rate=config.metadata_conflict_rate,
        )
        self.joiner = ChaosNodeJoiner(self.store, self.sim, poll_interval=config.node_poll,
                                      heartbeat_period=config.heartbeat_period)
        self.jobs = JobRunner(self.store, poll_interval=0.1)
        self.monitor = Monitor(self.sim, self.mc, self.project, config.poll, store=self.store)
        self.seeded: dict[str, str] = {}
        self.restarts: Counter[str] = Counter()
        self.phase_times: list[tuple[str, float]] = []
        self.failure = ""
        self.machine_events: Counter[str] = Counter()  # ADDED / DELETED Machines
        self.set_writes: list[tuple[float, str]] = []  # (time, what changed) of every MachineSet write
        self.metrics_text = ""
        self.owners = OwnerLog()
        self.store.watch(self._count_machines)
        self.store.watch(self.owners.see)

    def _count_machines(self, event: WatchEvent) -> None:
        if event.object.get("kind") == "Machine" and event.type in ("ADDED", "DELETED"):
            self.machine_events[event.type] += 1
        if event.object.get("kind") == "MachineSet" and event.type == "MODIFIED" and event.old is not None:
            new, old = event.object, event.old
            changed = sorted({k for k in {*new, *old} if k != "metadata" and new.get(k) != old.get(k)}
                             | {f"metadata.{k}" for k in {*new["metadata"], *old["metadata"]}
                                if k != "resourceVersion" and new["metadata"].get(k) != old["metadata"].get(k)})
            self.set_writes.append((time.time(), ",".join(changed) or "nothing"))

    # ------------------------------------------------------------------ helpers

    def say(self, text: str) -> None:
        self.out(f"chaos: [{time.monotonic() - self.started:7.1f}s] {text}")

    def say_stuck(self) -> None:
        """What a stalled phase looks like: the sets' specs and statuses and when their controllers last ran."""
        md = self.deployment() or {}
        status = md.get("status") or {}
        self.say(f"stuck: deployment generation={md.get('metadata', {}).get('generation')} status={json.dumps(status)}")
        for ms in self.store.list(MACHINE_API, "MachineSet", NAMESPACE):
            self.say(f"stuck: set {ms['metadata']['name']} generation={ms['metadata'].get('generation')} "
                     f"replicas={ms['spec'].get('replicas')} status={json.dumps(ms.get('status') or {})}")
        now = time.time()
        writes = Counter(what for when, what in list(self.set_writes) if now - when < 30)
        self.say(f"stuck: MachineSet writes in the last 30 s by what changed: {dict(writes)}")
        for controller in ("metal-machinedeployments", "metal-machinesets", "metal-machines"):
            calls = [e for e in self.mc.hook_calls(controller=controller)]
            last = max((float(e["time"]) for e in calls), default=0.0)
            recent = Counter(str(e["outcome"]) + (" " + str(e["error"])[:60] if e["outcome"] == "conflict-dropped"
                                                  else "") for e in list(self.mc.events)
                             if e["controller"] == controller and now - float(e["time"]) < 30)
            self.say(f"stuck: {controller}: {len(calls)} hook calls, last {now - last:.1f} s ago; queue "
                     f"{self.mc.runtime(controller).queue.pending_delays()}; last 30 s: {dict(recent)}")

    def machines(self) -> list[Obj]:
        return self.store.list(MACHINE_API, "Machine", NAMESPACE)

    def deployment(self) -> Obj | None:
        return self.store.try_get(MACHINE_API, "MachineDeployment", DEPLOYMENT, NAMESPACE)

    def our_live_devices(self) -> list[DeviceView]:
        live, _ = self.sim.views()
        return [d for d in live if is_ours(d, self.project)]

    def summary(self) -> str:
        machines = self.machines()
        phases = Counter(_phase(m) or "-" for m in machines if not m["metadata"].get("deletionTimestamp"))
        deleting = sum(1 for m in machines if m["metadata"].get("deletionTimestamp"))
        new = sum(1 for m in machines if m["spec"]["class"]["name"] == NEW_CLASS)
        devices = Counter(d.state for d in self.our_live_devices())
        shown = " ".join(f"{k}={v}" for k, v in sorted(phases.items()))
        states = " ".join(f"{k}={v}" for k, v in sorted(devices.items()))
        return (f"machines={len(machines)} ({shown}; deleting={deleting}; on {NEW_CLASS}={new}) "
                f"devices: {states or 'none'}")

    def rollout_status(self, replicas: int, class_name: str) -> bool:
        """The deployment reports `replicas` updated and available, and exactly those Machines exist."""
        md = self.deployment()
        if md is None:
            return False
        status = md.get("status") or {}
        machines = self.machines()
        return (status.get("observedGeneration") == md["metadata"].get("generation")
                and status.get("updatedReplicas") == replicas and status.get("availableReplicas") == replicas
                and len(machines) == replicas
                and all(m["spec"]["class"]["name"] == class_name and _phase(m) == "Running" for m in machines))

    def wait(self, name: str, done: Callable[[], bool], *, disruption: tuple[Callable[[], bool], str] | None = None,
             timeout: float) -> bool:
        """Poll `done` until true; fire the disruption once its trigger holds. False on timeout."""
        start = time.monotonic()
        last_report = start
        pending = disruption
        while True:
            if pending is not None and pending[0]():
                self.disrupt(pending[1])
                pending = None
            if done() and pending is None:
                self.phase_times.append((name, time.monotonic() - start))
                self.say(f"{name} done in {time.monotonic() - start:.1f} s: {self.summary()}")
                return True
            now = time.monotonic()
            if now - start > timeout:
                self.failure = f"{name} did not finish within {timeout:.0f} s"
                self.say(f"TIMEOUT: {self.failure}: {self.summary()}")
                self.say_stuck()
                return False
            if now - last_report >= 10:
                last_report = now
                self.say(f"{name}: {self.summary()}")
            time.sleep(0.25)

    def disrupt(self, what: str) -> None:
        self.restarts[what] += 1
        started = time.monotonic()
        if what == "hook-sigterm":
            self.hooks.restart(crash=False)
        elif what == "hook-sigkill":
            self.hooks.restart(crash=True)
        elif what == "emulator":
            self.mc.restart()
        self.say(f"restarted {what} ({time.monotonic() - started:.1f} s): {self.summary()}")

    # ------------------------------------------------------------------ phases

    def seed_devices(self) -> None:
        """The devices that are not ours to delete (each with its own stranger's uid: one Machine per device)."""
        stranger = f"{tags.UID_TAG_PREFIX}{uuid.uuid5(uuid.NAMESPACE_URL, 'chaos/stranger')}"
        seeds = {
            "foreign-project": self.sim.add_device(
                FOREIGN_PROJECT, hostname="foreign-project-device", metro="ny", plan="t1.small.x86",
                tags=[tags.MANAGED_TAG, stranger, CLUSTER_TAG], state="active"),
            "untagged": self.sim.add_device(self.project, hostname="untagged-device", metro="ny",
                                            plan="t1.small.x86", state="active"),
            "other-cluster": self.sim.add_device(
                self.project, hostname="other-cluster-device", metro="ny", plan="t1.small.x86",
                tags=[tags.MANAGED_TAG, stranger, "kubernetes.io/cluster/other: 1"], state="active"),
            # Same project, same cluster tag text, same namespace name: only the installation tag tells it apart.
            "other-installation": self.sim.add_device(
                self.project, hostname="other-installation-device", metro="ny", plan="t1.small.x86",
                tags=[tags.MANAGED_TAG, f"{stranger}-2", CLUSTER_TAG,
                      *tenancy.tenant_tags(OTHER_INSTALLATION, NAMESPACE)],
                state="active"),
            # This installation, a namespace without classes: no class of ours may collect it.
            "other-namespace": self.sim.add_device(
                self.project, hostname="other-namespace-device", metro="ny", plan="t1.small.x86",
                tags=[tags.MANAGED_TAG, f"{stranger}-3", CLUSTER_TAG, *tenancy.tenant_tags(INSTALLATION, "team-c")],
                state="active"),
        }
        self.seeded = {name: device["id"] for name, device in seeds.items()}

    def start(self) -> None:
        self.seed_devices()
        cfg = self.config
        # Before any API request, so that request numbers (hence every fault) follow from the seed alone.
        self.sim.set_faults(seed=cfg.seed, rate_429=cfg.rate_429, retry_after=cfg.retry_after, rate_5xx=cfg.rate_5xx,
                            html_fraction=cfg.html_fraction, rate_drop=cfg.rate_drop,
                            rate_lost_create=cfg.rate_lost_create)
        self.hooks.start()
        self.store.create(self.secret)
        self.store.load_yaml([EXAMPLES / "machine-class.yaml"])
        self.start_team_b()
        self.mc.start()
        self.joiner.start()
        self.jobs.start()
        self.monitor.start()
        self.say(f"started: simulator {self.sim_server.url}, hook server {self.hooks.url} "
                 f"(gunicorn {self.hooks.env['GUNICORN_WORKERS']}x{self.hooks.env['GUNICORN_THREADS']}), "
                 f"faults {self.sim.faults}, conflict_rate={cfg.conflict_rate}, backoff_cap={cfg.backoff_cap}s, "
                 f"informer_lag={cfg.informer_lag}s, gc_delay={cfg.gc_delay}s, "
                 f"heartbeat_period={cfg.heartbeat_period}s, metadata_conflict_rate={cfg.metadata_conflict_rate}")

    def start_team_b(self) -> None:
        """The second namespace: its Secret, a class like eqx-mc (same project, same cluster tag) and Machines."""
        self.store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": TEAM_B}})
        secret = json.loads(json.dumps(self.secret))
        secret["metadata"]["namespace"] = TEAM_B
        self.store.create(secret)
        machine_class = next(d for d in _docs(EXAMPLES / "machine-class.yaml")
                             if d.get("kind") == "MachineClass" and d["metadata"]["name"] == OLD_CLASS)
        machine_class["metadata"]["namespace"] = TEAM_B
        machine_class["secretRef"]["namespace"] = TEAM_B
        self.store.create(machine_class)
        for i in range(TEAM_B_MACHINES):
            self.store.create({"apiVersion": MACHINE_API, "kind": "Machine",
                               "metadata": {"name": f"team-b-{i}", "namespace": TEAM_B},
                               "spec": {"class": {"kind": "MachineClass", "name": OLD_CLASS}}})

    def team_b_machines(self) -> list[Obj]:
        return self.store.list(MACHINE_API, "Machine", TEAM_B)

    def scenario(self) -> float | None:
        """The four phases; seconds from the deployment's creation to the final state, or None if not reached."""
        n = self.config.machines
        half, quarter = max(1, n // 2), max(1, n // 4)
        surge = max(1, n // 4)
        budget = self.config.timeout
        begin = time.monotonic()

        def left() -> float:
            return max(1.0, budget - (time.monotonic() - begin))

        deployment = yaml.safe_load((EXAMPLES / "machine-deployment.yaml").read_text())
        deployment["metadata"]["name"] = DEPLOYMENT
        spec = deployment["spec"]
        spec.update(replicas=half, minReadySeconds=0)
        spec["strategy"]["rollingUpdate"] = {"maxSurge": surge, "maxUnavailable": surge}
        self.store.create(deployment)
        self.say(f"created MachineDeployment {DEPLOYMENT} with {half} replicas of {OLD_CLASS}")
        ok = self.wait("create", lambda: self.rollout_status(half, OLD_CLASS), timeout=left())

        if ok:
            self.edit(lambda md: md["spec"].update(replicas=n))
            self.say(f"scaled up to {n}")
            ok = self.wait("scale-up", lambda: self.rollout_status(n, OLD_CLASS), timeout=left(),
                           disruption=(lambda: len(self.machines()) >= half + max(1, n // 4), "hook-sigterm"))
        if ok:
            self.edit(lambda md: md["spec"]["template"]["spec"]["class"].update(name=NEW_CLASS))
            self.say(f"rolling out {NEW_CLASS}")

            def quarter_new() -> bool:
                return sum(1 for m in self.machines() if m["spec"]["class"]["name"] == NEW_CLASS) >= quarter

            ok = self.wait("rollout", lambda: self.rollout_status(n, NEW_CLASS), timeout=left(),
                           disruption=(quarter_new, "hook-sigkill"))
        if ok:
            self.edit(lambda md: md["spec"].update(replicas=quarter))
            self.say(f"scaled down to {quarter}")
            ok = self.wait("scale-down", lambda: self.rollout_status(quarter, NEW_CLASS), timeout=left())

        if ok:
            ok = self.wait("team-b", lambda: len(self.team_b_machines()) == TEAM_B_MACHINES and all(
                _phase(m) == "Running" for m in self.team_b_machines()), timeout=left())
        # The deletion runs whatever happened before, so that a failed run still shows what it leaves behind.
        for machine in self.team_b_machines():
            self.store.delete(MACHINE_API, "Machine", machine["metadata"]["name"], TEAM_B)
        self.store.delete(MACHINE_API, "MachineDeployment", DEPLOYMENT, NAMESPACE)
        self.say("deleted the MachineDeployment")
        count = len(self.machines())
        target = count - max(1, count // 4)
        deleted = self.wait("delete", self.clean, timeout=left() if ok else max(120.0, left()),
                            disruption=(lambda: len(self.machines()) <= target, "emulator") if ok else None)
        if ok and deleted:
            return time.monotonic() - begin
        return None

    def edit(self, change: Callable[[Obj], None]) -> None:
        """Read-modify-write of the deployment, retried on conflicts (the hooks write its status meanwhile)."""
        for _ in range(50):
            md = self.deployment()
            assert md is not None, "the MachineDeployment is gone"
            change(md)
            try:
                self.store.update(md)
                return
            except Conflict:
                time.sleep(0.05)
        raise RuntimeError("could not update the MachineDeployment: conflicts every time")

    def clean(self) -> bool:
        return (self.deployment() is None and not self.store.list(MACHINE_API, "MachineSet", NAMESPACE)
                and not self.machines() and not self.team_b_machines() and not self.our_live_devices())

    # ------------------------------------------------------------------ results

    def fault_counts(self) -> dict[str, int]:
        with self.sim._lock:
            responses = dict(self.sim.responses)
        counts: Counter[str] = Counter()
        for key, value in responses.items():
            status = key.rsplit(" ", 1)[-1]
            if status in FAULT_STATUSES:
                counts["5xx" if status.startswith("5") else status] += value
        _, gone = self.sim.views()
        live, _ = self.sim.views()
        created = sum(1 for d in [*live, *gone] if is_ours(d, self.project))
        answered = sum(v for k, v in responses.items() if k == f"{CREATE_ROUTE} 201")
        counts["lost_create"] = max(0, created - answered)
        counts["conflicts"] = self.mc.injected_conflicts
        counts["metadata_conflicts"] = self.mc.injected_metadata_conflicts
        counts["hook_restarts"] = self.restarts["hook-sigterm"] + self.restarts["hook-sigkill"]
        counts["emulator_restarts"] = self.restarts["emulator"]
        return dict(counts)

    def injected(self) -> Counter[str]:
        """Every request's fault decision again, from the seed (faults were set once, before the first request)."""
        faults = Faults().updated(**self.sim.faults)
        with self.sim._lock:
            requests_made = sum(self.sim.calls.values())
        kinds: Counter[str] = Counter()
        for number in range(requests_made):
            decision = decide(faults, self.sim.seed, number, "GET", "", "")
            if decision.before:
                kinds[decision.before] += 1
                kinds["html"] += decision.before == "5xx" and decision.html
        kinds["requests"] = requests_made
        return kinds

    def hook_outcomes(self) -> Counter[str]:
        """Hook calls by hook, failed calls (server down or killed), and answers other than 200 by status class."""
        outcomes: Counter[str] = Counter()
        for event in list(self.mc.events):
            hook, outcome, error = event.get("hook"), event.get("outcome"), str(event.get("error") or "")
            if hook is None:
                continue
            outcomes[hook] += 1
            found = re.search(r"unsupported status code: (\d)\d\d", error)
            if found:
                outcomes[f"http_{found[1]}xx"] += 1
            elif outcome == "error":
                outcomes["failed"] += 1
        return outcomes

    def canary_hits(self) -> dict[str, int]:
        """Where the token or the userData canary shows up outside the Secret."""
        objects = [o for o in self.store.snapshot() if o.get("kind") != "Secret"]
        errors = [str(e.get("error") or "") for e in list(self.mc.events)]
        places = {"logs": self.hooks.log_text(), "objects": json.dumps(objects), "errors": "\n".join(errors),
                  "metrics": self.metrics_text}
        return {place: text.count(self.token) + text.count(self.user_data_canary) for place, text in places.items()}

    def stop(self) -> None:
        try:
            self.metrics_text = requests.get(self.hooks.url + "/metrics", timeout=5).text if self.hooks.proc else ""
        except requests.RequestException:
            self.metrics_text = ""
        for step in (self.monitor.stop, self.jobs.stop, self.joiner.stop, self.mc.stop, self.hooks.stop,
                     self.sim_server.shutdown):
            try:
                step()
            except Exception as exc:  # teardown goes on: every process we started must end
                self.out(f"chaos: teardown {step.__qualname__} failed: {exc!r}")


def run(config: ChaosConfig, out: Callable[[str], None] = print, doc: Path | None = None) -> int:
    """One chaos run; prints progress and the machine-readable line last, returns the exit status.

    With `doc`, the table between DOC_BEGIN and DOC_END in that file is replaced with this run's figures.
    """
    chaos = Run(config, out)
    converged: float | None = None
    try:
        chaos.start()
        converged = chaos.scenario()
    except Exception as exc:
        chaos.failure = f"{type(exc).__name__}: {exc}"
        chaos.say(f"ERROR {chaos.failure}")
    finally:
        chaos.stop()
    report = chaos.monitor.report
    live, gone = chaos.sim.views()
    exact_most, exact_longest = overlaps([*live, *gone], chaos.project)
    duplicates_max = max(report.duplicates_max, exact_most)
    if exact_longest > DUPLICATE_LIMIT:
        report.violations.append(
            f"a Machine had two live devices for {exact_longest:.1f} s (limit {DUPLICATE_LIMIT:.0f} s)")
    leaked = [d for d in live if is_ours(d, chaos.project) and d.state not in NOT_LIVE]
    late = chaos.owners.late_devices([*live, *gone], chaos.project)
    alive = {d.id for d in live if d.state not in NOT_LIVE}
    lost_seeds = [name for name, device_id in chaos.seeded.items() if device_id not in alive]
    counts = chaos.fault_counts()
    faults = sum(counts.values())
    injected = chaos.injected()
    hooks = chaos.hook_outcomes()
    canaries = chaos.canary_hits()
    bad_answers = hooks["http_5xx"] + hooks["http_4xx"]
    if chaos.hooks.starts and chaos.failure:
        out("chaos: hook server log tail:\n" + chaos.hooks.log_tail())
    out("chaos: phases " + " ".join(f"{name}={seconds:.1f}s" for name, seconds in chaos.phase_times))
    out(f"chaos: machines created={chaos.machine_events['ADDED']} deleted={chaos.machine_events['DELETED']} "
        f"hook calls: sync={hooks['sync']} finalize={hooks['finalize']} customize={hooks['customize']} "
        f"failed={hooks['failed']} http_5xx={hooks['http_5xx']} http_4xx={hooks['http_4xx']}")
    out(f"chaos: api requests={injected['requests']} html_5xx={injected['html']} "
        f"node heartbeats={chaos.joiner.heartbeats}")
    out("chaos: faults " + " ".join(f"{k}={v}" for k, v in sorted(counts.items())) + f" total={faults}")
    longest = max((e.last_seen - e.first_seen for e in report.episodes), default=0.0)
    out(f"chaos: duplicates episodes={len(report.episodes)} longest_s={longest:.1f} exact_max={exact_most} "
        f"exact_longest_s={exact_longest:.1f} violations={len(report.violations)} samples={report.samples}")
    out("chaos: secret canary hits " + " ".join(f"{k}={v}" for k, v in canaries.items()))
    for violation in report.violations:
        out(f"chaos: VIOLATION {violation}")
    for device_id, what in report.foreign_deleted.items():
        out(f"chaos: FOREIGN DELETION {device_id} {what}")
    for device in leaked:
        out(f"chaos: LEAKED {device.id} {device.hostname} {device.state}")
    for device in late:
        out(f"chaos: DEVICE FOR A DELETING OWNER {device.id} {device.hostname} {device.state}")
    out(f"chaos: seeded devices alive={len(chaos.seeded) - len(lost_seeds)}/{len(chaos.seeded)}"
        + (f" lost={','.join(lost_seeds)}" if lost_seeds else ""))
    ok = (converged is not None and not chaos.failure and not leaked and not report.foreign_deleted and not late
          and not report.violations and not lost_seeds and not bad_answers and not any(canaries.values()))
    out(f"chaos: result {'PASS' if ok else 'FAIL'}" + (f" ({chaos.failure})" if chaos.failure else ""))
    if ok:
        shutil.rmtree(chaos.workdir, ignore_errors=True)
    else:
        out(f"chaos: hook server log kept in {chaos.hooks.log_path}")
    seconds = converged if converged is not None else time.monotonic() - chaos.started
    if doc is not None:
        rows = [
            ("date (UTC)", datetime.now(UTC).strftime("%Y-%m-%d %H:%M")),
            ("duration", f"{math.ceil(seconds)} s to converge "
                         f"({', '.join(f'{n} {t:.0f} s' for n, t in chaos.phase_times)}); "
                         f"`python -m bench.chaos --machines {config.machines} --seed {config.seed}`"),
            ("Machines created / deleted", f"{chaos.machine_events['ADDED']} / {chaos.machine_events['DELETED']}"),
            ("hook calls (sync / finalize)", f"{hooks['sync']} / {hooks['finalize']}"),
            ("API requests / faults injected (429, 5xx, HTML 5xx, 403 rate limit, dropped, lost creates)",
             f"{injected['requests']} / {counts.get('429', 0)}, {counts.get('5xx', 0)}, {injected['html']}, "
             f"{injected['403']}, {counts.get('dropped', 0)}, {counts.get('lost_create', 0)}; plus "
             f"{counts['conflicts']} status conflicts"),
            ("hook server restarts / dropped hook answers",
             f"{counts['hook_restarts']} (SIGTERM, SIGKILL) + {counts['emulator_restarts']} emulator restart / "
             f"{hooks['failed']} hook calls failed"),
            ("max live devices for one Machine (must be 1)", str(duplicates_max)),
            ("devices left after deletion (must be 0)", str(len(leaked))),
            ("devices created for Machines whose MachineSet or MachineDeployment was being deleted (must be 0)",
             str(len(late))),
            ("foreign devices deleted (must be 0)",
             f"{len(report.foreign_deleted)} (seeded devices alive: {len(chaos.seeded) - len(lost_seeds)}/"
             f"{len(chaos.seeded)})"),
            ("secret canary hits in logs, answers, statuses, metrics (must be 0)", str(sum(canaries.values()))),
            ("hook answers with HTTP 500 (must be 0)", str(hooks["http_5xx"])),
            ("result", f"{'PASS' if ok else 'FAIL'}: machines={config.machines} faults={faults} "
                       f"duplicates_max={duplicates_max} leaked={len(leaked)} "
                       f"foreign_deleted={len(report.foreign_deleted)} converged_s={math.ceil(seconds)} "
                       f"late_devices={len(late)}"),
        ]
        write_doc_table(doc, rows)
        out(f"chaos: figures written to {doc}")
    out(f"chaos: machines={config.machines} faults={faults} duplicates_max={duplicates_max} "
        f"leaked={len(leaked)} foreign_deleted={len(report.foreign_deleted)} converged_s={math.ceil(seconds)} "
        f"late_devices={len(late)}")
    return 0 if ok else 1


def write_doc_table(path: Path, rows: list[tuple[str, str]]) -> None:
    """Replace the table between the chaos markers of `path`; a file without both markers is left alone."""
    text = path.read_text()
    begin, end = text.find(DOC_BEGIN), text.find(DOC_END)
    if begin < 0 or end < begin:
        raise ValueError(f"{path} has no {DOC_BEGIN} ... {DOC_END} section")
    table = "\n".join(["| figure | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])
    path.write_text(text[:begin + len(DOC_BEGIN)] + "\n" + table + "\n" + text[end:])


LAST_LINE = re.compile(r"^chaos: machines=(\d+) faults=(\d+) duplicates_max=(\d+) leaked=(\d+) "
                       r"foreign_deleted=(\d+) converged_s=(\d+) late_devices=(\d+)$")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--machines", type=int, default=200, help="peak replicas of the MachineDeployment")
    parser.add_argument("--seed", type=int, default=ChaosConfig.seed, help="seed of every injected fault")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds the whole scenario may take (default 120 + 6 s per machine)")
    parser.add_argument("--provision-seconds", type=float, default=None,
                        help="simulated provisioning and deprovisioning time (default 0.1 up to 20 machines, "
                             "else 0.5)")
    parser.add_argument("--poll", type=float, default=None, help="invariant monitor interval (default 0.15-0.25)")
    parser.add_argument("--informer-lag", type=float, default=ChaosConfig.informer_lag,
                        help=f"seconds the controllers' informer caches trail the store, 0.5-1.5x per kind (default "
                             f"{ChaosConfig.informer_lag}; 0 = read the live store)")
    parser.add_argument("--doc", type=Path, default=None,
                        help=f"write this run's figures into the table between {DOC_BEGIN} and {DOC_END} of this "
                             "file (make chaos: docs/reliability.md)")
    args = parser.parse_args(argv)
    if args.machines < 2:
        parser.error("--machines must be at least 2")
    small = args.machines <= 20
    delay = args.provision_seconds if args.provision_seconds is not None else (0.1 if small else 0.5)
    config = ChaosConfig(
        machines=args.machines, seed=args.seed, provision_seconds=delay, deprovision_seconds=delay,
        timeout=args.timeout if args.timeout is not None else 120.0 + 6.0 * args.machines,
        poll=args.poll if args.poll is not None else (0.15 if small else 0.25),
        node_poll=0.1 if small else 0.5,
        heartbeat_period=10.0 if small else 300.0, informer_lag=args.informer_lag,
    )
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run(config, lambda line: print(line, flush=True), doc=args.doc)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
