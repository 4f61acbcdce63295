"""Part 5: bytes of MachineClass sync requests Metacontroller sends for one Machine change (issue 12).

Counted, not computed: the repository's `metal-machineclasses` controller runs under the Metacontroller emulator
(customize caching, related-object selection and the related-object triggers as v4.17 does them) against our real
hook app in-process, behind a WSGI counter of request body bytes per path. One namespace holds `classes` classes of
`per_class` Running Machines each; once every class is idle, one Machine gets a new annotation and the class syncs
that follow are counted. Two layouts are measured:

* `before`: the class's customize relates every Machine of its namespace (the rule before this change, answered by
  the counter in place of our customize hook), so a Machine change syncs every class with every Machine;
* `after`: our customize (the class's own labelled Machines plus unlabelled ones), Machines labelled as the Machine
  hook labels them.

No class can reach the API (no credentials Secret), so a sync costs only its request.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from emulator.hookauth import seed_auth_secrets
from emulator.metacontroller import Metacontroller, load_controllers
from emulator.store import Store
from hooks.config import Settings
from hooks.mcm import machineclass
from hooks.server.app import create_app

REPO = Path(__file__).resolve().parent.parent
NAMESPACE = "shoot--bench--classes"
HOOK_SERVICE = "metal-machine-hooks.metal-machine-hooks"
Obj = dict[str, Any]


class Counting:
    """WSGI middleware: request body bytes and counts per path; optionally answers customize the old way."""

    def __init__(self, app: Callable[..., Any], *, everything: bool) -> None:
        self.app = app
        self.everything = everything
        self.bytes: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self.lock = threading.Lock()

    def reset(self) -> None:
        with self.lock:
            self.bytes.clear()
            self.calls.clear()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        length = int(environ.get("CONTENT_LENGTH") or 0)
        with self.lock:
            self.bytes[path] += length
            self.calls[path] += 1
        if self.everything and path == "/machineclass/customize":
            environ["wsgi.input"].read(length)
            body = json.dumps({"relatedResources": [
                {"apiVersion": "machine.sapcloud.io/v1alpha1", "resource": "machines", "namespace": NAMESPACE},
                {"apiVersion": "v1", "resource": "secrets", "namespace": NAMESPACE,
                 "labelSelector": {"matchLabels": {"metal-machine-hooks/credentials": "true"}}},
            ]}).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        return self.app(environ, start_response)


def _machine_template() -> Obj:
    """A Running Machine as a MachineSet fixture holds it (status, addresses, annotations the hooks write)."""
    body = json.loads((REPO / "tests" / "fixtures" / "machineset" / "sync-request.json").read_text())
    machine = copy.deepcopy(next(iter(body["children"]["Machine.machine.sapcloud.io/v1alpha1"].values())))
    meta = machine["metadata"]
    for key in ("uid", "resourceVersion", "generation", "creationTimestamp", "ownerReferences"):
        meta.pop(key, None)
    meta["namespace"] = NAMESPACE
    return machine


def _objects(classes: int, per_class: int, *, labelled: bool) -> list[Obj]:
    template = _machine_template()
    out: list[Obj] = []
    for c in range(classes):
        name = f"bench-class-{c}"
        out.append({"apiVersion": "machine.sapcloud.io/v1alpha1", "kind": "MachineClass",
                    "metadata": {"name": name, "namespace": NAMESPACE}, "provider": "EquinixMetal",
                    "providerSpec": {"metro": "da", "machineType": "c3.small.x86", "OS": "ubuntu_22_04",
                                     "billingCycle": "hourly", "projectID": str(uuid.UUID(int=c + 1)),
                                     "tags": [f"kubernetes.io/cluster/{NAMESPACE}"]},
                    "secretRef": {"name": "absent", "namespace": NAMESPACE}})
        for i in range(per_class):
            machine = copy.deepcopy(template)
            machine_name = f"{name}-m{i:04d}"
            machine["metadata"]["name"] = machine_name
            machine["metadata"]["labels"]["node"] = machine_name
            machine["spec"]["class"] = {"kind": "MachineClass", "name": name}
            if labelled:
                machine["metadata"]["labels"][machineclass.CLASS_LABEL] = machineclass.class_label_value(name)
            out.append(machine)
    return out


def _settle(mc: Metacontroller, counter: Counting, timeout: float) -> None:
    """Idle, and no new hook request for a while (events are dispatched on another thread)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = sum(counter.calls.values())
        mc.wait_idle(timeout=max(1.0, deadline - time.monotonic()))
        time.sleep(0.3)
        if sum(counter.calls.values()) == before:
            return
    raise TimeoutError("the class controller did not settle")


@contextmanager
def _quiet_logs() -> Iterator[None]:
    """One access line per hook call would drown the bench's output; the levels are restored afterwards."""
    loggers = [logging.getLogger(name) for name in ("hooks", "werkzeug")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def one_change(classes: int, per_class: int, *, before: bool, timeout: float = 120.0) -> Obj:
    """Class sync requests (count, bytes) that follow one Machine's annotation change."""
    with _quiet_logs():
        return _one_change(classes, per_class, before=before, timeout=timeout)


def _one_change(classes: int, per_class: int, *, before: bool, timeout: float) -> Obj:
    from werkzeug.serving import make_server

    app = create_app(Settings())
    counter = Counting(app.wsgi_app, everything=before)
    http = make_server("127.0.0.1", 0, counter, threaded=True)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    store = Store()
    store.load_yaml(sorted(p for p in (REPO / "kubernetes" / "crds").glob("*.yaml") if p.name != "kustomization.yaml"))
    controllers = [c for c in load_controllers(REPO / "metacontroller")
                   if c["metadata"]["name"] == "metal-machineclasses"]
    store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    for obj in _objects(classes, per_class, labelled=not before):
        store.create(obj)
    seed_auth_secrets(store, controllers, "bench-local-token")  # Settings() in code: no token checked
    mc = Metacontroller(store, controllers, service_urls={HOOK_SERVICE: f"http://127.0.0.1:{http.server_port}"},
                        backoff_cap=0.5)
    mc.start()
    try:
        _settle(mc, counter, timeout)
        counter.reset()
        machine = store.get("machine.sapcloud.io/v1alpha1", "Machine", "bench-class-0-m0000", NAMESPACE)
        machine["metadata"].setdefault("annotations", {})["bench/changed"] = "1"
        store.update(machine)
        _settle(mc, counter, timeout)
        machine_bytes = len(json.dumps(machine, separators=(",", ":")))
        return {"classes": classes, "machines_per_class": per_class, "class_syncs": counter.calls["/machineclass/sync"],
                "class_sync_bytes": counter.bytes["/machineclass/sync"], "machine_bytes": machine_bytes}
    finally:
        mc.stop()
        http.shutdown()


def measure(per_class: int = 100) -> Obj:
    out: Obj = {}
    for label, before in (("before", True), ("after", False)):
        out[label] = {f"{n}_classes": one_change(n, per_class, before=before) for n in (1, 10)}
    after = out["after"]
    out["class_sync_bytes_per_machine_change"] = {
        "one_class": after["1_classes"]["class_sync_bytes"],
        "ten_classes": after["10_classes"]["class_sync_bytes"],
        "ratio": round(after["10_classes"]["class_sync_bytes"] / max(1, after["1_classes"]["class_sync_bytes"]), 3),
        "before_one_class": out["before"]["1_classes"]["class_sync_bytes"],
        "before_ten_classes": out["before"]["10_classes"]["class_sync_bytes"],
    }
    return out


if __name__ == "__main__":
    print(json.dumps(measure(), indent=2))
