"""End to end: our real hooks under the Metacontroller emulator, against the Metal simulator.

The seed flow a user runs first: apply the CRDs, the credentials Secret, the MachineClass and one Machine; exactly
one device appears with the Secret's userData and the class tags, the Machine reaches Running once its Node is
Ready; deleting the Machine drains its Node (a Job, completed here by the JobRunner stand-in), removes the device,
and only then lets the Machine go. A MachineDeployment from the examples reaches its replicas, scales down (devices
of the removed Machines go too), rolls out a new class within its surge and, once deleted, takes its MachineSets,
Machines and devices with it. The flows also hold with the emulator dropping status writes and restarting.
Those of the `cluster` fixture run in both topologies: one cluster, and two (Machines in the control cluster, Nodes
in a target cluster named by a kubeconfig Secret in the Machines' namespace).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from emulator.metacontroller import Metacontroller
from emulator.store import Store
from tests.emulator_support import example_tokens, real_cluster

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "kubernetes" / "examples"
MACHINE_API = "machine.sapcloud.io/v1alpha1"
Obj = dict[str, Any]





@pytest.fixture(params=[False, True], ids=["one-cluster", "two-clusters"])
def cluster(request: pytest.FixtureRequest, metal_sim_factory: Callable[..., Any]) -> Iterator[Obj]:
    """Both topologies (docs/operations.md, "Two clusters"): with two, the Nodes join a target cluster whose
    kubeconfig Secret is in the Machines' namespace, and the drain and Node-side Jobs act there."""
    sim = metal_sim_factory(tokens=example_tokens())
    with real_cluster(sim.url, sim.base_url, two_clusters=request.param) as running:
        yield {"sim": sim, "store": running.store, "mc": running.mc, "joiner": running.joiner, "jobs": running.jobs,
               "nodes": running.node_store}


def _machine(store: Store, name: str = "eqx-test-machine") -> Obj | None:
    return store.try_get(MACHINE_API, "Machine", name, "default")


def test_seed_flow_one_device_running_then_clean_delete(cluster: Obj) -> None:
    store: Store = cluster["store"]
    mc: Metacontroller = cluster["mc"]
    sim = cluster["sim"].sim
    store.load_yaml([EXAMPLES / "secret.yaml", EXAMPLES / "machine-class.yaml", EXAMPLES / "machine.yaml"])

    def phase(s: Store) -> str | None:
        machine = _machine(s)
        return ((machine or {}).get("status") or {}).get("currentStatus", {}).get("phase")

    mc.wait_for(lambda s: phase(s) == "Running", timeout=60, message="Machine Running")
    devices = sim.devices()
    assert len(devices) == 1
    device = devices[0]
    secret = store.get("v1", "Secret", "test-secret", "default")
    user_data = base64.b64decode(secret["data"]["userData"]).decode().replace("<<MACHINE_NAME>>", "eqx-test-machine")
    assert device.get("userdata") == user_data
    class_tags = next(d for d in yaml.safe_load_all((EXAMPLES / "machine-class.yaml").read_text())
                      if d and d["metadata"]["name"] == "eqx-mc")["providerSpec"]["tags"]
    assert set(class_tags) <= set(device["tags"])
    machine = _machine(store)
    assert f"metal-machine-hooks:uid:{machine['metadata']['uid']}" in device["tags"]
    assert machine["metadata"]["labels"].get("node") == device["hostname"]
    nodes: Store = cluster["nodes"]  # the target's with two clusters: the control cluster then has none
    assert [n["metadata"]["name"] for n in nodes.list("v1", "Node")] == [device["hostname"]]
    assert nodes is store or store.list("v1", "Node") == []
    failures = [e["error"] for e in mc.events if e["controller"] == "metal-machines"
                and e["outcome"] in ("sync-error", "error") and "informer not synced" not in e["error"]]
    assert failures == []

    store.delete(MACHINE_API, "Machine", "eqx-test-machine", "default")
    mc.wait_for(lambda s: _machine(s) is None, timeout=60, message="Machine removed after its device")
    assert sim.devices() == []
    assert len(sim.devices(include_deleted=True)) == 1
    finished = cluster["jobs"].finished
    assert [job for job in finished if job.endswith("-drain")] == ["eqx-test-machine-drain"]
    assert "eqx-test-machine-node-terminating" in finished  # the Node side runs beside the drain (docs/nodes.md)


def _apply_deployment(store: Store) -> None:
    """The example Secret, classes and MachineDeployment, as a user applies them."""
    store.load_yaml([EXAMPLES / "secret.yaml", EXAMPLES / "machine-class.yaml"])
    store.create(_deployment())


