"""MachineDeployment sync hook: fixture-driven requests in Metacontroller's v2 composite shape.

The fixture is a deployment of 3 Machines on class metal-small whose template was just switched to metal-large.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hooks.config import Settings
from hooks.context import BadRequest, HookContext
from hooks.mcm import machinedeployment as md
from tests.crd_schema import status_problems

FIXTURES = Path(__file__).parent / "fixtures" / "machinedeployment"
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
NS = "shoot--demo--cluster"
OLD = "pool-a-l94pnkfm"
COMPOSITE_KEYS = {"status", "children", "resyncAfterSeconds", "finalized"}


def ctx(now: datetime = NOW) -> HookContext:
    return HookContext(settings=Settings(), metal=lambda token: None, clock=lambda: now)


def request() -> dict[str, Any]:
    return json.loads((FIXTURES / "sync-request.json").read_text())


def by_name(response: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["metadata"]["name"]: c for c in response["children"]}


def new_name(body: dict[str, Any]) -> str:
    return f"pool-a-{md.template_hash(body['parent']['spec']['template'])}"


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_template_change_creates_the_hash_named_set_and_steps_the_rollout() -> None:
    body = request()
    response = md.sync(body, ctx())
    assert set(response) <= COMPOSITE_KEYS
    children = by_name(response)
    new = children[new_name(body)]
    hash_ = md.template_hash(body["parent"]["spec"]["template"])
    assert new_name(body) == "pool-a-gwhwprln"  # fixed across runs and machines
    assert new["metadata"]["labels"] == {"name": "pool-a", md.HASH_LABEL: hash_}
    assert new["spec"]["selector"] == {"matchLabels": {"name": "pool-a", md.HASH_LABEL: hash_}}
    assert new["spec"]["template"]["metadata"]["labels"] == {"name": "pool-a", md.HASH_LABEL: hash_}
    assert new["spec"]["template"]["spec"]["class"]["name"] == "metal-large"
    assert new["metadata"]["annotations"] == {md.REVISION: "2", md.DESIRED: "3", md.MAX_REPLICAS: "4"}
    # maxSurge 1: one new machine; maxUnavailable 1: one old one may go in the same step.
    assert new["spec"]["replicas"] == 1
    assert children[OLD]["spec"]["replicas"] == 2
    assert children[OLD]["spec"]["template"]["spec"]["class"]["name"] == "metal-small"  # old sets keep their template
    assert md.LAST_APPLIED not in children[OLD]["metadata"]["annotations"]
    progressing = next(c for c in response["status"]["conditions"] if c["type"] == "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("True", "NewMachineSetCreated")
    assert progressing["lastTransitionTime"] == "2026-11-25T09:01:00Z"  # still True: transition time kept
    assert status_problems(response["status"], "MachineDeployment") == []


def test_template_hash_is_stable_across_python_processes() -> None:
    template = request()["parent"]["spec"]["template"]
    code = ("import json, sys; from hooks.mcm.machinedeployment import template_hash; "
            "print(template_hash(json.loads(sys.argv[1])))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code, json.dumps(template)], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parent.parent, env=env, timeout=60)
    assert out.stdout.strip() == md.template_hash(template)
    # The hash label itself never changes the hash (a set's template carries it).
    labelled = copy.deepcopy(template)
    labelled["metadata"]["labels"][md.HASH_LABEL] = "whatever"
    assert md.template_hash(labelled) == md.template_hash(template)


def test_same_request_twice_gives_the_same_response() -> None:
    assert md.sync(request(), ctx()) == md.sync(request(), ctx())


def test_status_written_back_is_stable() -> None:
    body = request()
    body["parent"]["spec"]["template"] = copy.deepcopy(
        body["children"][md.SET_KEY][f"{NS}/{OLD}"]["spec"]["template"])
    del body["parent"]["spec"]["template"]["metadata"]["labels"][md.HASH_LABEL]
    first = md.sync(body, ctx())
    assert [c["metadata"]["name"] for c in first["children"]] == [OLD]
    assert first["children"][0]["spec"]["replicas"] == 3
    body["parent"]["status"] = first["status"]
    later = md.sync(body, ctx(NOW + timedelta(hours=2)))
    assert later == first
    assert conditions(first["status"]) == {"Available": ("True", "MinimumReplicasAvailable"),
                                           "Progressing": ("True", "NewMachineSetAvailable")}


def test_both_surge_and_unavailable_zero_is_refused_with_a_condition() -> None:
    body = request()
    body["parent"]["spec"]["strategy"]["rollingUpdate"] = {"maxSurge": 0, "maxUnavailable": "0%"}
    response = md.sync(body, ctx())
    assert list(by_name(response)) == [OLD]
    assert by_name(response)[OLD]["spec"]["replicas"] == 3
    failure = next(c for c in response["status"]["conditions"] if c["type"] == "ReplicaFailure")
    assert (failure["status"], failure["reason"]) == ("True", "InvalidSpec")
    assert "maxSurge and maxUnavailable are both 0" in failure["message"]
    assert status_problems(response["status"], "MachineDeployment") == []


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda s: s["selector"].update(matchLabels={"name": "other"}), "is not matching"),
        (lambda s: s["template"]["spec"]["class"].pop("name"), "class.name: Required value"),
        (lambda s: s["strategy"].update(type="InPlaceUpdate"), "not supported"),
        (lambda s: s["strategy"]["rollingUpdate"].update(maxSurge="lots"), "integer or a percentage"),
    ],
)
def test_unusable_specs_change_no_set(change: Any, fragment: str) -> None:
    body = request()
    change(body["parent"]["spec"])
    response = md.sync(body, ctx())
    assert list(by_name(response)) == [OLD] and by_name(response)[OLD]["spec"]["replicas"] == 3
    assert fragment in next(c for c in response["status"]["conditions"] if c["type"] == "ReplicaFailure")["message"]


def test_progress_deadline_exceeded_is_reported_from_the_observed_condition() -> None:
    body = request()
    new = md.sync(body, ctx())["children"]
    observed = {}
    for child in new:
        obj = copy.deepcopy(child)
        obj["metadata"].setdefault("creationTimestamp", "2026-11-25T10:00:00Z")
        obj["metadata"]["uid"] = f"uid-{child['metadata']['name']}"
        replicas = obj["spec"]["replicas"]
        available = replicas if obj["metadata"]["name"] == OLD else 0
        obj["status"] = {"replicas": replicas, "availableReplicas": available, "readyReplicas": available}
        observed[f"{NS}/{obj['metadata']['name']}"] = obj
    body["children"][md.SET_KEY] = observed
    body["parent"]["status"] = {
        "replicas": 3, "updatedReplicas": 1, "readyReplicas": 2, "availableReplicas": 2, "unavailableReplicas": 1,
        "conditions": [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable", "message": "m",
             "lastUpdateTime": "2026-11-25T10:00:00Z", "lastTransitionTime": "2026-11-25T10:00:00Z"},
            {"type": "Progressing", "status": "True", "reason": "MachineSetUpdated", "message": "m",
             "lastUpdateTime": "2026-11-25T10:00:00Z", "lastTransitionTime": "2026-11-25T10:00:00Z"}]}
    early = md.sync(body, ctx(NOW + timedelta(minutes=4)))
    assert conditions(early["status"])["Progressing"] == ("True", "MachineSetUpdated")
    assert early["resyncAfterSeconds"] == 361.0  # re-check just after the 600 s deadline
    late = md.sync(body, ctx(NOW + timedelta(minutes=11)))
    assert conditions(late["status"])["Progressing"] == ("False", "ProgressDeadlineExceeded")
    assert "resyncAfterSeconds" not in late
    body["parent"]["spec"].pop("progressDeadlineSeconds")
    assert conditions(md.sync(body, ctx(NOW + timedelta(hours=5)))["status"])["Progressing"] == (
        "True", "MachineSetUpdated")


def test_replica_failure_of_the_new_set_is_shown_on_the_deployment() -> None:
    body = request()
    old = body["children"][md.SET_KEY][f"{NS}/{OLD}"]
    old["status"]["machineSetCondition"] = [
        {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": "1 machine failing",
         "lastTransitionTime": "2026-11-25T09:30:00Z"}]
    old["status"]["failedMachines"] = [{"name": "m1", "providerID": "", "ownerRef": OLD,
                                        "lastOperation": {"state": "Failed", "type": "Create",
                                                          "description": "no capacity"}}]
    status = md.sync(body, ctx())["status"]
    failure = next(c for c in status["conditions"] if c["type"] == "ReplicaFailure")
    assert (failure["reason"], failure["lastTransitionTime"]) == ("FailedCreate", "2026-11-25T09:30:00Z")
    assert status["failedMachines"][0]["name"] == "m1"
    assert status_problems(status, "MachineDeployment") == []


def test_a_deployment_being_deleted_changes_nothing() -> None:
    body = request()
    body["parent"]["metadata"]["deletionTimestamp"] = "2026-11-25T09:59:00Z"
    response = md.sync(body, ctx())
    assert list(by_name(response)) == [OLD] and by_name(response)[OLD]["spec"]["replicas"] == 3


def test_a_deployment_being_deleted_creates_no_machineset() -> None:
    # Kubernetes' syncDeployment and MCM's reconcileClusterMachineDeployment: a deployment with a deletionTimestamp
    # only gets its status synced (syncStatusOnly), whatever its sets; here it has none left and wants 3 Machines.
    body = request()
    body["parent"]["metadata"]["deletionTimestamp"] = "2026-11-25T09:59:00Z"
    body["children"][md.SET_KEY] = {}
    response = md.sync(body, ctx())
    assert response["children"] == []
    assert response["status"]["replicas"] == 0 and response["status"]["unavailableReplicas"] == 0
    del body["parent"]["metadata"]["deletionTimestamp"]
    body["parent"]["status"] = response["status"]
    assert [c["metadata"]["name"] for c in md.sync(body, ctx())["children"]] == [new_name(body)]  # alive: creates


def test_sets_deleted_under_the_deployment_are_recreated_only_after_the_status_says_so() -> None:
    # The garbage collector removed the sets of a deleted deployment, and this sync sees the deployment from a cache
    # that has not caught up: its last status still counts 3 Machines. Creating a set now would create Machines
    # for a deployment that is gone; writing the status first costs a live deployment one sync.
    body = request()
    assert body["parent"]["status"]["replicas"] == 3
    body["children"][md.SET_KEY] = {}
    held = md.sync(body, ctx())
    assert held["children"] == [] and held["status"]["replicas"] == 0
    assert held["resyncAfterSeconds"] == 1.0
    body["parent"]["status"] = held["status"]  # the write succeeded: the deployment exists
    again = md.sync(body, ctx())
    assert [c["metadata"]["name"] for c in again["children"]] == [new_name(body)]
    assert again["children"][0]["spec"]["replicas"] == 3


def test_a_deployment_being_deleted_neither_revives_nor_resizes_a_deleting_set() -> None:
    body = request()
    body["parent"]["metadata"]["deletionTimestamp"] = "2026-11-25T09:59:00Z"
    body["children"][md.SET_KEY][f"{NS}/{OLD}"]["metadata"]["deletionTimestamp"] = "2026-11-25T09:59:01Z"
    response = md.sync(body, ctx())
    assert response["children"] == []  # the deleting set is left to the garbage collector, no new one declared


@pytest.mark.parametrize("body", [{}, {"parent": {"metadata": {"name": "x", "namespace": "y"}}, "children": []}])
def test_malformed_requests_are_bad_requests(body: dict[str, Any]) -> None:
    with pytest.raises(BadRequest):
        md.sync(body, ctx())


def test_a_set_with_our_template_is_reused_whatever_its_name() -> None:
    body = request()
    old = body["children"][md.SET_KEY].pop(f"{NS}/{OLD}")
    old["metadata"]["name"] = "pool-a-1234567890"  # named by MCM
    old["spec"]["template"]["spec"]["class"]["name"] = "metal-large"  # already the deployment's template
    body["children"][md.SET_KEY][f"{NS}/pool-a-1234567890"] = old
    response = md.sync(body, ctx())
    assert list(by_name(response)) == ["pool-a-1234567890"]
    assert by_name(response)["pool-a-1234567890"]["spec"]["selector"] == old["spec"]["selector"]  # never changed


def test_a_name_held_by_another_template_is_not_overwritten() -> None:
    body = request()
    squatter = copy.deepcopy(body["children"][md.SET_KEY][f"{NS}/{OLD}"])
    squatter["metadata"].update(name=new_name(body), uid="squatter", creationTimestamp="2026-11-25T09:30:00Z")
    squatter["spec"]["template"]["metadata"]["annotations"] = {"edited": "by hand"}
    body["children"][md.SET_KEY][f"{NS}/{new_name(body)}"] = squatter
    response = md.sync(body, ctx())
    children = by_name(response)
    assert children[new_name(body)]["spec"]["template"] == squatter["spec"]["template"]  # left as it was
    created = [n for n in children if n not in (OLD, new_name(body))]
    assert len(created) == 1 and created[0].startswith("pool-a-")
    assert children[created[0]]["spec"]["template"]["spec"]["class"]["name"] == "metal-large"
    assert md.sync(body, ctx()) == response  # the same candidate every time
