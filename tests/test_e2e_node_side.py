"""End to end: the Node-side Jobs run `python -m nodejobs` for real against the emulator's Kubernetes REST API.

Part one needs no wiring: the Jobs are exactly what hooks/mcm/node_side.py declares, created and dropped as
Metacontroller would from each plan, and their pods run this repository's program as subprocesses with a
ServiceAccount token (and, for tokens, the key Secret mounted as a volume). What the API server saw must be exactly
what the RBAC grants; the token's secret half appears in no Job, pod, log or request but the Secret's own create.

Part two goes through the whole emulated cluster (our hook app under the Metacontroller emulator, the Metal
simulator), with the plans wired into the Machine, MachineSet and MachineDeployment hooks.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from emulator.job_pods import ProgramJobRunner
from emulator.kubeapi import ApiRequest, KubeApiServer
from emulator.store import Store
from hooks.driver import Address, Device, DeviceState
from hooks.mcm import bootstrap, node_jobs
from hooks.mcm.node_side import (
    LAST_APPLIED_ANNOTATION,
    MACHINE_NAME_LABEL,
    NodeStep,
    plan_node_removal,
    plan_node_sync,
    plan_node_terminating,
    plan_token,
    plan_token_cleanup,
    recorded_device,
)
from hooks.mcm.timefmt import parse_time

REPO = Path(__file__).resolve().parent.parent
KEY = b"an-hmac-key-of-at-least-thirty-two-bytes!"
Obj = dict[str, Any]
pytestmark = pytest.mark.e2e


class Cluster:
    """The store, its REST API and the Job pod runner; `declare` plays Metacontroller for one step's attachments."""

    def __init__(self) -> None:
        self.store = Store()
        self.api = KubeApiServer(self.store).start()
        self.jobs = ProgramJobRunner(self.store, self.api, poll_interval=0.02, backoff=0.5)
        self.jobs.start()

    def stop(self) -> None:
        self.jobs.stop()
        self.api.stop()

    def declare(self, step: NodeStep, kind: str) -> None:
        """Create the declared Jobs that do not exist; delete this step's Jobs that were left out."""
        wanted = {j["metadata"]["name"] for j in step.attachments}
        for job in self.store.list("batch/v1", "Job", "default"):
            notes = job["metadata"].get("annotations") or {}
            if notes.get(node_jobs.STEP_ANNOTATION) == kind and job["metadata"]["name"] not in wanted:
                self.store.delete("batch/v1", "Job", job["metadata"]["name"], "default")
        for job in step.attachments:
            if self.store.try_get("batch/v1", "Job", job["metadata"]["name"], "default") is None:
                self.store.create(json.loads(json.dumps(job)))

    def observed(self) -> Obj:
        """The attachments map a Machine hook request would carry."""
        return {node_jobs.JOB_KEY: {f"default/{j['metadata']['name']}": j
                                    for j in self.store.list("batch/v1", "Job", "default")}}

    def finish(self, name: str, timeout: float = 60.0) -> Obj:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.store.try_get("batch/v1", "Job", name, "default") or {}
            done = [c for c in (job.get("status") or {}).get("conditions") or []
                    if c["type"] in ("Complete", "Failed") and c["status"] == "True"]
            if done:
                assert done[0]["type"] == "Complete", (done, self.jobs.logs)
                return job
            time.sleep(0.02)
        raise TimeoutError(f"job {name} did not finish: {self.jobs.logs}")

    def requests_by(self, account: str) -> list[ApiRequest]:
        return [r for r in self.api.requests() if r.user == f"system:serviceaccount:default:{account}"]


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    running = Cluster()
    try:
        yield running
    finally:
        running.stop()
    assert running.jobs.running() == []


def _granted(path: Path) -> set[tuple[str, str]]:
    role = yaml.safe_load(path.read_text())
    return {(verb, res) for rule in role["rules"] for verb in rule["verbs"] for res in rule["resources"]}


def valid_bootstrap_token(secret: Obj, token: str, now: datetime) -> bool:
    """What the API server's bootstrap token authenticator checks before it accepts `token`."""
    data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    token_id, _, token_secret = token.partition(".")
    expires = parse_time(data.get("expiration"))
    groups = [g for g in data.get("auth-extra-groups", "").split(",") if g]
    return (secret["type"] == "bootstrap.kubernetes.io/token" and secret["metadata"]["namespace"] == "kube-system"
            and secret["metadata"]["name"] == f"bootstrap-token-{token_id}" and data.get("token-id") == token_id
            and data.get("token-secret") == token_secret and data.get("usage-bootstrap-authentication") == "true"
            and expires is not None and expires > now and all(g.startswith("system:bootstrappers:") for g in groups))


