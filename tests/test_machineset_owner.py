"""A MachineSet creates no Machine while it, or the MachineDeployment that controls it, is being deleted.

Mirrors MCM's reconcileClusterMachineSet (manageReplicas only without a deletionTimestamp, on a set read with an
uncached GET) and Kubernetes' ReplicaSet syncReplicaSet (same rule). A hook cannot read uncached, so the set
controller relates its owner (customize) and the sync holds while that owner is deleting, gone or replaced.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from hooks.config import Settings
from hooks.context import HookContext
from hooks.mcm import machineset
from hooks.mcm import vocabulary as mcm
from hooks.server.app import create_app
from tests.crd_schema import status_problems

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "machineset" / "sync-request.json"
CONTROLLER = yaml.safe_load((REPO / "metacontroller" / "machinesets.yaml").read_text())
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
NS = "shoot--demo--cluster"
OWNER = "pool-a"
OWNER_UID = "9a8b7c6d-0000-4000-8000-000000000001"  # the fixture set's ownerReference
OBSERVED = ["pool-a-x5xfgfj5-b2c4d", "pool-a-x5xfgfj5-k7m9q", "pool-a-x5xfgfj5-z8x6w"]
Obj = dict[str, Any]


def ctx() -> HookContext:
    return HookContext(settings=Settings(), metal=lambda token: None, clock=lambda: NOW)


def deployment(**meta: Any) -> Obj:
    return {"apiVersion": mcm.API_VERSION, "kind": "MachineDeployment",
            "metadata": {"name": OWNER, "namespace": NS, "uid": OWNER_UID, **meta}, "spec": {"replicas": 6}}


def request(owner: Obj | None, *, replicas: int = 6) -> Obj:
    """The fixture set wanting more Machines, from a controller configured as ours, relating `owner` (or none)."""
    body = json.loads(FIXTURE.read_text())
    body["controller"] = copy.deepcopy(CONTROLLER)
    body["parent"]["spec"]["replicas"] = replicas
    body["related"] = {mcm.MACHINEDEPLOYMENT_KEY: {f"{NS}/{OWNER}": owner}} if owner is not None else {}
    return body


def names(response: Obj) -> list[str]:
    return sorted(c["metadata"]["name"] for c in response["children"])


def test_a_live_owner_lets_the_set_scale_up() -> None:
    response = machineset.sync(request(deployment()), ctx())
    assert len(response["children"]) > 2  # the control case: the tests below would fail without the owner rule
    assert response["status"]["lastOperation"]["description"].startswith("Creating")


@pytest.mark.parametrize(("owner", "why"), [
    (deployment(deletionTimestamp="2026-11-25T09:59:00Z"), "its MachineDeployment pool-a is being deleted"),
    (None, "its MachineDeployment pool-a is gone"),
    (deployment(uid="another-uid"), "its MachineDeployment pool-a is gone (the one of that name now is another"),
])
def test_a_set_whose_deployment_is_deleting_or_gone_creates_and_removes_nothing(owner: Obj | None, why: str) -> None:
    response = machineset.sync(request(owner), ctx())
    assert names(response) == OBSERVED  # every observed Machine kept as it is (the Failed one too), none created
    operation = response["status"]["lastOperation"]
    assert operation["description"] == f"No machine created or deleted: {why}" or why in operation["description"]
    assert status_problems(response["status"], "MachineSet") == []
    assert 0 < response["resyncAfterSeconds"] <= machineset.OWNER_RECHECK_SECONDS  # a lagging cache is looked at again


def test_a_set_being_deleted_creates_nothing_even_with_no_machine_left() -> None:
    body = request(deployment())
    body["parent"]["metadata"]["deletionTimestamp"] = "2026-11-25T09:59:00Z"
    body["children"] = {machineset.MACHINE_KEY: {}}
    response = machineset.sync(body, ctx())
    assert response["children"] == []
    assert response["status"]["lastOperation"]["description"] == (
        "No machine created or deleted: the MachineSet is being deleted")


def test_without_a_customize_hook_the_owner_is_not_required() -> None:
    # Metacontroller only sends `related` when the controller has a customize hook: an older manifest (or a
    # hand-written request) relates nothing, so a missing owner there says nothing about the owner.
    body = request(None)
    del body["controller"]["spec"]["hooks"]["customize"]
    assert len(machineset.sync(body, ctx())["children"]) > 2


def test_a_set_without_a_deployment_owner_ignores_related_objects() -> None:
    body = request(None)
    body["parent"]["metadata"].pop("ownerReferences")
    assert len(machineset.sync(body, ctx())["children"]) > 2
    rules = machineset.customize({"controller": CONTROLLER, "parent": body["parent"]}, ctx())["relatedResources"]
    assert [r["resource"] for r in rules] == ["machines"]  # only the deployment's Machines (hooks/mcm/fail_permit.py)


def test_customize_relates_the_controlling_deployment_by_name_in_the_sets_namespace() -> None:
    parent = request(None)["parent"]
    client = create_app(Settings()).test_client()
    answer = client.post("/machineset/customize", json={"controller": CONTROLLER, "parent": parent})
    assert answer.status_code == 200
    assert answer.get_json() == {"relatedResources": [
        {"apiVersion": mcm.API_VERSION, "resource": "machinedeployments", "namespace": NS, "names": [OWNER]},
        {"apiVersion": mcm.API_VERSION, "resource": "machines", "namespace": NS,
         "labelSelector": {"matchLabels": {"name": "pool-a"}}}]}
    assert client.post("/machineset/customize", json={"parent": None}).status_code == 400


# ---------------------------------------------------------------------------- end to end, under the emulator


@pytest.fixture
def cluster(metal_sim_factory: Callable[..., Any]) -> Iterator[Obj]:
    from tests.emulator_support import real_cluster

    examples = REPO / "kubernetes" / "examples"
    machine_class = next(d for d in yaml.safe_load_all((examples / "machine-class.yaml").read_text())
                         if d and d.get("kind") == "MachineClass")
    token = yaml.safe_load((examples / "secret.yaml").read_text())["stringData"]["apiToken"]
    sim = metal_sim_factory(tokens={token: [machine_class["providerSpec"]["projectID"]]})
    with real_cluster(sim.url, sim.base_url) as running:
        running.store.load_yaml([examples / "secret.yaml", examples / "machine-class.yaml"])
        deployment_ = yaml.safe_load((examples / "machine-deployment.yaml").read_text())
        deployment_["metadata"]["finalizers"] = ["tests.example/hold"]  # keeps it deleting, as foreground GC does
        deployment_["spec"]["minReadySeconds"] = 0
        running.store.create(deployment_)
        yield {"sim": sim.sim, "store": running.store, "mc": running.mc, "name": deployment_["metadata"]["name"]}


@pytest.mark.slow  # a deployment of three Machines under the emulated Metacontroller
def test_a_machine_lost_while_its_deployment_is_deleting_is_not_replaced(cluster: Obj) -> None:
    store, mc, sim, name = cluster["store"], cluster["mc"], cluster["sim"], cluster["name"]

    def machines(s: Any) -> list[Obj]:
        return s.list(mcm.API_VERSION, "Machine", "default")

    def the_set(s: Any) -> Obj:
        return next(iter(s.list(mcm.API_VERSION, "MachineSet", "default")), {})

    mc.wait_for(lambda s: (s.get(mcm.API_VERSION, "MachineDeployment", name, "default").get("status") or {})
                .get("availableReplicas") == 3, timeout=60, message="3 available")
    before = {m["metadata"]["name"] for m in machines(store)}
    store.delete(mcm.API_VERSION, "MachineDeployment", name, "default")  # held by its finalizer: deleting
    victim = sorted(before)[0]
    store.delete(mcm.API_VERSION, "Machine", victim, "default")  # finalize drains, deletes the device, lets go
    mc.wait_for(lambda s: victim not in {m["metadata"]["name"] for m in machines(s)}, timeout=60,
                message="the deleted Machine gone")
    syncs = len(mc.hook_calls("metal-machinesets", hook="sync"))
    mc.wait_for(lambda s: len(mc.hook_calls("metal-machinesets", hook="sync")) > syncs
                and (the_set(s).get("status") or {}).get("replicas") is not None, timeout=60,
                message="a set sync after the Machine went")

    assert {m["metadata"]["name"] for m in machines(store)} == before - {victim}  # nothing created in its place
    assert len(sim.devices()) == 2
    assert "is being deleted" in the_set(store)["status"]["lastOperation"]["description"]