def _deployment() -> Obj:
    doc = yaml.safe_load((EXAMPLES / "machine-deployment.yaml").read_text())
    doc["spec"]["minReadySeconds"] = 0  # the example waits 10 s per machine; the behaviour is the same
    return doc


def test_machine_deployment_scales_and_cleans_up(cluster: Obj) -> None:
    store: Store = cluster["store"]
    mc: Metacontroller = cluster["mc"]
    sim = cluster["sim"].sim
    _apply_deployment(store)

    def deployment(s: Store) -> Obj:
        return s.get(MACHINE_API, "MachineDeployment", "eqx-test-machine-deployment", "default")

    def running(s: Store) -> list[str]:
        return sorted(m["metadata"]["name"] for m in s.list(MACHINE_API, "Machine", "default")
                      if ((m.get("status") or {}).get("currentStatus") or {}).get("phase") == "Running")

    mc.wait_for(lambda s: (deployment(s).get("status") or {}).get("availableReplicas") == 3, timeout=60,
                message="3 available replicas")
    assert len(running(store)) == 3 and len(sim.devices()) == 3
    assert {d["hostname"] for d in sim.devices()} == set(running(store))

    md = deployment(store)
    md["spec"]["replicas"] = 1
    store.update(md)
    mc.wait_for(lambda s: len(sim.devices()) == 1 and len(s.list(MACHINE_API, "Machine", "default")) == 1,
                timeout=60, message="scaled down to one machine and one device")
    mc.wait_for(lambda s: (deployment(s).get("status") or {}).get("replicas") == 1, timeout=60)

    store.delete(MACHINE_API, "MachineDeployment", "eqx-test-machine-deployment", "default")
    mc.wait_for(lambda s: not s.list(MACHINE_API, "Machine", "default") and not s.list(MACHINE_API, "MachineSet",
                                                                                         "default"),
                timeout=60, message="garbage collection removed the sets and machines")
    assert sim.devices() == []


def test_seed_flow_survives_dropped_writes_and_controller_restarts(cluster: Obj) -> None:
    store: Store = cluster["store"]
    mc: Metacontroller = cluster["mc"]
    sim = cluster["sim"].sim
    mc.conflict_rate = 0.8  # Machine status writes lost to conflicts, as Metacontroller drops them for decorators
    store.load_yaml([EXAMPLES / "secret.yaml", EXAMPLES / "machine-class.yaml", EXAMPLES / "machine.yaml"])
    mc.wait_for(lambda s: sim.devices(), timeout=60, message="device created")
    mc.restart()
    mc.wait_for(lambda s: (((_machine(s) or {}).get("status") or {}).get("currentStatus") or {}).get("phase")
                == "Running", timeout=60, message="Machine Running despite conflicts and a restart")
    assert len(sim.devices()) == 1
    assert any(e["outcome"] == "conflict-dropped" for e in mc.events)
    mc.restart()
    store.delete(MACHINE_API, "Machine", "eqx-test-machine", "default")
    mc.wait_for(lambda s: _machine(s) is None, timeout=60, message="Machine removed after its device")
    assert sim.devices() == [] and len(sim.devices(include_deleted=True)) == 1


def test_machine_deployment_rolls_out_a_new_class_within_surge(cluster: Obj) -> None:
    store: Store = cluster["store"]
    mc: Metacontroller = cluster["mc"]
    sim = cluster["sim"].sim
    _apply_deployment(store)
    name = "eqx-test-machine-deployment"

    def status(s: Store) -> Obj:
        return s.get(MACHINE_API, "MachineDeployment", name, "default").get("status") or {}

    mc.wait_for(lambda s: status(s).get("availableReplicas") == 3, timeout=60, message="3 available")
    md = store.get(MACHINE_API, "MachineDeployment", name, "default")
    md["spec"]["template"]["spec"]["class"]["name"] = "eqx-mc-v2"
    store.update(md)
    peak = {"machines": 0}

    def rolled_out(s: Store) -> bool:
        live = [m for m in s.list(MACHINE_API, "Machine", "default") if not m["metadata"].get("deletionTimestamp")]
        peak["machines"] = max(peak["machines"], len(live))
        st = status(s)
        return (st.get("updatedReplicas"), st.get("availableReplicas"), st.get("replicas")) == (3, 3, 3) and all(
            m["spec"]["class"]["name"] == "eqx-mc-v2" for m in s.list(MACHINE_API, "Machine", "default"))

    mc.wait_for(rolled_out, timeout=60, message="every machine replaced by one of eqx-mc-v2")
    assert peak["machines"] <= 4  # replicas 3 + maxSurge 1
    mc.wait_for(lambda s: len(sim.devices()) == 3, timeout=60, message="old devices deleted")
    assert {d["plan"]["slug"] for d in sim.devices()} == {"c3.small.x86"}
    sets = {m["metadata"]["name"]: m["spec"].get("replicas") for m in store.list(MACHINE_API, "MachineSet", "default")}
    assert sorted(sets.values()) == [0, 3]


