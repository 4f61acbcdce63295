"""End to end, the scenarios users check first: our real hooks under the Metacontroller emulator, against the
Metal simulator with zero delays, Nodes joining and drain Jobs completing on their own.

- MCM's own integration flow for a MachineDeployment: 0 replicas still make one MachineSet; 1 replica reports
  exactly MCM's two conditions; 6 give six Running Machines with six Ready Nodes; back to 2; a new class with 4
  replicas replaces every device; deleting the deployment leaves nothing behind, in the cluster or at Metal.
- Orphan collection by the MachineClass controller: a device of ours, of this cluster, old enough and owned by no
  Machine is deleted; a foreign device, another cluster's and a fresh one are not.
- Drain order on scale-down: the victim's Node is cordoned, its drain Job succeeds, then its device is deleted,
  then the Machine goes (with MCM's lastOperation texts on the way); the surviving Machine is left alone.
- The MCM scenario and the drain order hold in both topologies: one cluster, and two (Machines in the control
  cluster, Nodes in a target cluster named by a kubeconfig Secret in the Machines' namespace).
- Secret hygiene: a canary API token and canary userData never show in hook logs, hook answers, stored objects or
  metrics, while the device really carries the userData.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from emulator.metacontroller import load_controllers
from emulator.metal import MetalSimulator
from emulator.metal_http import SimResponse, SimulatorServer
from emulator.store import Store, WatchEvent
from tests.emulator_support import RealCluster, real_cluster

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "kubernetes" / "examples"
CONTROLLERS = REPO / "metacontroller"
MACHINE_API = "machine.sapcloud.io/v1alpha1"
NS = "default"
DEPLOYMENT = "eqx-test-machine-deployment"
MANAGED = "metal-machine-hooks:managed"
Obj = dict[str, Any]

NEEDED = [EXAMPLES / "secret.yaml", EXAMPLES / "machine-class.yaml", EXAMPLES / "machine.yaml",
          EXAMPLES / "machine-deployment.yaml", *(CONTROLLERS / f"{n}.yaml" for n in (
              "machines", "machinesets", "machinedeployments", "machineclasses"))]
pytestmark = [pytest.mark.e2e, pytest.mark.slow,
              pytest.mark.skipif(not all(p.exists() for p in NEEDED), reason="examples or controllers missing")]


def _docs(path: Path) -> list[Obj]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _example_class(name: str = "eqx-mc") -> Obj:
    return next(d for d in _docs(EXAMPLES / "machine-class.yaml") if d["metadata"]["name"] == name)


def _project() -> str:
    return str(_example_class()["providerSpec"]["projectID"])


def _cluster_tag() -> str:
    return next(t for t in _example_class()["providerSpec"]["tags"] if "kubernetes.io/cluster/" in t)


class Metal:
    """A simulator served through a recorder: every API request with the monotonic times around its handling."""

    def __init__(self, sim: MetalSimulator) -> None:
        self.sim = sim
        self.calls: list[tuple[float, float, str, str]] = []  # (before, after, method, path)
        self.server = SimulatorServer(self._handle).start()

    def _handle(self, method: str, raw_path: str, headers: Any, body: bytes) -> SimResponse:
        before = time.monotonic()
        response = self.sim.handle(method, raw_path, headers, body)
        self.calls.append((before, time.monotonic(), method, raw_path))
        return response

    def deletes(self) -> list[tuple[float, float, str]]:
        """DELETE requests: (time before, time after, path)."""
        return [(b, a, p) for b, a, m, p in list(self.calls) if m == "DELETE"]

    def deleted_ids(self) -> list[str]:
        return [p.split("?")[0].rsplit("/", 1)[-1] for _, _, p in self.deletes()]


@pytest.fixture
def metal_factory() -> Iterator[Callable[..., Metal]]:
    """Simulators (zero delays unless told) whose token, by default the example Secret's, sees the example project."""
    started: list[Metal] = []

    def make(token: str | None = None, **kwargs: Any) -> Metal:
        token = token or yaml.safe_load((EXAMPLES / "secret.yaml").read_text())["stringData"]["apiToken"]
        metal = Metal(MetalSimulator({token: [_project()]}, **kwargs))
        started.append(metal)
        return metal

    yield make
    for metal in started:
        metal.server.shutdown()


def _cluster(metal: Metal, **kwargs: Any) -> AbstractContextManager[RealCluster]:
    return real_cluster(metal.server.url, metal.server.base_url, **kwargs)


