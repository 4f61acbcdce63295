"""The drain ServiceAccount can only be used by drain Jobs: kubernetes/drain/admission-policy.yaml, evaluated.

The policy's CEL is run with a CEL interpreter against admission requests shaped as the API server sends them, so
each door an attacker in a Machine namespace would try is checked, not just the manifest's shape.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from hooks.config import DrainSettings
from hooks.mcm import drain_job
from hooks.target import jobs
from tests import admission_policy as policy

POLICY_FILE = Path(__file__).resolve().parent.parent / "kubernetes" / "drain" / "admission-policy.yaml"
METACONTROLLER = "system:serviceaccount:metacontroller:metacontroller"
JOB_CONTROLLER = "system:serviceaccount:kube-system:job-controller"
DRAIN_LABELS = {"app.kubernetes.io/name": "metal-machine-drain", "app.kubernetes.io/managed-by": "metal-machine-hooks"}


def admit(resource: str, obj: dict[str, Any], user: str) -> list[str]:
    """The messages of every validation that denies this request ([] = admitted)."""
    return policy.admit(POLICY_FILE, resource, obj, user)


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


# ------------------------------------------------------------------------------------ the target kubeconfig mount

MACHINE = {"metadata": {"name": "m-1", "namespace": "team-a", "uid": "m-uid"}}
SA_TOKEN_VOLUME = {"name": "kube-api-access-x1y2z", "projected": {"sources": [
    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
    {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}}
SA_TOKEN_MOUNT = {"name": "kube-api-access-x1y2z", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                  "readOnly": True}


def _declared(mounted: bool = True) -> dict[str, Any]:
    """The drain Job exactly as the hooks declare it, in a namespace with a target cluster or without."""
    job = drain_job.build_job(MACHINE, "m-1", DrainSettings())
    return jobs.mount(job, "target-kubeconfig") if mounted else job


def _pod_of(job: dict[str, Any]) -> dict[str, Any]:
    """The Job's pod as the Job controller creates it, after the ServiceAccount admission added the token volume."""
    spec = copy.deepcopy(job["spec"]["template"]["spec"])
    spec.setdefault("volumes", []).append(SA_TOKEN_VOLUME)
    for container in spec["containers"]:
        container.setdefault("volumeMounts", []).append(SA_TOKEN_MOUNT)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "m-1-drain-abcde", "namespace": "team-a",
                                                            "ownerReferences": JOB_OWNER}, "spec": spec}


@pytest.mark.parametrize("mounted", [True, False], ids=["two-clusters", "one-cluster"])
def test_the_declared_drain_job_and_its_pod_are_admitted_with_or_without_the_target_mount(mounted: bool) -> None:
    job = _declared(mounted)
    assert admit("jobs", job, METACONTROLLER) == []
    assert admit("pods", _pod_of(job), JOB_CONTROLLER) == []


def _changed(change: str) -> dict[str, Any]:
    job = _declared()
    pod, container = job["spec"]["template"]["spec"], job["spec"]["template"]["spec"]["containers"][0]
    if change == "host-path":
        pod["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
        container["volumeMounts"].append({"name": "host", "mountPath": "/host", "readOnly": True})
    elif change == "other-secret":
        pod["volumes"].append({"name": "creds", "secret": {"secretName": "metal-credentials"}})
    elif change == "whole-secret":  # the target volume, but every key of the Secret instead of `kubeconfig`
        del pod["volumes"][0]["secret"]["items"]
    elif change == "writable":
        container["volumeMounts"][0]["readOnly"] = False
    elif change == "elsewhere":
        container["volumeMounts"][0]["mountPath"] = "/etc"
    elif change == "kubeconfig-elsewhere":
        next(e for e in container["env"] if e["name"] == "KUBECONFIG")["value"] = "/tmp/kubeconfig"
    elif change == "env-from":
        container["envFrom"] = [{"secretRef": {"name": "metal-credentials"}}]
    elif change == "foreign-projection":
        pod["volumes"].append({"name": "kube-api-access-evil", "projected": {"sources": [
            {"secret": {"name": "metal-credentials"}}]}})
    return job


CHANGES = ["host-path", "other-secret", "whole-secret", "writable", "elsewhere", "kubeconfig-elsewhere", "env-from",
           "foreign-projection"]


@pytest.mark.parametrize("change", CHANGES)
def test_anything_mounted_beyond_the_target_kubeconfig_is_refused(change: str) -> None:
    job = _changed(change)
    for resource, obj, user in (("jobs", job, METACONTROLLER), ("pods", _pod_of(job), JOB_CONTROLLER)):
        denied = admit(resource, obj, user)
        assert len(denied) == 1 and "mounts only the target kubeconfig" in denied[0], (resource, denied)
    assert admit("jobs", {**job, "spec": {"template": {"spec": {
        **job["spec"]["template"]["spec"], "serviceAccountName": "builder"}}}}, "alice") == []  # other accounts: free