# ------------------------------------------------------------------------- with the cluster's realism knobs on

REALISM = {"informer_lag": 0.3, "gc_delay": 0.5, "heartbeat_period": 1.0, "metadata_conflict_rate": 0.3}


@pytest.fixture
def realistic(metal_sim_factory: Callable[..., Any]) -> Iterator[Obj]:
    """The same cluster with a lagging informer cache, late garbage collection, kubelet heartbeats every second
    and conflicts on a decorator's labels/annotations write after its status write."""
    sim = metal_sim_factory(tokens=example_tokens())
    with real_cluster(sim.url, sim.base_url, **REALISM) as running:
        yield {"sim": sim, "store": running.store, "mc": running.mc, "joiner": running.joiner, "jobs": running.jobs}


def _live(sim: Any) -> list[Obj]:
    return [d for d in sim.devices() if d["state"] not in ("deprovisioning", "deleted")]


def test_seed_flow_with_lag_late_gc_heartbeats_and_split_writes(realistic: Obj) -> None:
    """What a real cluster guarantees, within bounds: Running, one device, the `node` label (it may trail the
    status: it is written in a second request that can conflict), then a clean delete."""
    store: Store = realistic["store"]
    mc: Metacontroller = realistic["mc"]
    sim = realistic["sim"].sim
    store.load_yaml([EXAMPLES / "secret.yaml", EXAMPLES / "machine-class.yaml", EXAMPLES / "machine.yaml"])
    mc.wait_for(lambda s: (((_machine(s) or {}).get("status") or {}).get("currentStatus") or {}).get("phase")
                == "Running", timeout=60, message="Machine Running")
    mc.wait_for(lambda s: len(_live(sim)) == 1, timeout=30, message="exactly one live device")
    device = _live(sim)[0]
    mc.wait_for(lambda s: ((_machine(s) or {})["metadata"].get("labels") or {}).get("node") == device["hostname"],
                timeout=30, message="the node label follows the status")
    mc.wait_for(lambda s: realistic["joiner"].heartbeats >= 2, timeout=30, message="kubelet heartbeats")
    assert len(_live(sim)) == 1  # heartbeats re-sync the Machine; they never create anything
    store.delete(MACHINE_API, "Machine", "eqx-test-machine", "default")
    mc.wait_for(lambda s: _machine(s) is None, timeout=60, message="Machine removed after its device")
    assert _live(sim) == [] and len(sim.devices(include_deleted=True)) == 1
    finished = realistic["jobs"].finished
    assert [job for job in finished if job.endswith("-drain")] == ["eqx-test-machine-drain"]
    assert "eqx-test-machine-node-terminating" in finished  # the Node side runs beside the drain (docs/nodes.md)


def test_machine_deployment_with_lag_late_gc_heartbeats_and_split_writes(realistic: Obj) -> None:
    """Scale up, scale down, delete: the replicas become available, and after the delete every MachineSet,
    Machine and device goes, within bounds, however late the controllers see things and the collector acts."""
    store: Store = realistic["store"]
    mc: Metacontroller = realistic["mc"]
    sim = realistic["sim"].sim
    _apply_deployment(store)
    name = "eqx-test-machine-deployment"

    def status(s: Store) -> Obj:
        return s.get(MACHINE_API, "MachineDeployment", name, "default").get("status") or {}

    mc.wait_for(lambda s: status(s).get("availableReplicas") == 3, timeout=60, message="3 available replicas")
    mc.wait_for(lambda s: len(_live(sim)) == 3, timeout=30, message="one live device per Machine")
    md = store.get(MACHINE_API, "MachineDeployment", name, "default")
    md["spec"]["replicas"] = 1
    store.update(md)
    mc.wait_for(lambda s: len(_live(sim)) == 1 and len(s.list(MACHINE_API, "Machine", "default")) == 1,
                timeout=60, message="scaled down to one machine and one device")
    store.delete(MACHINE_API, "MachineDeployment", name, "default")
    mc.wait_for(lambda s: not s.list(MACHINE_API, "Machine", "default")
                and not s.list(MACHINE_API, "MachineSet", "default") and not _live(sim),
                timeout=60, message="the sets, machines and devices are gone")


