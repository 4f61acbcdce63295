"""End to end: a rolling update of the example MachineDeployment under the Metacontroller emulator.

Real hooks, the emulator applying their answers (InPlace MachineSets, OnDelete Machines, garbage collection), the
Metal simulator creating and deleting devices, Nodes joining, drain Jobs completing. The template switches to a
second MachineClass; every observed state keeps at most replicas + maxSurge Machines (counting ones still being
deleted) and at least replicas - maxUnavailable Running ones, and the rollout ends with every Machine on the new
class and every old device gone.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
CRDS = REPO / "kubernetes" / "crds"
EXAMPLES = REPO / "kubernetes" / "examples"
CONTROLLERS = REPO / "metacontroller"
MACHINE_API = "machine.sapcloud.io/v1alpha1"
NAME = "eqx-test-machine-deployment"
Obj = dict[str, Any]

NEEDED = [CRDS, EXAMPLES / "secret.yaml", EXAMPLES / "machine-class.yaml", EXAMPLES / "machine-deployment.yaml",
          CONTROLLERS / "machines.yaml", REPO / "emulator" / "metacontroller.py", REPO / "emulator" / "nodes.py",
          REPO / "emulator" / "jobs.py"]
pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not all(p.exists() for p in NEEDED), reason="emulator, CRDs or examples missing")]


def _docs(path: Path) -> list[Obj]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.fixture
def cluster(metal_sim_factory: Callable[..., Any]) -> Iterator[Obj]:
    from tests.emulator_support import real_cluster

    machine_class = next(d for d in _docs(EXAMPLES / "machine-class.yaml") if d.get("kind") == "MachineClass")
    token = yaml.safe_load((EXAMPLES / "secret.yaml").read_text())["stringData"]["apiToken"]
    sim = metal_sim_factory(tokens={token: [machine_class["providerSpec"]["projectID"]]})
    with real_cluster(sim.url, sim.base_url) as running:
        yield {"sim": sim.sim, "store": running.store, "mc": running.mc, "class": machine_class}


def test_rolling_update_to_a_new_class(cluster: Obj) -> None:
    store, mc, sim = cluster["store"], cluster["mc"], cluster["sim"]
    store.load_yaml([EXAMPLES / "secret.yaml", EXAMPLES / "machine-class.yaml"])
    if store.try_get(MACHINE_API, "MachineClass", "eqx-mc-v2", "default") is None:  # the examples may hold it
        second = copy.deepcopy(cluster["class"])
        second["metadata"] = {"name": "eqx-mc-v2", "namespace": "default"}
        store.create(second)
    deployment = yaml.safe_load((EXAMPLES / "machine-deployment.yaml").read_text())
    deployment["spec"]["minReadySeconds"] = 0
    store.create(deployment)

    def md(s: Any) -> Obj:
        return s.get(MACHINE_API, "MachineDeployment", NAME, "default")

    def machines(s: Any) -> list[Obj]:
        return s.list(MACHINE_API, "Machine", "default")

    def phase(m: Obj) -> str:
        return ((m.get("status") or {}).get("currentStatus") or {}).get("phase", "")

    mc.wait_for(lambda s: (md(s).get("status") or {}).get("availableReplicas") == 3, timeout=60,
                message="3 available")
    old_devices = {d["id"] for d in sim.devices()}
    assert len(old_devices) == 3

    seen: list[tuple[int, int]] = []

    def done(s: Any) -> bool:
        current = machines(s)
        running = [m for m in current if phase(m) == "Running" and not m["metadata"].get("deletionTimestamp")]
        seen.append((len(current), len(running)))
        status = md(s).get("status") or {}
        return (len(current) == 3 and all(m["spec"]["class"]["name"] == "eqx-mc-v2" for m in current)
                and status.get("updatedReplicas") == 3 and status.get("availableReplicas") == 3)

    updated = md(store)
    updated["spec"]["template"]["spec"]["class"]["name"] = "eqx-mc-v2"
    store.update(updated)
    mc.wait_for(done, timeout=60, message="rollout to eqx-mc-v2")

    assert max(total for total, _ in seen) <= 4, seen
    assert min(running for _, running in seen) >= 2, seen
    mc.wait_for(lambda s: not ({d["id"] for d in sim.devices()} & old_devices), timeout=60,
                message="old devices deleted")
    assert len(sim.devices()) == 3
    def conditions(s: Any) -> dict[str, tuple[str, str]]:
        return {c["type"]: (c["status"], c["reason"]) for c in (md(s).get("status") or {}).get("conditions", [])}

    final = {"Available": ("True", "MinimumReplicasAvailable"), "Progressing": ("True", "NewMachineSetAvailable")}
    mc.wait_for(lambda s: conditions(s) == final, timeout=60, message=f"conditions {final}")
    sets = store.list(MACHINE_API, "MachineSet", "default")
    assert sorted(s["spec"]["replicas"] for s in sets) == [0, 3]  # the old set is kept, empty, as history
