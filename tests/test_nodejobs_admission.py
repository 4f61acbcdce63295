"""The Node-side ServiceAccounts are usable only by their own Jobs: kubernetes/node-jobs/admission-policy.yaml,
evaluated with a CEL interpreter against admission requests shaped as the API server sends them (as
tests/test_drain_admission.py does for the drain account), door by door."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hooks.mcm import bootstrap, node_jobs
from hooks.target import jobs
from tests import admission_policy as policy

POLICY_FILE = Path(__file__).resolve().parent.parent / "kubernetes" / "node-jobs" / "admission-policy.yaml"
METACONTROLLER = "system:serviceaccount:metacontroller:metacontroller"
JOB_CONTROLLER = "system:serviceaccount:kube-system:job-controller"
TOKEN_USER = "system:serviceaccount:shoot:metal-machine-bootstrap-token"
JOB_OWNER = [{"apiVersion": "batch/v1", "kind": "Job", "name": "m-1-token", "uid": "u", "controller": True}]
MACHINE = {"metadata": {"name": "m-1", "namespace": "shoot", "uid": "m-uid",
                        "creationTimestamp": "2026-12-03T10:00:00Z"}}


def admit(resource: str, obj: dict[str, Any] | None, user: str, operation: str = "CREATE",
          old: dict[str, Any] | None = None) -> list[str]:
    """The messages of every validation that denies this request ([] = admitted)."""
    return policy.admit(POLICY_FILE, resource, obj, user, operation, old)


def _declared(step: str) -> dict[str, Any]:
    """A Job exactly as the hooks declare it for `step`."""
    name, args = f"m-1-{step}", ["token", "create"] if step.startswith("token") else ["node", "sync", "m-1"]
    return node_jobs.build_job(MACHINE, step, name, args, node_jobs.NodeJobSettings())


def _pod_of(job: dict[str, Any], owners: list[dict[str, Any]] | None = JOB_OWNER) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "p", "namespace": "shoot"}
    if owners is not None:
        meta["ownerReferences"] = owners
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": job["spec"]["template"]["spec"]}


def _token_secret(**changes: Any) -> dict[str, Any]:
    token = bootstrap.derive(b"k" * 40, "m-uid")
    secret = bootstrap.token_secret(token, "m-1", "m-uid", datetime(2026, 12, 3, tzinfo=UTC))
    secret.pop("stringData")
    secret["data"] = {"token-id": "eHh4"}
    secret.update(changes)
    return secret


@pytest.mark.parametrize("step", [node_jobs.TOKEN_CREATE, node_jobs.TOKEN_DELETE, node_jobs.NODE_SYNC,
                                  node_jobs.NODE_TERMINATING, node_jobs.NODE_REMOVE])
def test_the_hooks_jobs_and_their_pods_are_admitted(step: str) -> None:
    job = _declared(step)
    assert admit("jobs", job, METACONTROLLER) == []
    assert admit("pods", _pod_of(job), JOB_CONTROLLER) == []


def test_the_token_job_creates_and_deletes_its_bootstrap_token() -> None:
    assert admit("secrets", _token_secret(), TOKEN_USER) == []
    assert admit("secrets", None, TOKEN_USER, "DELETE", old=_token_secret()) == []


TOKEN_JOB = _declared(node_jobs.TOKEN_CREATE)
NODE_JOB = _declared(node_jobs.NODE_SYNC)


def _with_labels(job: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    return {**job, "metadata": {**job["metadata"], "labels": labels}}


def _user_pod_reading_key(how: str) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "c", "image": "i"}
    spec: dict[str, Any] = {"serviceAccountName": "default", "containers": [container]}
    if how == "volume":
        spec["volumes"] = [{"name": "k", "secret": {"secretName": bootstrap.DEFAULT_KEY_SECRET}}]
    elif how == "projected":
        source = {"secret": {"name": bootstrap.DEFAULT_KEY_SECRET}}
        spec["volumes"] = [{"name": "k", "projected": {"sources": [source]}}]
    elif how == "env":
        container["env"] = [{"name": "K", "valueFrom": {"secretKeyRef": {"name": bootstrap.DEFAULT_KEY_SECRET,
                                                                         "key": "key"}}}]
    else:
        spec["initContainers"] = [{"name": "i", "image": "i", "envFrom": [{"secretRef": {
            "name": bootstrap.DEFAULT_KEY_SECRET}}]}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "shoot"}, "spec": spec}


@pytest.mark.parametrize(
    ("resource", "obj", "user", "operation", "old"),
    [
        ("pods", _pod_of(TOKEN_JOB, None), "alice", "CREATE", None),
        ("pods", _pod_of(NODE_JOB), "alice", "CREATE", None),  # a forged owner reference
        ("pods", _pod_of(NODE_JOB, [{**JOB_OWNER[0], "kind": "ReplicaSet"}]), JOB_CONTROLLER, "CREATE", None),
        ("jobs", TOKEN_JOB, "alice", "CREATE", None),
        ("jobs", _with_labels(TOKEN_JOB, {"app.kubernetes.io/name": "metal-machine-node"}), METACONTROLLER,
         "CREATE", None),  # a token Job dressed as a node Job
        ("jobs", _with_labels(NODE_JOB, {}), METACONTROLLER, "CREATE", None),
        ("pods", _user_pod_reading_key("volume"), "alice", "CREATE", None),
        ("pods", _user_pod_reading_key("projected"), "alice", "CREATE", None),
        ("pods", _user_pod_reading_key("env"), "alice", "CREATE", None),
        ("pods", _user_pod_reading_key("envFrom"), "alice", "CREATE", None),
        ("secrets", {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
                     "metadata": {"name": "t", "annotations": {
                         "kubernetes.io/service-account.name": "metal-machine-bootstrap-token"}}},
         "alice", "CREATE", None),
        ("secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cloudprovider"}}, TOKEN_USER,
         "CREATE", None),  # any other Secret in kube-system
        ("secrets", _token_secret(metadata={"name": "bootstrap-token-abcdef", "namespace": "kube-system"}),
         TOKEN_USER, "CREATE", None),  # a bootstrap token not labelled as the hooks'
        ("secrets", None, TOKEN_USER, "DELETE", {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                                                 "metadata": {"name": "etcd-backup"}}),
        ("secrets", _token_secret(), TOKEN_USER, "UPDATE", _token_secret()),
    ],
    ids=["bare-token-pod", "forged-owner", "not-a-job-owner", "user-job", "token-job-as-node-job",
         "unlabelled-node-job", "key-volume", "key-projected", "key-env", "key-envfrom", "minted-sa-token",
         "other-secret", "foreign-bootstrap-token", "delete-other-secret", "update-token"],
)
def test_every_other_door_is_closed(resource: str, obj: dict[str, Any] | None, user: str, operation: str,
                                    old: dict[str, Any] | None) -> None:
    assert admit(resource, obj, user, operation, old), f"{operation} {resource} by {user} was admitted"


def test_other_accounts_and_secrets_are_left_alone() -> None:
    plain = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
             "spec": {"serviceAccountName": "default", "containers": [{"name": "c", "image": "i"}]}}
    assert admit("pods", plain, "alice") == []
    assert admit("secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}, "alice") == []
    assert admit("secrets", None, "alice", "DELETE", old={"apiVersion": "v1", "kind": "Secret",
                                                           "metadata": {"name": "s"}}) == []


# ------------------------------------------------------------------------------------ the target kubeconfig mount

SA_TOKEN_VOLUME = {"name": "kube-api-access-x1y2z", "projected": {"sources": [
    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
    {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}}
SA_TOKEN_MOUNT = {"name": "kube-api-access-x1y2z", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                  "readOnly": True}
STEPS = [node_jobs.TOKEN_CREATE, node_jobs.TOKEN_DELETE, node_jobs.NODE_SYNC, node_jobs.NODE_TERMINATING,
         node_jobs.NODE_REMOVE]


def _admitted_pod_of(job: dict[str, Any]) -> dict[str, Any]:
    """The Job's pod as the API server validates it: the ServiceAccount admission has added the token volume."""
    pod = copy.deepcopy(_pod_of(job))
    pod["spec"].setdefault("volumes", []).append(SA_TOKEN_VOLUME)
    for container in pod["spec"]["containers"]:
        container.setdefault("volumeMounts", []).append(SA_TOKEN_MOUNT)
    return pod