def _deleting_deployment_creates(realistic: Obj) -> dict[str, list[str]]:
    """Delete a MachineDeployment of 3 Running Machines; what was created after the delete call."""
    store: Store = realistic["store"]
    mc: Metacontroller = realistic["mc"]
    sim = realistic["sim"].sim
    _apply_deployment(store)
    name = "eqx-test-machine-deployment"
    mc.wait_for(lambda s: (s.get(MACHINE_API, "MachineDeployment", name, "default").get("status") or {}).get(
        "availableReplicas") == 3, timeout=60, message="3 available replicas")
    created: dict[str, list[str]] = {"MachineSet": [], "Machine": []}
    deleting = {"since": False}

    def watch(event: Any) -> None:
        if deleting["since"] and event.type == "ADDED" and event.object.get("kind") in created:
            created[event.object["kind"]].append(event.object["metadata"]["name"])

    unwatch = store.watch(watch)
    before = {d["id"] for d in sim.devices(include_deleted=True)}
    deleting["since"] = True
    store.delete(MACHINE_API, "MachineDeployment", name, "default")
    mc.wait_for(lambda s: not s.list(MACHINE_API, "Machine", "default")
                and not s.list(MACHINE_API, "MachineSet", "default") and not _live(sim),
                timeout=60, message="the sets, machines and devices are gone")
    mc.wait_idle(timeout=30)
    unwatch()
    created["devices"] = sorted({d["id"] for d in sim.devices(include_deleted=True)} - before)
    return created


@pytest.fixture
def slow_informers(metal_sim_factory: Callable[..., Any]) -> Iterator[Obj]:
    """Informers 0.25-0.75 s behind and a garbage collector that acts within 0.05 s: a deleted MachineDeployment
    is still in its controller's cache when its MachineSets are already gone."""
    sim = metal_sim_factory(tokens=example_tokens())
    with real_cluster(sim.url, sim.base_url, **{**REALISM, "informer_lag": 0.5, "gc_delay": 0.05}) as running:
        yield {"sim": sim, "store": running.store, "mc": running.mc, "joiner": running.joiner, "jobs": running.jobs}


def test_a_deleted_machine_deployment_creates_nothing(slow_informers: Obj) -> None:
    created = _deleting_deployment_creates(slow_informers)
    assert created == {"MachineSet": [], "Machine": [], "devices": []}


def _syncs_per_heartbeat(realistic: Obj, rounds: int = 4) -> dict[str, float]:
    """Hook calls per controller per kubelet report period, in a steady fleet of 3 Running Machines of a MachineSet.

    A MachineSet of its own, not the example MachineDeployment: under this informer lag a MachineDeployment's status
    can keep alternating between two values after it converges (docs/reliability.md, "Known"), and the emulator
    would never be idle; what is measured here is what a heartbeat costs the Machine, set and class controllers."""
    store: Store = realistic["store"]
    mc: Metacontroller = realistic["mc"]
    store.load_yaml([EXAMPLES / "secret.yaml", EXAMPLES / "machine-class.yaml"])
    template = _deployment()
    name = "eqx-test-machine-set"
    store.create({"apiVersion": MACHINE_API, "kind": "MachineSet", "metadata": {"name": name, "namespace": "default"},
                  "spec": {"replicas": 3, "selector": template["spec"]["selector"],
                           "template": template["spec"]["template"]}})
    mc.wait_for(lambda s: (s.get(MACHINE_API, "MachineSet", name, "default").get("status") or {}).get(
        "availableReplicas") == 3, timeout=60, message="3 available replicas")
    mc.wait_for(lambda s: all((m["metadata"].get("labels") or {}).get("node")
                              for m in s.list(MACHINE_API, "Machine", "default")), timeout=30)
    # Idle is only measurable between reports: with three kubelets reporting every second and each report reaching
    # the controllers 0.15-0.45 s later (informer lag), an event is in flight almost all the time. So the reports
    # pause while the fleet settles, run for the rounds, and pause again while what they caused is counted.
    joiner = realistic["joiner"]
    period, joiner.heartbeat_period = joiner.heartbeat_period, 0.0
    mc.wait_idle(timeout=30)
    start_calls, start_beats = len(mc.hook_calls()), joiner.heartbeats
    joiner.heartbeat_period = period
    mc.wait_for(lambda s: joiner.heartbeats - start_beats >= 3 * rounds, timeout=30, message="heartbeat rounds")
    joiner.heartbeat_period = 0.0
    mc.wait_idle(timeout=30)
    rounds = (joiner.heartbeats - start_beats) / 3
    calls = mc.hook_calls()[start_calls:]
    return {controller: len([c for c in calls if c["controller"] == controller and c["hook"] == "sync"]) / rounds
            for controller in ("metal-machines", "metal-machinesets", "metal-machineclasses")}


def test_heartbeats_of_a_steady_fleet_cost_no_set_or_class_syncs(realistic: Obj) -> None:
    per_period = _syncs_per_heartbeat(realistic)
    assert per_period["metal-machinesets"] < 0.5 and per_period["metal-machineclasses"] < 0.5, per_period