def test_token_job_creates_a_valid_bootstrap_token_that_only_the_secret_and_user_data_hold(
    cluster: Cluster, tmp_path: Path
) -> None:
    store = cluster.store
    store.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": bootstrap.DEFAULT_KEY_SECRET,
                                                                     "namespace": "default"},
                  "data": {"key": base64.b64encode(KEY).decode()}})
    (tmp_path / "key").write_bytes(KEY)  # the hook server's copy of the same key
    settings = node_jobs.NodeJobSettings(token=bootstrap.TokenSettings(
        key_file=str(tmp_path / "key"), extra_groups="system:bootstrappers:metal-machines"))
    created = datetime.now(UTC).replace(microsecond=0)
    machine = {"metadata": {"name": "m-1", "namespace": "default", "uid": "c0ffee00-1111-2222-3333-444455556666",
                            "creationTimestamp": created.strftime("%Y-%m-%dT%H:%M:%SZ")},
               "spec": {"creationTimeout": "15m"}}
    user_data = "#!/bin/bash\nkubeadm join api:6443 --token <<BOOTSTRAP_TOKEN>> --node-name <<MACHINE_NAME>>\n"

    first = plan_token(machine, user_data, {}, settings, 1200.0)
    assert not first.done and first.user_data is None
    cluster.declare(first, node_jobs.TOKEN_CREATE)
    cluster.finish("m-1-token")
    ready = plan_token(machine, user_data, cluster.observed(), settings, 1200.0)
    assert ready.done and ready.user_data is not None
    token = bootstrap.derive(KEY, machine["metadata"]["uid"])
    assert ready.user_data == user_data.replace("<<BOOTSTRAP_TOKEN>>", token.value).replace("<<MACHINE_NAME>>", "m-1")

    secret = store.get("v1", "Secret", token.secret_name, "kube-system")
    assert valid_bootstrap_token(secret, token.value, datetime.now(UTC))
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data["expiration"] == (created + timedelta(minutes=15)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert data["auth-extra-groups"] == "system:bootstrappers:metal-machines"
    assert data["usage-bootstrap-signing"] == "true"

    calls = cluster.requests_by("metal-machine-bootstrap-token")
    assert {(r.verb, r.resource, r.namespace, r.code) for r in calls} == {("create", "secrets", "kube-system", 201)}
    # Hygiene: the secret half is in no Job, pod, pod log or request but the Secret's own create.
    everything = [json.dumps(o) for kind in ("Job", "Pod") for o in store.list("batch/v1" if kind == "Job" else "v1",
                                                                               kind, "default")]
    everything += list(cluster.jobs.logs.values())
    everything += [json.dumps(r.body) for r in cluster.api.requests() if r.resource != "secrets"]
    for text in everything:
        assert token.secret not in text and token.secret[:8] not in text
    assert all(token.secret not in json.dumps(r.body) for r in cluster.api.requests() if r not in calls)

    # The Node joined: the token is deleted, as MCM does.
    cleanup = plan_token_cleanup(machine, user_data, cluster.observed(), settings, datetime.now(UTC), 1200.0)
    cluster.declare(cleanup, node_jobs.TOKEN_DELETE)
    cluster.finish("m-1-token-delete")
    assert store.try_get("v1", "Secret", token.secret_name, "kube-system") is None
    assert plan_token_cleanup(machine, user_data, cluster.observed(), settings, datetime.now(UTC), 1200.0).done
    granted = _granted(REPO / "kubernetes" / "node-jobs" / "kube-system" / "role.yaml")
    assert {(r.verb, r.resource) for r in cluster.requests_by("metal-machine-bootstrap-token")} == granted


def test_token_job_without_the_key_secret_fails_and_says_why(cluster: Cluster, tmp_path: Path) -> None:
    (tmp_path / "key").write_bytes(KEY)
    settings = node_jobs.NodeJobSettings(token=bootstrap.TokenSettings(key_file=str(tmp_path / "key")))
    machine = {"metadata": {"name": "m-2", "namespace": "default", "uid": "u-2",
                            "creationTimestamp": "2026-12-03T10:00:00Z"}}
    step = plan_token(machine, "<<BOOTSTRAP_TOKEN>>", {}, settings, 1200.0)
    job = step.attachments[0]
    job["spec"]["backoffLimit"] = 0
    cluster.store.create(job)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pods = cluster.store.list("v1", "Pod", "default")
        if pods and (pods[0].get("status") or {}).get("phase") == "Failed":
            break
        time.sleep(0.02)
    message = pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]["message"]
    assert 'secret "metal-machine-bootstrap-token-key" not found' in message
    assert cluster.store.list("v1", "Secret", "kube-system") == []


