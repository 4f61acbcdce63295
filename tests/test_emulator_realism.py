"""The realism knobs: informer lag, delayed garbage collection, kubelet heartbeats, split decorator writes.

Each is off by default; these tests pin down what each one makes a controller or a hook observe, which is what
a real cluster does and the emulator without them does not.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from emulator.nodes import NodeJoiner
from emulator.store import Store
from tests.clocks import ManualClock
from tests.emulator_support import API, HookServer, configmap, decorator, get, running, widget, widget_store

Obj = dict[str, Any]


@pytest.fixture
def store() -> Store:
    return widget_store()


def test_controllers_see_a_write_only_after_the_informer_lag(store: Store, server: HookServer) -> None:
    seen: list[tuple[float, str]] = []

    def sync(body: Obj) -> Obj:
        seen.append((time.monotonic(), body["object"]["metadata"]["labels"].get("step", "")))
        return {}

    server.handlers["/sync"] = sync
    store.create(widget("w1"))
    with running(store, [decorator("dc", server.url)], informer_lag=0.3) as mc:
        mc.wait_for(lambda s: seen, message="first sync")
        parent = get(store, "Widget", "w1")
        parent["metadata"]["labels"]["step"] = "2"
        written = time.monotonic()
        store.update(parent)
        mc.wait_for(lambda s: any(step == "2" for _, step in seen), message="the new label reaches the hook")
        first = min(t for t, step in seen if step == "2")
        assert first - written >= 0.5 * 0.3 - 0.01  # each kind's informer trails by 0.5-1.5 x informer_lag
        assert mc.runtime("dc").store.try_get(API, "Widget", "w1", "default") is not None


def test_without_lag_controllers_read_the_live_store(store: Store, server: HookServer) -> None:
    server.handlers["/sync"] = lambda body: {}
    store.create(widget("w1"))
    with running(store, [decorator("dc", server.url)]) as mc:
        runtime = mc.runtime("dc")
        store.create(widget("w2"))
        assert runtime.store.try_get(API, "Widget", "w2", "default") is not None  # no cache in between


def test_garbage_collection_after_a_delay_one_level_per_pass() -> None:
    store = Store(gc_delay=0.2)
    owner = store.create(configmap("owner"))
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    child = store.create({**configmap("child"), "metadata": {"name": "child", "namespace": "default",
                                                             "ownerReferences": [ref]}})
    grand_ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "child", "uid": child["metadata"]["uid"]}
    store.create({**configmap("grandchild"), "metadata": {"name": "grandchild", "namespace": "default",
                                                          "ownerReferences": [grand_ref]}})
    started = time.monotonic()
    store.delete("v1", "ConfigMap", "owner", "default")
    assert store.try_get("v1", "ConfigMap", "child", "default") is not None  # not inside the delete call
    deadline = started + 5
    while store.try_get("v1", "ConfigMap", "child", "default") is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    child_gone = time.monotonic()
    assert store.try_get("v1", "ConfigMap", "grandchild", "default") is not None  # the next level waits again
    while store.try_get("v1", "ConfigMap", "grandchild", "default") is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert child_gone - started >= 0.19 and time.monotonic() - started >= 0.39
    assert store.try_get("v1", "ConfigMap", "grandchild", "default") is None


def test_kubelet_heartbeats_move_last_heartbeat_time_only(metal_sim: Any) -> None:
    store, clock = Store(), ManualClock(start=100.0)
    base = datetime(2026, 12, 1, tzinfo=UTC)
    metal_sim.sim.add_device(metal_sim.project, hostname="worker-1", state="active")
    joiner = NodeJoiner(store, metal_sim.base_url, monotonic=clock, heartbeat_period=10.0,
                        wall=lambda: base + timedelta(seconds=clock.now))

    def ready() -> Obj:
        return next(c for c in store.get("v1", "Node", "worker-1")["status"]["conditions"] if c["type"] == "Ready")

    joiner.tick()
    first = ready()
    clock.now += 5
    joiner.tick()
    assert ready() == first and joiner.heartbeats == 0  # within the period: no write
    clock.now += 5
    joiner.tick()
    beat = ready()
    assert beat["lastHeartbeatTime"] > first["lastHeartbeatTime"]
    assert {k: v for k, v in beat.items() if k != "lastHeartbeatTime"} == {
        k: v for k, v in first.items() if k != "lastHeartbeatTime"}
    assert joiner.heartbeats == 1


def test_heartbeats_are_off_by_default(metal_sim: Any) -> None:
    store, clock = Store(), ManualClock(start=100.0)
    metal_sim.sim.add_device(metal_sim.project, hostname="worker-1", state="active")
    joiner = NodeJoiner(store, metal_sim.base_url, monotonic=clock)
    joiner.tick()
    version = store.get("v1", "Node", "worker-1")["metadata"]["resourceVersion"]
    clock.now += 3600
    joiner.tick()
    assert store.get("v1", "Node", "worker-1")["metadata"]["resourceVersion"] == version


def test_status_written_but_labels_lost_to_a_conflict(store: Store, server: HookServer) -> None:
    """Metacontroller writes a decorator's status, then labels/annotations; a conflict on the second is dropped.

    The sync after it (woken by the status write) is held in the hook until the dropped labels were checked:
    with the status already written it is a single metadata write, which would land the labels before the check.
    """
    released = threading.Event()
    calls: list[int] = []

    def sync(body: Obj) -> Obj:
        calls.append(1)
        if len(calls) > 1:
            released.wait(timeout=30)
        return {"status": {"phase": "Ready"}, "labels": {"decorated": "yes"}}

    server.handlers["/sync"] = sync
    store.create(widget("w1"))
    with running(store, [decorator("dc", server.url)], metadata_conflict_rate=1.0) as mc:
        try:
            mc.wait_for(lambda s: (get(s, "Widget", "w1").get("status") or {}).get("phase") == "Ready")
            mc.wait_for(lambda s: [e for e in mc.events if e["outcome"] == "conflict-dropped"])
            assert "decorated" not in get(store, "Widget", "w1")["metadata"]["labels"]
            assert mc.injected_metadata_conflicts >= 1 and mc.injected_conflicts == 0
            mc.metadata_conflict_rate = 0.0
        finally:
            released.set()
        mc.wait_for(lambda s: get(s, "Widget", "w1")["metadata"]["labels"].get("decorated") == "yes",
                    message="the next sync (woken by the conflicting writer's event) writes the labels")