def _machines(store: Store) -> list[Obj]:
    return store.list(MACHINE_API, "Machine", NS)


def _phase(machine: Obj) -> str:
    return str(((machine.get("status") or {}).get("currentStatus") or {}).get("phase") or "")


def _ready_nodes(store: Store) -> list[str]:
    return sorted(n["metadata"]["name"] for n in store.list("v1", "Node")
                  if any(c.get("type") == "Ready" and c.get("status") == "True"
                         for c in (n.get("status") or {}).get("conditions") or []))


def _deployment(store: Store) -> Obj:
    return store.get(MACHINE_API, "MachineDeployment", DEPLOYMENT, NS)


def _md_status(store: Store) -> Obj:
    return _deployment(store).get("status") or {}


def _edit_deployment(store: Store, **spec: Any) -> None:
    md = _deployment(store)
    for key, value in spec.items():
        if key == "class_name":
            md["spec"]["template"]["spec"]["class"]["name"] = value
        else:
            md["spec"][key] = value
    store.update(md)


def _example_deployment(replicas: int, min_ready: int = 1) -> Obj:
    doc = yaml.safe_load((EXAMPLES / "machine-deployment.yaml").read_text())
    doc["spec"]["replicas"] = replicas
    doc["spec"]["minReadySeconds"] = min_ready  # the example's 10 s, shortened unless a test asks for MCM's own
    return doc


# ------------------------------------------------------------------------------------------------ MCM integration


TOPOLOGIES = pytest.mark.parametrize("two_clusters", [False, True], ids=["one-cluster", "two-clusters"])


@TOPOLOGIES
def test_machine_deployment_lifecycle_as_in_mcm_integration_tests(metal_factory: Callable[..., Metal],
                                                                  two_clusters: bool) -> None:
    """MCM's integration scenario with its `minReadySeconds: 500`: it converges within the waits only because a
    MachineSet counts a Running Machine available at once (MCM's isMachineAvailable), as MCM's own test relies on.
    In both topologies: with two clusters, the Ready Nodes are the target cluster's."""
    metal = metal_factory()
    sim = metal.sim
    with _cluster(metal, two_clusters=two_clusters) as cluster:
        store, mc, nodes = cluster.store, cluster.mc, cluster.node_store
        store.load_yaml([EXAMPLES / "secret.yaml", EXAMPLES / "machine-class.yaml"])
        store.create(_example_deployment(0, min_ready=500))

        sets = mc.wait_for(lambda s: s.list(MACHINE_API, "MachineSet", NS), timeout=60,
                           message="a MachineSet for a deployment of 0 replicas")
        mc.wait_idle(timeout=60)
        assert len(store.list(MACHINE_API, "MachineSet", NS)) == 1, sets
        assert _machines(store) == [] and sim.devices() == []

        _edit_deployment(store, replicas=1)
        two = {"Available": ("True", "MinimumReplicasAvailable"), "Progressing": ("True", "NewMachineSetAvailable")}

        def conditions(s: Store) -> list[tuple[str, str, str]]:
            return sorted((c["type"], c["status"], c.get("reason", "")) for c in _md_status(s).get("conditions") or [])

        mc.wait_for(lambda s: _md_status(s).get("availableReplicas") == 1
                    and conditions(s) == sorted((k, *v) for k, v in two.items()),
                    timeout=60, message=f"1 available replica and exactly the conditions {two}")

        _edit_deployment(store, replicas=6)

        def running(s: Store) -> list[str]:
            return sorted(m["metadata"]["name"] for m in _machines(s) if _phase(m) == "Running")

        mc.wait_for(lambda s: len(running(s)) == 6 and len(_ready_nodes(nodes)) == 6, timeout=60,
                    message="6 Running Machines and 6 Ready Nodes")
        named = {m["metadata"]["labels"]["node"] for m in _machines(store)}
        assert named == set(_ready_nodes(nodes)) and len(sim.devices()) == 6
        assert nodes is store or store.list("v1", "Node") == []
        mc.wait_for(lambda s: _md_status(s).get("availableReplicas") == 6, timeout=60, message="6 available")

        _edit_deployment(store, replicas=2)
        mc.wait_for(lambda s: len(_machines(s)) == 2 and len(sim.devices()) == 2
                    and _md_status(s).get("replicas") == 2 and _md_status(s).get("availableReplicas") == 2,
                    timeout=60, message="scaled down to 2 Machines and 2 devices")

        second_plan = _example_class("eqx-mc-v2")["providerSpec"]["machineType"]
        _edit_deployment(store, replicas=4, class_name="eqx-mc-v2")

        def rolled_out(s: Store) -> bool:
            status = _md_status(s)
            live = [m for m in _machines(s) if not m["metadata"].get("deletionTimestamp")]
            return (status.get("updatedReplicas") == 4 and status.get("availableReplicas") == 4 and len(live) == 4
                    and all(m["spec"]["class"]["name"] == "eqx-mc-v2" for m in live))

        mc.wait_for(rolled_out, timeout=60, message="4 updated and available Machines of eqx-mc-v2")
        # The deployment's own revision annotation follows its newest set (MCM's getNewMachineSet; written by the
        # DecoratorController metal-machinedeployment-revisions).
        mc.wait_for(lambda s: (_deployment(s)["metadata"].get("annotations") or {}).get(
            "deployment.kubernetes.io/revision") == "2", timeout=60, message="the deployment at revision 2")
        # Four active devices can be seen while an old one is still being deleted and the last new one not yet
        # created (Machines count available as soon as they run): wait for the four of the new class.
        mc.wait_for(lambda s: len(sim.devices()) == 4 and all(d["state"] == "active" for d in sim.devices())
                    and {d["plan"]["slug"] for d in sim.devices()} == {second_plan},
                    timeout=60, message="the old class's devices deleted, four of the new class active")

        store.delete(MACHINE_API, "MachineDeployment", DEPLOYMENT, NS)
        mc.wait_for(lambda s: not _machines(s) and not s.list(MACHINE_API, "MachineSet", NS)
                    and s.try_get(MACHINE_API, "MachineDeployment", DEPLOYMENT, NS) is None,
                    timeout=60, message="no Machine, MachineSet or MachineDeployment left")
        assert [d for d in sim.devices() if MANAGED in d["tags"]] == []
        assert len(sim.devices(include_deleted=True)) >= 6


