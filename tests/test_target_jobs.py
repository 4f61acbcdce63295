"""hooks/target/jobs.py: the target kubeconfig mounted into the drain and Node-side Jobs (issue 17)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from hooks.config import DrainSettings
from hooks.mcm import bootstrap, drain_job, node_jobs
from hooks.target import jobs
from hooks.target.kubeconfig import TargetConfigError
from tests.emulator_support import target_kubeconfig_secret

MACHINE = {"metadata": {"name": "m-1", "namespace": "shoot--a", "uid": "m-uid",
                        "creationTimestamp": "2026-12-03T10:00:00Z"}}
Obj = dict[str, Any]


def _token_job() -> Obj:
    return node_jobs.build_job(MACHINE, node_jobs.TOKEN_CREATE, "m-1-token", ["token", "create"],
                               node_jobs.NodeJobSettings())


def _drain_job() -> Obj:
    return drain_job.build_job(MACHINE, "m-1", DrainSettings())


def _pod(job: Obj) -> Obj:
    return job["spec"]["template"]["spec"]


def test_a_drain_job_reads_the_target_kubeconfig_from_the_secret() -> None:
    job = _drain_job()
    before = copy.deepcopy(job)
    mounted = jobs.mount(job, "target-kubeconfig")
    assert job == before  # a new dict: what the caller holds is unchanged
    pod = _pod(mounted)
    assert pod["volumes"] == [{"name": "target-kubeconfig", "secret": {
        "secretName": "target-kubeconfig", "defaultMode": 0o440,
        "items": [{"key": "kubeconfig", "path": "kubeconfig"}]}}]
    (container,) = pod["containers"]
    assert container["volumeMounts"] == [{"name": "target-kubeconfig", "mountPath": jobs.TARGET_JOB_MOUNT_PATH,
                                          "readOnly": True}]
    env = {e["name"]: e for e in container["env"]}
    assert env["KUBECONFIG"] == {"name": "KUBECONFIG", "value": f"{jobs.TARGET_JOB_MOUNT_PATH}/kubeconfig"}
    assert {"POD_NAME", "POD_NAMESPACE", "PYTHONUNBUFFERED"} <= set(env)  # what the Job had stays
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"] == 10001  # 0440 is readable
    assert {k: v for k, v in mounted.items() if k != "spec"} == {k: v for k, v in job.items() if k != "spec"}
    assert jobs.mounted_secret(mounted) == "target-kubeconfig" and jobs.mounted_secret(job) is None


@pytest.mark.parametrize("build", [_drain_job, _token_job], ids=["drain", "token"])
def test_mounting_twice_or_an_observed_mounted_job_changes_nothing(build: Any) -> None:
    once = jobs.mount(build(), "kc")
    assert jobs.mount(once, "kc") == once
    assert jobs.mount(jobs.mount(once, "kc"), "kc") == once
    # Another Secret name replaces the mount, never adds a second one.
    other = jobs.mount(once, "kc-2")
    assert [v["secret"]["secretName"] for v in _pod(other)["volumes"] if v["name"] == "target-kubeconfig"] == ["kc-2"]
    assert len(_pod(other)["containers"][0]["env"]) == len(_pod(once)["containers"][0]["env"])


def test_the_bootstrap_token_key_volume_stays_beside_the_kubeconfig() -> None:
    job = _token_job()
    mounted = jobs.mount(job, "target-kubeconfig")
    pod = _pod(mounted)
    assert [v["name"] for v in pod["volumes"]] == ["bootstrap-token-key", "target-kubeconfig"]
    assert pod["volumes"][0] == _pod(job)["volumes"][0]
    (container,) = pod["containers"]
    assert [m["mountPath"] for m in container["volumeMounts"]] == [bootstrap.KEY_MOUNT_DIR, jobs.TARGET_JOB_MOUNT_PATH]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env[bootstrap.KEY_FILE_ENV] == f"{bootstrap.KEY_MOUNT_DIR}/{bootstrap.KEY_FILE_NAME}"
    assert env["KUBECONFIG"] == jobs.KUBECONFIG_PATH
    assert pod["securityContext"]["fsGroup"] == 10001  # the Job's own, kept


def test_every_container_gets_the_mount_and_an_existing_kubeconfig_variable_is_replaced() -> None:
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}, "spec": {"template": {"spec": {
        "securityContext": {"fsGroup": 2000},
        "initContainers": [{"name": "init", "image": "i"}],
        "containers": [{"name": "a", "image": "i", "env": [{"name": "KUBECONFIG", "value": "/somewhere/else"}]},
                       {"name": "b", "image": "i"}]}}}}
    pod = _pod(jobs.mount(job, "kc"))
    for container in [*pod["initContainers"], *pod["containers"]]:
        assert [e for e in container["env"] if e["name"] == "KUBECONFIG"] == [
            {"name": "KUBECONFIG", "value": jobs.KUBECONFIG_PATH}], container
        assert [m["mountPath"] for m in container["volumeMounts"]] == [jobs.TARGET_JOB_MOUNT_PATH]
    assert pod["securityContext"] == {"fsGroup": 2000}


def test_mount_needs_a_secret_name() -> None:
    with pytest.raises(ValueError, match="name of the target kubeconfig Secret"):
        jobs.mount(_drain_job(), "")


def _related(*secrets: Obj) -> Obj:
    return {"Secret.v1": {f"{s['metadata']['namespace']}/{s['metadata']['name']}": s for s in secrets}}


def test_the_secret_name_comes_from_the_namespaces_labelled_secret() -> None:
    secret = target_kubeconfig_secret("http://127.0.0.1:6443", "t0ken", "shoot--a", name="shoot-kc")
    assert jobs.secret_name(_related(secret), "shoot--a") == "shoot-kc"
    assert jobs.secret_name(_related(secret), "shoot--b") is None  # never another namespace's
    assert jobs.secret_name(None, "shoot--a") is None
    broken = copy.deepcopy(secret)
    broken["data"] = {}
    with pytest.raises(TargetConfigError, match="no data key"):
        jobs.secret_name(_related(broken), "shoot--a")