DEVICE = Device("d-1", "equinixmetal://da/d-1", DeviceState.ACTIVE, addresses=(Address("147.75.9.9", "ExternalIP"),))


def _machine(template: Obj, phase: str = "Running") -> Obj:
    return {"metadata": {"name": "m-1", "namespace": "default", "uid": "m-uid", "labels": {"node": "m-1"},
                         "annotations": {"metal-machine-hooks/device-id": "d-1",
                                         "metal-machine-hooks/provider-id": "equinixmetal://da/d-1"}},
            "spec": {"nodeTemplate": template}, "status": {"currentStatus": {"phase": phase}}}


def test_node_jobs_label_taint_mark_and_remove_the_node(cluster: Cluster) -> None:
    store = cluster.store
    store.create({"apiVersion": "v1", "kind": "Node",
                  "metadata": {"name": "m-1", "labels": {"kubernetes.io/hostname": "m-1"}},
                  "spec": {"providerID": "equinixmetal://da/d-1"},
                  "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}})
    settings = node_jobs.NodeJobSettings()

    def node() -> Obj:
        return store.get("v1", "Node", "m-1")

    def sync(template: Obj) -> None:
        step = plan_node_sync(_machine(template), node(), DEVICE, cluster.observed(), settings)
        cluster.declare(step, node_jobs.NODE_SYNC)
        for job in step.attachments:
            cluster.finish(job["metadata"]["name"])

    first = {"metadata": {"labels": {"worker.gardener.cloud/pool": "gpu"}, "annotations": {"team": "ml"}},
             "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]}}
    sync(first)
    labels = node()["metadata"]["labels"]
    assert labels == {"kubernetes.io/hostname": "m-1", "worker.gardener.cloud/pool": "gpu", MACHINE_NAME_LABEL: "m-1"}
    assert node()["metadata"]["annotations"]["team"] == "ml"
    assert node()["spec"]["taints"] == first["spec"]["taints"]
    assert json.loads(node()["metadata"]["annotations"][LAST_APPLIED_ANNOTATION])["metadata"]["labels"] == {
        "worker.gardener.cloud/pool": "gpu"}
    # The template changes: the Node follows, the kubelet's label stays.
    second = {"metadata": {"labels": {"worker.gardener.cloud/pool": "cpu"}}, "spec": {}}
    sync(second)
    assert node()["metadata"]["labels"]["worker.gardener.cloud/pool"] == "cpu"
    assert "team" not in node()["metadata"]["annotations"] and not node()["spec"].get("taints")
    assert node()["metadata"]["labels"]["kubernetes.io/hostname"] == "m-1"
    in_sync = plan_node_sync(_machine(second), node(), DEVICE, cluster.observed(), settings)
    assert in_sync.attachments == []
    cluster.declare(in_sync, node_jobs.NODE_SYNC)

    deleting = _machine(second, phase="Running")
    terminating = plan_node_terminating(deleting, node(), DEVICE, cluster.observed(), settings)
    cluster.declare(terminating, node_jobs.NODE_TERMINATING)
    cluster.finish("m-1-node-terminating")
    conditions = {c["type"]: c for c in node()["status"]["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    assert (conditions["Terminating"]["reason"], conditions["Terminating"]["message"]) == (
        "ScaleDown", "Machine Controller is scaling down machine")

    device = recorded_device(deleting)
    removal = plan_node_removal(deleting, node(), device, cluster.observed(), settings)
    assert removal.description == "VM deletion was successful. Initiate node object deletion"
    cluster.declare(removal, node_jobs.NODE_REMOVE)
    cluster.finish("m-1-node-remove")
    assert store.try_get("v1", "Node", "m-1") is None
    done = plan_node_removal(deleting, None, device, cluster.observed(), settings)
    assert done.done and done.description == ('Deletion of Node Object "m-1" is successful. '
                                              "Initiate machine object finalizer removal")

    calls = cluster.requests_by("metal-machine-node")
    assert {(r.verb, r.resource) for r in calls} == _granted(REPO / "kubernetes" / "node-jobs" / "clusterrole.yaml")
    deletes = [r for r in calls if r.verb == "delete"]
    assert len(deletes) == 1 and deletes[0].body["preconditions"]["uid"]