# ------------------------------------------------------------------------------------------------ orphans


def test_machine_class_collects_only_old_orphans_of_its_cluster(metal_factory: Callable[..., Metal],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from hooks.config import Settings
    from hooks.equinix import tenancy
    from hooks.mcm import machineclass

    shift = [0.0]
    metal = metal_factory(clock=lambda: time.monotonic() + shift[0])
    sim = metal.sim
    installation = "e2e-installation"

    def ours(cluster_tag: str, installation_id: str = installation, namespace: str = NS) -> list[str]:
        return [MANAGED, f"metal-machine-hooks:uid:{uuid.uuid4()}", cluster_tag,
                *tenancy.tenant_tags(installation_id, namespace)]

    project = _project()
    shift[0] = -3600.0  # seeded an hour ago: far past the grace period below
    orphan = sim.add_device(project, hostname="orphan", tags=ours(_cluster_tag()))
    foreign = sim.add_device(project, hostname="foreign", tags=["team: storage"])
    other_cluster = sim.add_device(project, hostname="other-cluster", tags=ours("kubernetes.io/cluster/other: 1"))
    # Same project, same cluster tag text: another installation's, another namespace's, and one without tenant tags.
    other_install = sim.add_device(project, hostname="other-install", tags=ours(_cluster_tag(), "another-cluster"))
    other_namespace = sim.add_device(project, hostname="other-ns", tags=ours(_cluster_tag(), namespace="team-b"))
    untenanted = sim.add_device(project, hostname="untenanted", tags=ours(_cluster_tag())[:3])
    shift[0] = 0.0
    fresh = sim.add_device(project, hostname="fresh-orphan", tags=ours(_cluster_tag()))

    monkeypatch.setattr(machineclass, "SCAN_INTERVAL", 0.0)  # every class sync scans (rate limit is per process)
    monkeypatch.setattr(machineclass, "ORPHAN_CONFIRM_SECONDS", 1.0)  # two sightings a second apart, not 10 minutes
    controllers = load_controllers(CONTROLLERS)
    for controller in controllers:
        if controller["metadata"]["name"] == "metal-machineclasses":
            controller["spec"]["resyncPeriodSeconds"] = 1  # the 300 s scan period, shortened
    settings = Settings(metal_api_url=metal.server.url, retry_budget=1.0, creation_timeout=120.0,
                        installation_id=installation)
    with _cluster(metal, settings=settings, controllers=controllers) as cluster:
        store, mc = cluster.store, cluster.mc
        store.load_yaml([EXAMPLES / "secret.yaml", EXAMPLES / "machine-class.yaml", EXAMPLES / "machine.yaml"])

        def live_ids() -> set[str]:
            return {d["id"] for d in sim.devices()}

        def reported(s: Store) -> dict[str, str]:
            """Class name -> orphans it collected: both example classes share the project and the cluster tag."""
            return {c["metadata"]["name"]: (c["metadata"].get("annotations") or {})[machineclass.ORPHANS_ANNOTATION]
                    for c in s.list(MACHINE_API, "MachineClass", NS)
                    if machineclass.ORPHANS_ANNOTATION in (c["metadata"].get("annotations") or {})}

        mc.wait_for(lambda s: orphan["id"] not in live_ids() and reported(s), timeout=60,
                    message="the old orphan collected and reported on a class")
        assert list(reported(store).values()) == ["1"]
        mc.wait_for(lambda s: _phase(s.get(MACHINE_API, "Machine", "eqx-test-machine", NS)) == "Running",
                    timeout=60, message="the class's own Machine Running")
        scans_before = len(mc.hook_calls(controller="metal-machineclasses", hook="sync"))
        mc.wait_for(lambda s: len(mc.hook_calls(controller="metal-machineclasses", hook="sync")) >= scans_before + 2,
                    timeout=60, message="two more periodic class syncs")

        survivors = {foreign["id"], other_cluster["id"], fresh["id"], other_install["id"], other_namespace["id"],
                     untenanted["id"]}
        assert survivors <= live_ids()
        machine_device = [d for d in sim.devices() if d["hostname"] == "eqx-test-machine"]
        assert len(machine_device) == 1 and machine_device[0]["state"] == "active"
        # Both classes may scan the same listing at once and both ask for the deletion: harmless, but only that one.
        assert set(metal.deleted_ids()) == {orphan["id"]}
        collected = [d for d in sim.devices(include_deleted=True) if d["deleted"]]
        assert [d["id"] for d in collected] == [orphan["id"]]


# ------------------------------------------------------------------------------------------------ drain order


@TOPOLOGIES
def test_scale_down_cordons_drains_then_deletes_the_device_then_the_machine(
        metal_factory: Callable[..., Metal], two_clusters: bool) -> None:
    from hooks.mcm.drain import INITIATE_DRAIN, INITIATE_VM_DELETION, NODE_ANNOTATION

    metal = metal_factory()
    sim = metal.sim
    seen: list[tuple[float, str, str, str]] = []  # (monotonic time, what, object name, detail)
    lock = threading.Lock()

    def record(event: WatchEvent) -> None:
        obj, old = event.object, event.old or {}
        kind, name, now = obj.get("kind"), obj["metadata"]["name"], time.monotonic()
        entries: list[tuple[str, str]] = []
        if kind == "Node":
            if (obj.get("spec") or {}).get("unschedulable") and not (old.get("spec") or {}).get("unschedulable"):
                entries.append(("cordon", ""))
            if event.type == "DELETED":
                entries.append(("node-deleted", ""))
        elif kind == "Job":
            if (obj.get("status") or {}).get("succeeded") and not (old.get("status") or {}).get("succeeded"):
                name = (obj["metadata"].get("annotations") or {}).get(NODE_ANNOTATION, "")  # keyed by the Node
                entries.append(("drain-succeeded", obj["metadata"]["name"]))
        elif kind == "Machine":
            op = ((obj.get("status") or {}).get("lastOperation") or {}).get("description")
            before = ((old.get("status") or {}).get("lastOperation") or {}).get("description")
            if op and op != before:
                entries.append(("operation", str(op)))
            if event.type == "DELETED":
                entries.append(("machine-gone", ""))
        with lock:
            seen.extend((now, what, name, detail) for what, detail in entries)

    with _cluster(metal, two_clusters=two_clusters) as cluster:
        store, mc, nodes = cluster.store, cluster.mc, cluster.node_store
        store.watch(record)
        if nodes is not store:
            nodes.watch(record)  # the target's Nodes: cordoned and removed there
        store.load_yaml([EXAMPLES / "secret.yaml", EXAMPLES / "machine-class.yaml"])
        deployment = _example_deployment(2)
        deployment["spec"]["minReadySeconds"] = 0
        store.create(deployment)
        mc.wait_for(lambda s: _md_status(s).get("availableReplicas") == 2 and len(_ready_nodes(nodes)) == 2,
                    timeout=60, message="2 available Machines with Ready Nodes")
        before = {m["metadata"]["name"]: m for m in _machines(store)}
        devices = {d["hostname"]: d for d in sim.devices()}
        assert set(devices) == {m["metadata"]["labels"]["node"] for m in before.values()}
        assert metal.deletes() == [] and not [e for e in seen if e[1] == "cordon"]

        _edit_deployment(store, replicas=1)
        mc.wait_for(lambda s: len(_machines(s)) == 1 and any(e[1] == "machine-gone" for e in seen), timeout=60,
                    message="one Machine left")
        survivor = _machines(store)[0]
        victim_name = next(n for n in before if n != survivor["metadata"]["name"])
        victim_node = before[victim_name]["metadata"]["labels"]["node"]
        survivor_node = survivor["metadata"]["labels"]["node"]
        victim_device, survivor_device = devices[victim_node]["id"], devices[survivor_node]["id"]
        mc.wait_for(lambda s: nodes.try_get("v1", "Node", victim_node) is None, timeout=60,
                    message="the victim's Node gone with its device")

        with lock:
            events = list(seen)

        def first(what: str, name: str) -> float:
            times = [t for t, w, n, _ in events if w == what and n == name]
            assert times, f"no {what} seen for {name}: {events}"
            return times[0]

        cordoned = first("cordon", victim_node)
        drained = first("drain-succeeded", victim_node)
        deletes = metal.deletes()
        assert metal.deleted_ids() == [victim_device], deletes
        delete_started, delete_answered = deletes[0][0], deletes[0][1]
        gone = first("machine-gone", victim_name)
        assert cordoned < drained < delete_started, events
        assert delete_answered < gone, events
        operations = [(t, d) for t, w, n, d in events if w == "operation" and n == victim_name]
        before_delete = [d for t, d in operations if t < delete_started]
        assert INITIATE_DRAIN in before_delete, operations
        assert f"Drain successful. {INITIATE_VM_DELETION}" in before_delete, operations
        assert before_delete.index(INITIATE_DRAIN) < before_delete.index(f"Drain successful. {INITIATE_VM_DELETION}")
        gone_device = next(d for d in sim.devices(include_deleted=True) if d["id"] == victim_device)
        assert gone_device["deleted"]

        # The survivor: same device, still active, its Node never cordoned nor removed, still Ready.
        assert not [e for e in events if e[2] in (survivor_node, survivor["metadata"]["name"])
                    and e[1] in ("cordon", "node-deleted", "drain-succeeded", "machine-gone")], events
        assert survivor["metadata"]["uid"] == before[survivor["metadata"]["name"]]["metadata"]["uid"]
        assert [d["id"] for d in sim.devices()] == [survivor_device]
        assert sim.devices()[0]["state"] == "active"
        node = nodes.get("v1", "Node", survivor_node)
        assert not (node.get("spec") or {}).get("unschedulable") and survivor_node in _ready_nodes(nodes)
        assert _phase(survivor) == "Running"


# ------------------------------------------------------------------------------------------------ secret hygiene

CANARY_TOKEN = "canary-e2e-token-93c1"
CANARY_USERDATA = "#!/bin/sh\necho canary-e2e-userdata-41d7"


def _canaries() -> list[str]:
    values = [CANARY_TOKEN, CANARY_USERDATA, "canary-e2e-userdata-41d7"]
    return values + [base64.b64encode(v.encode()).decode() for v in (CANARY_TOKEN, CANARY_USERDATA)]


def _leaks(text: str) -> list[str]:
    return [c for c in _canaries() if c in text]


def test_canary_credentials_never_leave_the_secret(metal_factory: Callable[..., Metal],
                                                   capfd: pytest.CaptureFixture[str],
                                                   caplog: pytest.LogCaptureFixture) -> None:
    metal = metal_factory(token=CANARY_TOKEN)
    sim = metal.sim
    secret = yaml.safe_load((EXAMPLES / "secret.yaml").read_text())
    secret["stringData"] = {"apiToken": CANARY_TOKEN, "userData": CANARY_USERDATA}
    leaked_objects: list[str] = []

    def inspect(event: WatchEvent) -> None:
        if event.object.get("kind") != "Secret":
            found = _leaks(json.dumps(event.object))
            if found:
                leaked_objects.append(f"{event.type} {event.object.get('kind')} "
                                      f"{event.object['metadata'].get('name')}: {found}")

    with _cluster(metal, keep_bodies=True) as cluster:
        store, mc = cluster.store, cluster.mc
        caplog.set_level(logging.DEBUG)  # after the app set the root level from LOG_LEVEL
        store.watch(inspect)
        store.create(secret)
        store.load_yaml([EXAMPLES / "machine-class.yaml", EXAMPLES / "machine.yaml"])

        def machine(s: Store) -> Obj | None:
            return s.try_get(MACHINE_API, "Machine", "eqx-test-machine", NS)

        mc.wait_for(lambda s: _phase(machine(s) or {}) == "Running", timeout=60, message="Machine Running")
        devices = sim.devices()
        assert len(devices) == 1 and devices[0]["userdata"] == CANARY_USERDATA  # the canary really was used
        during = [o for o in store.snapshot() if o.get("kind") != "Secret"]
        store.delete(MACHINE_API, "Machine", "eqx-test-machine", NS)
        mc.wait_for(lambda s: machine(s) is None, timeout=60, message="Machine gone")
        assert sim.devices() == []
        metrics_text = requests.get(f"{cluster.hooks_url}/metrics", timeout=5).text
        final = [o for o in store.snapshot() if o.get("kind") != "Secret"]
        events = copy.deepcopy(mc.events)

    responses = [e for e in events if e.get("response") is not None]
    assert responses, "keep_bodies gave no hook responses to inspect"
    for entry in events:
        shown = {k: v for k, v in entry.items() if k != "request"}  # requests carry the Secret by design
        assert not _leaks(json.dumps(shown, default=str)), entry
    assert leaked_objects == []
    for obj in during + final:
        assert not _leaks(json.dumps(obj)), obj
    assert "_devices_created_total" in metrics_text and "_hook_duration_seconds" in metrics_text
    assert not _leaks(metrics_text)
    assert not _leaks(" ".join(path for _, _, _, path in metal.calls))  # no token in a URL the API logs
    # What the hook server writes: JSON lines on stderr, at DEBUG, through the redaction filter it installs.
    captured = capfd.readouterr()
    assert '"logger": "hooks.machine"' in captured.err, "the hook server's log lines were not captured"
    assert not _leaks(captured.err + captured.out)
    # Every record as its handlers left it (the filter scrubs records in place; `message` is a formatter's cache of
    # the text before, whichever handler ran first, so it is not what any handler wrote).
    assert caplog.records, "no log record captured"
    for record in caplog.records:
        fields = {k: v for k, v in vars(record).items() if k != "message"}
        assert not _leaks(record.getMessage() + json.dumps(fields, default=str)), record


# ------------------------------------------------------------------------------------------------ failure limit


def test_can_mark_machine_failed_replaces_a_partitioned_pool_one_machine_at_a_time(
        metal_factory: Callable[..., Metal]) -> None:
    """MCM's canMarkMachineFailed (machine_util.go, maxReplacements 1): every Node of a pool goes NotReady; the
    Machines go Unknown together but are marked Failed and replaced one at a time, never two at once."""
    metal = metal_factory()
    with _cluster(metal) as cluster:
        store, mc, joiner = cluster.store, cluster.mc, cluster.joiner
        store.load_yaml([EXAMPLES / "secret.yaml", EXAMPLES / "machine-class.yaml"])
        doc = _example_deployment(3, min_ready=0)
        doc["spec"]["template"]["metadata"]["labels"]["name"] = "eqx-pool"  # MCM groups a deployment's Machines so
        doc["spec"]["template"]["spec"].update(healthTimeout="3s", drainTimeout="1s")
        store.create(doc)
        mc.wait_for(lambda s: len([m for m in _machines(s) if _phase(m) == "Running"]) == 3, timeout=60,
                    message="3 Running Machines")
        first = {m["metadata"]["uid"] for m in _machines(store)}
        for node in _ready_nodes(store):
            joiner.set_ready(node, "False")
        most = 0

        def replaced(s: Store) -> bool:
            nonlocal most
            machines = _machines(s)
            going = [m for m in machines if m["metadata"]["uid"] in first and m["metadata"].get("deletionTimestamp")]
            for m in going:  # names are reused (slot names): the replacement's Node must not inherit the pin
                joiner.set_ready(m["metadata"]["name"], None)
            # Being replaced: Failed, or an original Machine already being deleted.
            most = max(most, len({m["metadata"]["uid"] for m in machines if _phase(m) == "Failed"}
                                 | {m["metadata"]["uid"] for m in going}))
            live = [m for m in machines if not m["metadata"].get("deletionTimestamp")]
            return (len(live) == 3 and not {m["metadata"]["uid"] for m in live} & first
                    and all(_phase(m) == "Running" for m in live))

        mc.wait_for(replaced, timeout=120, message="all three Machines replaced")
        assert most == 1, f"{most} Machines were being replaced at once"