@pytest.mark.parametrize("step", STEPS)
def test_the_jobs_with_the_target_kubeconfig_mounted_and_their_pods_are_admitted(step: str) -> None:
    for job in (_declared(step), jobs.mount(_declared(step), "target-kubeconfig")):
        assert admit("jobs", job, METACONTROLLER) == []
        assert admit("pods", _admitted_pod_of(job), JOB_CONTROLLER) == []


def _mounted_changed(change: str) -> dict[str, Any]:
    job = jobs.mount(_declared(node_jobs.TOKEN_CREATE), "target-kubeconfig")
    pod, container = job["spec"]["template"]["spec"], job["spec"]["template"]["spec"]["containers"][0]
    target_mount = next(m for m in container["volumeMounts"] if m["name"] == "target-kubeconfig")
    if change == "host-path":
        pod["volumes"].append({"name": "host", "hostPath": {"path": "/var/lib/kubelet"}})
        container["volumeMounts"].append({"name": "host", "mountPath": "/host", "readOnly": True})
    elif change == "other-secret":
        pod["volumes"].append({"name": "creds", "secret": {"secretName": "metal-credentials"}})
    elif change == "key-volume-other-secret":  # the key volume's name on another Secret
        pod["volumes"][0]["secret"]["secretName"] = "metal-credentials"
    elif change == "whole-secret":
        del next(v for v in pod["volumes"] if v["name"] == "target-kubeconfig")["secret"]["items"]
    elif change == "writable":
        target_mount["readOnly"] = False
    elif change == "elsewhere":
        target_mount["mountPath"] = "/etc/kubernetes"
    elif change == "kubeconfig-elsewhere":
        next(e for e in container["env"] if e["name"] == "KUBECONFIG")["value"] = "/tmp/kubeconfig"
    elif change == "env-from":
        container["envFrom"] = [{"secretRef": {"name": "metal-credentials"}}]
    return job


@pytest.mark.parametrize("change", ["host-path", "other-secret", "key-volume-other-secret", "whole-secret",
                                    "writable", "elsewhere", "kubeconfig-elsewhere", "env-from"])
def test_anything_mounted_beyond_the_key_and_the_target_kubeconfig_is_refused(change: str) -> None:
    job = _mounted_changed(change)
    for resource, obj, user in (("jobs", job, METACONTROLLER), ("pods", _admitted_pod_of(job), JOB_CONTROLLER)):
        denied = admit(resource, obj, user)
        assert any("mounts only the bootstrap token key and the target kubeconfig" in m for m in denied), denied
