"""Part 3: hook time for large parents, a MachineSet with 1,000 Machines and a MachineDeployment with 10 MachineSets.

Measured in-process (no HTTP), because the question is what the hook costs per sync on this machine: decoding
the request JSON, the hook function, encoding the answer. Each is reported apart, plus the sizes. The requests
are the repository's fixtures scaled up; the children carry the status a steady Machine really has (taken from
the part 1 Machine when given), so the request is as large as Metacontroller would send.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hooks.config import Settings
from hooks.context import HookContext
from hooks.mcm import machinedeployment, machineset

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
MACHINE_KEY = "Machine.machine.sapcloud.io/v1alpha1"
SET_KEY = "MachineSet.machine.sapcloud.io/v1alpha1"
Obj = dict[str, Any]


def _fixture(kind: str) -> Obj:
    return json.loads((FIXTURES / kind / "sync-request.json").read_text())


def machineset_request(children: int, steady_machine: Obj | None = None) -> Obj:
    """A MachineSet sync with `children` Running Machines, each shaped like `steady_machine` when given."""
    body = _fixture("machineset")
    observed = list(body["children"][MACHINE_KEY].values())
    template = copy.deepcopy(observed[0])
    if steady_machine is not None:
        template["status"] = copy.deepcopy(steady_machine.get("status") or template["status"])
        for key in ("labels", "annotations"):
            merged = {**(steady_machine["metadata"].get(key) or {}), **(template["metadata"].get(key) or {})}
            template["metadata"][key] = merged
    parent = body["parent"]
    parent["spec"]["replicas"] = children
    for key in ("desired-replicas", "max-replicas"):
        parent["metadata"]["annotations"][f"deployment.kubernetes.io/{key}"] = str(children)
    machines = {}
    for i in range(children):
        child = copy.deepcopy(template)
        name = f"{parent['metadata']['name']}-{i:05d}"
        child["metadata"]["name"] = name
        child["metadata"]["uid"] = str(uuid.UUID(int=0x11110000_0000_4000_8000_000000000000 + i))
        child["metadata"]["labels"]["node"] = name
        device = str(uuid.UUID(int=0x0F3A0000_0000_4000_8000_000000000000 + i))
        child["metadata"]["annotations"]["metal-machine-hooks/device-id"] = device
        child["spec"]["providerID"] = f"equinixmetal://da/{device}"
        machines[f"{child['metadata']['namespace']}/{name}"] = child
    body["children"][MACHINE_KEY] = machines
    return body


def machinedeployment_request(sets: int) -> Obj:
    """A MachineDeployment sync with its current MachineSet and `sets - 1` older ones scaled to zero (history)."""
    body = _fixture("machinedeployment")
    current = next(iter(body["children"][SET_KEY].values()))
    children = {}
    for i in range(sets - 1):
        old = copy.deepcopy(current)
        old_hash = f"old{i:05d}"
        meta = old["metadata"]
        meta["name"] = f"{body['parent']['metadata']['name']}-{old_hash}"
        meta["uid"] = str(uuid.UUID(int=0x3F6B0000_0000_4000_8000_000000000000 + i))
        meta["labels"]["machine-template-hash"] = old_hash
        meta["annotations"]["deployment.kubernetes.io/revision"] = str(i + 1)
        meta["creationTimestamp"] = f"2026-11-2{i % 5}T0{i % 9}:00:00Z"
        old["spec"]["replicas"] = 0
        old["spec"]["selector"]["matchLabels"]["machine-template-hash"] = old_hash
        old["spec"]["template"]["metadata"]["labels"]["machine-template-hash"] = old_hash
        old["spec"]["template"]["spec"]["class"]["name"] = f"metal-old-{i}"
        old["status"] = {"observedGeneration": 1, "replicas": 0}
        children[f"{meta['namespace']}/{meta['name']}"] = old
    current["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = str(sets)
    children[f"{current['metadata']['namespace']}/{current['metadata']['name']}"] = current
    body["children"][SET_KEY] = children
    return body


def _steady(body: Obj, hook: Callable[[Obj, HookContext], Obj], ctx: HookContext) -> Obj:
    """Apply the hook's status to the parent twice, as Metacontroller would, so the timed syncs are steady ones."""
    for _ in range(2):
        answer = hook(copy.deepcopy(body), ctx)
        if answer.get("status") is not None:
            body["parent"]["status"] = answer["status"]
    return body


def time_hook(body: Obj, hook: Callable[[Obj, HookContext], Obj], path: str, *, repeats: int,
              ctx: HookContext) -> Obj:
    """p50 over `repeats` syncs of the same request: through the hook app in-process (JSON provider, logging,
    metrics, everything but the socket), and split into decode, hook function and encode; plus the sizes."""
    from hooks.server.app import create_app

    body = _steady(body, hook, ctx)
    app = create_app(ctx.settings, metal=ctx.metal, clock=ctx.clock)
    client = app.test_client()
    codec = app.json
    raw = json.dumps(body).encode()
    decode, run, encode, served = [], [], [], []
    answer: Obj = {}
    out = ""
    for _ in range(repeats):
        t0 = time.perf_counter()
        parsed = codec.loads(raw)
        t1 = time.perf_counter()
        answer = hook(parsed, ctx)
        t2 = time.perf_counter()
        out = codec.dumps(answer, separators=(",", ":"))
        t3 = time.perf_counter()
        response = client.post(path, data=raw, content_type="application/json")
        t4 = time.perf_counter()
        if response.status_code != 200:
            raise RuntimeError(f"{path} answered {response.status_code}: {response.get_data(as_text=True)[:300]}")
        decode.append(t1 - t0)
        run.append(t2 - t1)
        encode.append(t3 - t2)
        served.append(t4 - t3)

    def ms(values: list[float]) -> float:
        return round(statistics.median(values) * 1000, 3)

    children = answer.get("children")
    return {
        "hook_time_ms": ms(served),
        # The best run: what the code costs when nothing else on this shared machine gets in the way.
        "hook_time_min_ms": round(min(served) * 1000, 3),
        "decode_ms": ms(decode),
        "hook_function_ms": ms(run),
        "encode_ms": ms(encode),
        "json_library": type(codec).__name__ + (" (orjson)" if _orjson() else " (stdlib json)"),
        "request_bytes": len(raw),
        "response_bytes": len(out.encode()),
        "repeats": repeats,
        "children_answered": len(children) if isinstance(children, list) else 0,
    }


def _orjson() -> bool:
    from hooks.server import jsonio

    return getattr(jsonio, "orjson", None) is not None


def measure(steady_machine: Obj | None = None, *, repeats: int = 30) -> Obj:
    # The app logs one JSON line per call, as in production; here it goes to /dev/null instead of the terminal.
    with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
        return _measure(steady_machine, repeats)


def _measure(steady_machine: Obj | None, repeats: int) -> Obj:
    ctx = HookContext(settings=Settings(), metal=lambda token: None)
    ms_result = time_hook(machineset_request(1000, steady_machine), machineset.sync, "/machineset/sync",
                          repeats=repeats, ctx=ctx)
    md_result = time_hook(machinedeployment_request(10), machinedeployment.sync, "/machinedeployment/sync",
                          repeats=repeats * 10, ctx=ctx)
    return {"machineset_1000": ms_result, "machinedeployment_10": md_result}
