"""Machine requests for a fleet, and a driver that plays Metacontroller and the kubelets for the Machine hook.

Why a driver and not the Metacontroller emulator: the API-call figures must count what the Machine hook itself
costs, one sync per Machine per round, without watch-triggered extra syncs or customize calls in between. The
requests are the repository's fixture (shaped exactly like Metacontroller's) with a per-Machine name and uid.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "machine"
CLASS_KEY = "MachineClass.machine.sapcloud.io/v1alpha1"
SECRET_KEY = "Secret.v1"
NODE_KEY = "Node.v1"
Obj = dict[str, Any]


def _fixture(name: str) -> Obj:
    return json.loads((FIXTURES / name).read_text())


_SYNC = _fixture("sync-request.json")
_NODE = _fixture("node-ready.json")


def machine_request(index: int, project_id: str, token: str, *, prefix: str = "bench") -> Obj:
    """A first sync request for Machine number `index` of the fleet: no device, no Node, empty status."""
    import base64

    body = copy.deepcopy(_SYNC)
    meta = body["object"]["metadata"]
    meta["name"] = f"{prefix}-{index:05d}"
    meta["uid"] = str(uuid.UUID(int=0xB0000000_0000_4000_8000_000000000000 + index))
    # Hooks run on the wall clock here: a fixture timestamp from the past would trip the creation timeout.
    meta["creationTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body["object"].pop("status", None)
    for cls in body["related"][CLASS_KEY].values():
        cls["providerSpec"]["projectID"] = project_id
    for secret in body["related"][SECRET_KEY].values():
        secret["data"]["apiToken"] = base64.b64encode(token.encode()).decode()
    body["related"][NODE_KEY] = {}
    return body


def ready_node(name: str, device_id: str) -> Obj:
    node = copy.deepcopy(_NODE)
    node["metadata"]["name"] = name
    node["metadata"]["labels"] = {"kubernetes.io/hostname": name, "node.gardener.cloud/machine-name": name}
    node["spec"]["providerID"] = f"equinixmetal://ny/{device_id}"
    return node


def apply(body: Obj, response: Obj) -> Obj:
    """What Metacontroller does with a decorator answer: merge labels/annotations (None deletes), replace status."""
    body = copy.deepcopy(body)
    meta = body["object"]["metadata"]
    for key in ("labels", "annotations"):
        current = meta.setdefault(key, {})
        for name, value in (response.get(key) or {}).items():
            if value is None:
                current.pop(name, None)
            else:
                current[name] = value
    if response.get("status") is not None:
        body["object"]["status"] = response["status"]
    return body


def phase(body: Obj) -> str:
    return ((body["object"].get("status") or {}).get("currentStatus") or {}).get("phase", "")


def device_id(body: Obj) -> str | None:
    return (body["object"]["metadata"].get("annotations") or {}).get("metal-machine-hooks/device-id")


class Fleet:
    """N Machines driven to Running through `sync` (a function: request body -> decorator answer).

    `active(device_ids)` tells which devices are active at the provider (the kubelet's view); a Machine whose
    device is active gets its Ready Node in the next request, as a joining kubelet would make happen.
    """

    def __init__(self, bodies: list[Obj], sync: Callable[[Obj], Obj],
                 active: Callable[[set[str]], set[str]]) -> None:
        self.bodies = bodies
        self.sync = sync
        self.active = active
        self.hook_calls = 0

    def round(self, *, only_unready: bool = True) -> int:
        """One sync of every Machine (or every one not Running yet); returns how many were synced."""
        synced = 0
        for i, body in enumerate(self.bodies):
            if only_unready and phase(body) == "Running":
                continue
            self.bodies[i] = apply(body, self.sync(body))
            self.hook_calls += 1
            synced += 1
        self._join_nodes()
        return synced

    def _join_nodes(self) -> None:
        waiting = {device_id(b): b for b in self.bodies if device_id(b) and not b["related"].get(NODE_KEY)}
        for dev in self.active({d for d in waiting if d}):
            body = waiting[dev]
            name = body["object"]["metadata"]["name"]
            body["related"][NODE_KEY] = {name: ready_node(name, dev)}

    def converge(self, max_rounds: int = 20) -> int:
        """Rounds until every Machine is Running; raises if that does not happen within max_rounds."""
        for rounds in range(1, max_rounds + 1):
            self.round()
            if all(phase(b) == "Running" for b in self.bodies):
                return rounds
        phases = sorted({phase(b) for b in self.bodies})
        raise RuntimeError(f"fleet not Running after {max_rounds} rounds (phases seen: {phases})")
