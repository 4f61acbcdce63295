"""The drain ServiceAccount can only be used by drain Jobs: kubernetes/drain/admission-policy.yaml, evaluated.

The policy's CEL is run with a CEL interpreter against admission requests shaped as the API server sends them, so
each door an attacker in a Machine namespace would try is checked, not just the manifest's shape.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml

POLICY_FILE = Path(__file__).resolve().parent.parent / "kubernetes" / "drain" / "admission-policy.yaml"
METACONTROLLER = "system:serviceaccount:metacontroller:metacontroller"
JOB_CONTROLLER = "system:serviceaccount:kube-system:job-controller"
DRAIN_LABELS = {"app.kubernetes.io/name": "metal-machine-drain", "app.kubernetes.io/managed-by": "metal-machine-hooks"}


def _policy() -> dict[str, Any]:
    (policy,) = [d for d in yaml.safe_load_all(POLICY_FILE.read_text()) if d["kind"] == "ValidatingAdmissionPolicy"]
    return policy


def admit(resource: str, obj: dict[str, Any], user: str) -> list[str]:
    """The messages of every validation that denies this request ([] = admitted)."""
    spec = _policy()["spec"]
    env = celpy.Environment()
    request = {"resource": {"group": "batch" if resource == "jobs" else "", "version": "v1", "resource": resource},
               "operation": "CREATE", "userInfo": {"username": user}}
    variables: dict[str, Any] = {}

    def run(expression: str) -> Any:
        program = env.program(env.compile(expression))
        return program.evaluate({"object": celpy.json_to_cel(obj), "request": celpy.json_to_cel(request),
                                 "variables": celpy.json_to_cel(variables)})

    for variable in spec["variables"]:
        value = run(variable["expression"])
        variables[variable["name"]] = value if isinstance(value, str) else bool(value)
    return [v["message"] for v in spec["validations"] if not bool(run(v["expression"]))]


def _pod(account: str = "metal-machine-drain", owners: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "p", "namespace": "team-a"}
    if owners is not None:
        meta["ownerReferences"] = owners
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"serviceAccountName": account, "containers": [{"name": "c", "image": "i"}]}}


def _job(account: str = "metal-machine-drain", labels: dict[str, str] | None = None) -> dict[str, Any]:
    pod_spec = {"serviceAccountName": account, "containers": [{"name": "c", "image": "i"}]}
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "drain-m-1", "namespace": "team-a", "labels": labels or {}},
            "spec": {"template": {"spec": pod_spec}}}


JOB_OWNER = [{"apiVersion": "batch/v1", "kind": "Job", "name": "drain-m-1", "uid": "u", "controller": True}]


def test_the_drain_jobs_own_pods_are_admitted() -> None:
    assert admit("jobs", _job(labels=DRAIN_LABELS), METACONTROLLER) == []
    assert admit("pods", _pod(owners=JOB_OWNER), JOB_CONTROLLER) == []


@pytest.mark.parametrize(
    ("resource", "obj", "user"),
    [
        ("pods", _pod(), "alice"),  # a bare pod running as the account
        ("pods", _pod(owners=JOB_OWNER), "alice"),  # a forged owner reference does not make the Job controller
        ("pods", _pod(owners=[{**JOB_OWNER[0], "kind": "ReplicaSet"}]), JOB_CONTROLLER),
        ("jobs", _job(labels=DRAIN_LABELS), "alice"),  # a user's own Job with the drain labels
        ("jobs", _job(labels=DRAIN_LABELS), "system:serviceaccount:kube-system:cronjob-controller"),
        ("jobs", _job(), METACONTROLLER),  # Metacontroller, but not a drain Job
    ],
    ids=["bare-pod", "forged-owner", "not-a-job-owner", "user-job", "cronjob", "unlabelled-job"],
)
def test_every_other_way_to_run_as_the_drain_account_is_denied(resource: str, obj: dict[str, Any], user: str) -> None:
    assert admit(resource, obj, user), f"{resource} by {user} was admitted"


def test_no_token_secret_can_be_minted_for_the_drain_account() -> None:
    token = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
             "metadata": {"name": "t", "annotations": {"kubernetes.io/service-account.name": "metal-machine-drain"}}}
    assert admit("secrets", token, "alice")
    other = {**token, "metadata": {"name": "t", "annotations": {"kubernetes.io/service-account.name": "default"}}}
    assert admit("secrets", other, "alice") == []
    assert admit("secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}, "alice") == []


def test_other_accounts_are_left_alone() -> None:
    assert admit("pods", _pod(account="default"), "alice") == []
    assert admit("pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}}, "alice") == []
    assert admit("jobs", _job(account="builder"), "alice") == []
