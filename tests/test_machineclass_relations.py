"""Which Machines a MachineClass relates, under the Metacontroller emulator with the repository's class controller.

A class relates its own labelled Machines and the ones not labelled yet; a Machine change syncs only the classes
that relate it; a Machine that is not labelled yet (just created, or from before the upgrade) still keeps a class
it names from being deleted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from emulator.hookauth import seed_auth_secrets
from emulator.metacontroller import Metacontroller, load_controllers
from emulator.store import Store
from hooks.config import Settings
from hooks.mcm import machineclass
from hooks.server.app import create_app
from tests.emulator_support import HOOK_SERVICE, REPO

pytestmark = pytest.mark.e2e  # the class controller under the emulated Metacontroller

NS = "shoot--relations"
API = "machine.sapcloud.io/v1alpha1"
Obj = dict[str, Any]


def machine_class(name: str) -> Obj:
    return {"apiVersion": API, "kind": "MachineClass", "metadata": {"name": name, "namespace": NS},
            "provider": "SomethingElse", "providerSpec": {}}  # not ours to scan: no API needed


def machine(name: str, class_name: str, *, labelled: bool) -> Obj:
    labels = {machineclass.CLASS_LABEL: class_name} if labelled else {}
    return {"apiVersion": API, "kind": "Machine", "metadata": {"name": name, "namespace": NS, "labels": labels},
            "spec": {"class": {"kind": "MachineClass", "name": class_name}}}


@contextmanager
def class_controller() -> Iterator[tuple[Store, Metacontroller]]:
    from werkzeug.serving import make_server

    http = make_server("127.0.0.1", 0, create_app(Settings()), threaded=True)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    store = Store()
    store.load_yaml(sorted(p for p in (REPO / "kubernetes" / "crds").glob("*.yaml") if p.name != "kustomization.yaml"))
    store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    controllers = [c for c in load_controllers(REPO / "metacontroller")
                   if c["metadata"]["name"] == "metal-machineclasses"]
    seed_auth_secrets(store, controllers, "class-relations-token")  # Settings() in code: no token checked
    mc = Metacontroller(store, controllers, service_urls={HOOK_SERVICE: f"http://127.0.0.1:{http.server_port}"},
                        backoff_cap=0.5)
    mc.start()
    try:
        yield store, mc
    finally:
        mc.stop()
        http.shutdown()


def in_use(store: Store, name: str) -> str | None:
    obj = store.try_get(API, "MachineClass", name, NS)
    return ((obj or {}).get("metadata", {}).get("annotations") or {}).get(machineclass.IN_USE_ANNOTATION)


def syncs(mc: Metacontroller, name: str) -> int:
    return len(mc.hook_calls(controller="metal-machineclasses", key=f"MachineClass {NS}/{name}", hook="sync"))


def quiet(mc: Metacontroller) -> None:
    """Idle, and no hook call for 0.3 s (store events reach the controller on another thread)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        calls = len(mc.hook_calls())
        mc.wait_idle(timeout=10)
        time.sleep(0.3)
        if len(mc.hook_calls()) == calls:
            return
    raise AssertionError("the class controller kept calling hooks")


def test_a_machine_change_syncs_only_its_own_class() -> None:
    with class_controller() as (store, mc):
        for obj in (machine_class("small"), machine_class("large"), machine("s1", "small", labelled=True),
                    machine("l1", "large", labelled=True)):
            store.create(obj)
        mc.wait_for(lambda s: in_use(s, "small") == "1 machine: s1" and in_use(s, "large") == "1 machine: l1",
                    message="both classes show their own Machine")
        quiet(mc)
        small, large = syncs(mc, "small"), syncs(mc, "large")
        changed = store.get(API, "Machine", "s1", NS)
        changed["metadata"]["annotations"] = {"example.com/touched": "1"}
        store.update(changed)
        mc.wait_for(lambda s: syncs(mc, "small") > small, message="the Machine's class synced")
        quiet(mc)
        assert syncs(mc, "large") == large


def test_an_unlabelled_machine_keeps_the_class_it_names_until_it_is_gone() -> None:
    """A Machine whose first sync has not run (or one from before the upgrade) has no class label yet."""
    with class_controller() as (store, mc):
        for obj in (machine_class("small"), machine_class("large"), machine("new", "small", labelled=False),
                    machine("l1", "large", labelled=True)):
            store.create(obj)
        # The unlabelled Machine is related to every class, and counted only by the one it names.
        mc.wait_for(lambda s: in_use(s, "small") == "1 machine: new" and in_use(s, "large") == "1 machine: l1",
                    message="the unlabelled Machine is seen")
        store.delete(API, "MachineClass", "small", NS)
        quiet(mc)
        held = store.try_get(API, "MachineClass", "small", NS)
        assert held is not None and held["metadata"].get("deletionTimestamp")
        assert in_use(store, "small") == "1 machine: new"
        store.delete(API, "Machine", "new", NS)
        mc.wait_for(lambda s: s.try_get(API, "MachineClass", "small", NS) is None,
                    message="the class goes once no Machine names it")


def test_a_class_being_deleted_sees_a_machine_whose_label_is_stale() -> None:
    """A Machine moved to `small` whose hook has not relabelled it yet still names `small`: deletion must see it."""
    with class_controller() as (store, mc):
        for obj in (machine_class("small"), machine_class("large"), machine("moved", "small", labelled=False)):
            store.create(obj)
        moved = store.get(API, "Machine", "moved", NS)
        moved["metadata"]["labels"] = {machineclass.CLASS_LABEL: "large"}  # stale: it used `large` before
        store.update(moved)
        mc.wait_for(lambda s: syncs(mc, "small") >= 1 and syncs(mc, "large") >= 1, message="both classes synced")
        quiet(mc)
        assert in_use(store, "small") is None  # normal syncs miss it until the Machine hook relabels it
        mc.stop()
        store.delete(API, "MachineClass", "small", NS)
        # The API server bumps metadata.generation with deletionTimestamp, so Metacontroller asks customize again.
        # The emulator's store does not bump it; a fresh start (empty customize cache) stands in for the bump.
        mc.start()
        mc.wait_for(lambda s: in_use(s, "small") == "1 machine: moved", message="the deleting class sees it")
        quiet(mc)
        held = store.try_get(API, "MachineClass", "small", NS)
        assert held is not None and held["metadata"].get("deletionTimestamp")
