"""Nodes appear, turn Ready and disappear with the simulator's devices, like kubelets would make them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from emulator.nodes import NodeJoiner, short_form
from emulator.store import Store
from hooks.equinix.devices import to_device
from hooks.mcm.node_proof import prove
from tests.clocks import ManualClock


def ready(store: Store, name: str) -> str | None:
    node = store.try_get("v1", "Node", name)
    if node is None:
        return None
    return next(c["status"] for c in node["status"]["conditions"] if c["type"] == "Ready")


@pytest.fixture
def sim(metal_sim: Any) -> Any:
    return metal_sim


def test_active_device_joins_not_ready_then_ready(sim: Any) -> None:
    store, clock = Store(), ManualClock(start=100.0)
    device = sim.sim.add_device(sim.project, hostname="worker-1", metro="ny", plan="c3.small.x86", state="active")
    joiner = NodeJoiner(store, sim.base_url, ready_delay=5.0, monotonic=clock)
    joiner.tick()
    node = store.get("v1", "Node", "worker-1")
    wanted = f"equinixmetal://{device['id']}" if short_form(device["id"]) else f"equinixmetal://ny/{device['id']}"
    assert node["spec"]["providerID"] == wanted
    assert node["metadata"]["labels"]["kubernetes.io/hostname"] == "worker-1"
    assert ready(store, "worker-1") == "False"
    clock.now += 5.0
    joiner.tick()
    assert ready(store, "worker-1") == "True"


def test_provisioning_device_has_no_node_powered_off_is_unknown_gone_loses_it(sim: Any) -> None:
    store = Store()
    pending = sim.sim.add_device(sim.project, hostname="worker-2", state="provisioning")
    active = sim.sim.add_device(sim.project, hostname="worker-3", state="active")
    joiner = NodeJoiner(store, sim.base_url)
    joiner.tick()
    assert store.try_get("v1", "Node", "worker-2") is None
    assert ready(store, "worker-3") == "True"
    sim.sim.set_device_state(active["id"], "powering_off")
    joiner.tick()
    assert ready(store, "worker-3") == "Unknown"
    sim.sim.set_device_state(active["id"], "deleted")
    sim.sim.set_device_state(pending["id"], "active")
    joiner.tick()
    assert store.try_get("v1", "Node", "worker-3") is None
    assert ready(store, "worker-2") == "True"


def test_without_a_cloud_node_controller_a_gone_device_leaves_its_node(sim: Any) -> None:
    """`make demo` runs without one: the Machine's `node remove` Job deletes the Node, as MCM does."""
    store = Store()
    device = sim.sim.add_device(sim.project, hostname="worker-5", state="active")
    joiner = NodeJoiner(store, sim.base_url, delete_gone=False)
    joiner.tick()
    sim.sim.set_device_state(device["id"], "deleted")
    joiner.tick()
    assert store.try_get("v1", "Node", "worker-5") is not None


def test_knobs_pin_not_ready_and_remove_nodes(sim: Any) -> None:
    store = Store()
    sim.sim.add_device(sim.project, hostname="worker-4", state="active")
    store.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "not-ours"}, "spec": {}})
    joiner = NodeJoiner(store, sim.base_url)
    joiner.tick()
    joiner.set_ready("worker-4", "Unknown")
    assert ready(store, "worker-4") == "Unknown"
    joiner.set_ready("worker-4", None)
    assert ready(store, "worker-4") == "True"
    joiner.remove("worker-4")
    joiner.tick()
    assert store.try_get("v1", "Node", "worker-4") is None
    joiner.allow_rejoin("worker-4")
    joiner.tick()
    assert ready(store, "worker-4") == "True"
    assert store.try_get("v1", "Node", "not-ours") is not None


def test_background_thread_follows_devices(sim: Any) -> None:
    store = Store()
    joiner = NodeJoiner(store, sim.base_url, poll_interval=0.01).start()
    try:
        device = sim.sim.add_device(sim.project, hostname="worker-5", state="active")
        wait(lambda: ready(store, "worker-5") == "True")
        sim.sim.set_device_state(device["id"], "deleted")
        wait(lambda: store.try_get("v1", "Node", "worker-5") is None)
    finally:
        joiner.stop()
    assert joiner.errors == []


def wait(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    event = threading.Event()
    while not condition():
        assert time.monotonic() < deadline, "condition not met"
        event.wait(0.01)


def test_a_fleet_s_nodes_carry_both_provider_id_forms_and_the_device_addresses(sim: Any) -> None:
    """Real clusters show `equinixmetal://<id>` (cloud-controller-manager) and `equinixmetal://<metro>/<id>` (MCM);
    each Node is still provably its device's, and a kubelet's addresses come from the device."""
    store = Store()
    made = [sim.sim.add_device(sim.project, hostname=f"fleet-{i}", metro="da", state="active") for i in range(8)]
    NodeJoiner(store, sim.base_url).tick()
    forms = set()
    for device in made:
        node = store.get("v1", "Node", device["hostname"])
        forms.add(node["spec"]["providerID"].count("/"))
        raw = next(d for d in sim.sim.devices() if d["id"] == device["id"])
        public = {ip["address"] for ip in raw["ip_addresses"] if ip["public"]}
        private = {ip["address"] for ip in raw["ip_addresses"] if not ip["public"]}
        addresses = {(a["type"], a["address"]) for a in node["status"]["addresses"]}
        assert {("ExternalIP", a) for a in public} <= addresses
        assert {("InternalIP", a) for a in private} <= addresses
        assert prove(node, to_device(raw, fallback_metro="da", hostname=device["hostname"])).proven
        other = to_device(next(d for d in sim.sim.devices() if d["id"] != device["id"]), fallback_metro="da",
                          hostname="x")
        assert not prove(node, other).proven
    assert forms == {2, 3}, "both providerID forms appear in a fleet"
