"""End to end: deleting a Machine runs the real `python -m drain` in the drain Job's pod, against a Kubernetes API.

Everything a user's cluster does is here except containers: our hooks under the Metacontroller emulator, the
Metal simulator, and the Job's pod running this repository's drain program as a subprocess that talks HTTP to the
emulator's REST API (`emulator/kubeapi.py`) with a ServiceAccount token, as the pod would talk to the API server.
The Node carries an unmanaged pod (evicted at once, but held by a finalizer until the test lets it go), a pod
whose PodDisruptionBudget allows no disruption until a replacement runs elsewhere, and a mirror pod (left alone).
What the API server saw must be: the Node read and cordoned, evictions (the budget's 429 first, then success once
the replacement is Ready), lists until no pod is left, and only after that the device's DELETE at the Metal API.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from emulator.metal import MetalSimulator, SimulatorServer
from emulator.metal_http import SimResponse
from tests.emulator_support import RealCluster, real_cluster

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "kubernetes" / "examples"
MACHINE_API = "machine.sapcloud.io/v1alpha1"
MACHINE = "eqx-test-machine"
Obj = dict[str, Any]


@dataclass
class SimCall:
    at: float
    method: str
    path: str


class RecordedSim:
    """The Metal simulator behind a server that notes when each request arrived (to order it against the API's)."""

    def __init__(self, tokens: dict[str, list[str]]) -> None:
        self.sim = MetalSimulator(tokens)
        self.calls: list[SimCall] = []
        self._lock = threading.Lock()
        self.server = SimulatorServer(self._handle).start()

    def _handle(self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes) -> SimResponse:
        with self._lock:
            self.calls.append(SimCall(time.monotonic(), method, raw_path))
        return self.sim.handle(method, raw_path, headers, body)

    def device_deletes(self) -> list[SimCall]:
        with self._lock:
            return [c for c in self.calls if c.method == "DELETE" and "/devices/" in c.path]


def _example(name: str, kind: str) -> Obj:
    return next(d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d and d.get("kind") == kind)


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> Iterator[tuple[RealCluster, RecordedSim]]:
    """One cluster, or two when parametrized indirectly with True (the Node and its pods in the target cluster)."""
    token = _example("secret.yaml", "Secret")["stringData"]["apiToken"]
    project = _example("machine-class.yaml", "MachineClass")["providerSpec"]["projectID"]
    recorded = RecordedSim({token: [project]})
    two_clusters = bool(getattr(request, "param", False))
    try:
        with real_cluster(recorded.server.url, recorded.server.base_url, jobs="program",
                          two_clusters=two_clusters) as running:
            yield running, recorded
    finally:
        recorded.server.shutdown()
    assert running.jobs.running() == []  # no drain program outlives the test


def _pod(name: str, node: str, *, labels: Obj | None = None, grace: int = 1, namespace: str = "apps",
         annotations: Obj | None = None, finalizers: list[str] | None = None) -> Obj:
    meta: Obj = {"name": name, "namespace": namespace, "labels": labels or {"app": name}}
    if annotations:
        meta["annotations"] = annotations
    if finalizers:
        meta["finalizers"] = finalizers
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": grace,
                     "containers": [{"name": "main", "image": "registry.example/app:1"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}


def _wait(predicate: Any, timeout: float, message: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"not within {timeout}s: {message}")


@pytest.mark.parametrize("cluster", [False, True], ids=["one-cluster", "two-clusters"], indirect=True)
def test_drain_program_cordons_evicts_past_a_budget_and_waits_before_the_device_goes(
    cluster: tuple[RealCluster, RecordedSim],
) -> None:
    """With two clusters the Machine is in the control cluster and its Node, pods and budget in the target: the
    drain Job's program reaches them through the mounted kubeconfig, as the target's RBAC (docs) allows."""
    running, recorded = cluster
    store, mc, api = running.store, running.mc, running.node_api
    nodes = running.node_store  # where the Node and its pods live
    store.load_yaml([EXAMPLES / "secret.yaml", EXAMPLES / "machine-class.yaml", EXAMPLES / "machine.yaml"])

    def machine() -> Obj | None:
        return store.try_get(MACHINE_API, "Machine", MACHINE, "default")

    mc.wait_for(lambda s: ((machine() or {}).get("status") or {}).get("currentStatus", {}).get("phase") == "Running",
                timeout=60, message="Machine Running")
    node = machine()["metadata"]["labels"]["node"]  # type: ignore[index]
    nodes.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}})
    nodes.create(_pod("web-1", node, labels={"app": "web"}))
    # No controller, no budget: evicted at once, but it stays (terminating) until the test lets it go.
    nodes.create(_pod("bare", node, finalizers=["example.com/hold"]))
    nodes.create(_pod(f"kube-proxy-{node}", node, namespace="kube-system",
                      annotations={"kubernetes.io/config.mirror": "abc"}))
    nodes.create({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                  "metadata": {"name": "web", "namespace": "apps"},
                  "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}})

    store.delete(MACHINE_API, "Machine", MACHINE, "default")

    def refused() -> bool:
        return any(r.resource == "pods/eviction" and r.name == "web-1" and r.code == 429 for r in api.requests())

    _wait(refused, 60, "the budget refused web-1's eviction")
    assert nodes.try_get("v1", "Pod", "web-1", "apps") is not None
    assert machine() is not None and recorded.device_deletes() == []
    # The replacement runs elsewhere: now the budget allows one disruption.
    nodes.create(_pod("web-2", "another-node", labels={"app": "web"}))

    def waiting_for_bare() -> bool:
        """web-1 was evicted, and a list after that still showed `bare` terminating."""
        log = api.requests()
        granted = [r.seq for r in log if r.resource == "pods/eviction" and r.name == "web-1" and r.code == 201]
        return bool(granted) and any(r.verb == "list" and r.seq > granted[0] and "apps/bare" in r.terminating
                                     for r in log)

    _wait(waiting_for_bare, 60, "the drain waits for the evicted pod to go")
    assert recorded.device_deletes() == [] and _drains(running.jobs.finished) == []
    bare = nodes.get("v1", "Pod", "bare", "apps")
    bare["metadata"]["finalizers"] = []
    nodes.update(bare)  # the pod's last finalizer goes: now it is gone
    mc.wait_for(lambda s: machine() is None, timeout=60, message="Machine gone after its drain and device")

    mine = [r for r in api.requests() if r.user == running.node_user("metal-machine-drain")]
    if running.target is None:
        drain = mine
        steps = [(r.verb, r.resource, r.name, r.code) for r in drain]
        assert steps[:2] == [("get", "nodes", node, 200), ("patch", "nodes", node, 200)], steps
        cordon = drain[1]
    else:  # one identity in the target for the hooks' Node reads and every Job: the drain's own requests
        drain = [r for r in mine if r.resource in ("pods", "pods/eviction") or _is_cordon(r)]
        steps = [(r.verb, r.resource, r.name, r.code) for r in drain]
        cordon = drain[0]
        assert (cordon.verb, cordon.resource, cordon.name, cordon.code) == ("patch", "nodes", node, 200), steps
        assert running.store.list("v1", "Pod", "apps") == []  # nothing of the Node's in the control cluster
    assert cordon.content_type == "application/merge-patch+json"
    assert cordon.body == {"spec": {"unschedulable": True}}
    evictions = [(r.name, r.code) for r in drain if r.resource == "pods/eviction"]
    assert evictions[0][0] in ("bare", "web-1") and ("bare", 201) in evictions
    web = [code for name, code in evictions if name == "web-1"]
    assert web[0] == 429 and web[-1] == 201 and set(web[:-1]) == {429}, evictions
    lists = [r for r in drain if r.verb == "list"]
    assert all(r.resource == "pods" and r.query.get("fieldSelector") == f"spec.nodeName={node}" for r in lists)
    evictions_end = max(r.seq for r in drain if r.resource == "pods/eviction")
    final = lists[-1]
    assert final.seq > evictions_end and final.items == (f"kube-system/kube-proxy-{node}",), steps
    # The wait: lists kept showing the evicted pod terminating, and the drain went on listing until it was gone.
    after = [r for r in lists if r.seq > evictions_end]
    assert len(after) >= 2 and all(r.terminating == ("apps/bare",) for r in after[:-1]), steps
    assert all(r.seq < final.seq for r in drain if r.seq != final.seq)
    # Only then the hooks deleted the device.
    deletes = recorded.device_deletes()
    assert len(deletes) == 1 and deletes[0].at > final.at
    assert recorded.sim.devices() == []

    job_pods = {pod: text for pod, text in running.jobs.logs.items() if "-drain" in pod}
    assert len(job_pods) == 1, job_pods
    log = next(iter(job_pods.values()))
    assert f"node {node} cordoned" in log and "evicted apps/web-1" in log and "refused" in log, log
    assert f"leaving kube-system/kube-proxy-{node}: mirror pod" in log
    assert _drains(running.jobs.finished) == [f"{MACHINE}-drain"]
    # Beside the drain, the Node's Terminating condition and, after the device, its removal (docs/nodes.md). With
    # two clusters the Machine sees its Node at the next resync, by when the Node joiner (the cloud node lifecycle
    # controller's stand-in) may have removed it already: then no removal Job is needed
    # (test_e2e_node_side_wired covers the removal Job in both topologies, without that controller).
    assert f"{MACHINE}-node-terminating" in running.jobs.finished
    assert running.target is not None or f"{MACHINE}-node-remove" in running.jobs.finished
    _wait(lambda: nodes.try_get("v1", "Node", node) is None, 10, "the Node removed after its device")
    if running.target is None:
        # What the program did is what its ClusterRole grants (kubernetes/drain/clusterrole.yaml), nothing more.
        role = yaml.safe_load((REPO / "kubernetes" / "drain" / "clusterrole.yaml").read_text())
        granted = {(verb, res) for rule in role["rules"] for verb in rule["verbs"] for res in rule["resources"]}
        assert {(r.verb, r.resource) for r in drain} == granted
    else:
        # Everything the target's identity did (hooks and Jobs) is what docs/operations.md tells admins to grant.
        assert {(r.verb, r.resource) for r in mine} <= target_rbac(), {(r.verb, r.resource) for r in mine}
        assert {(r.verb, r.resource) for r in drain} == {("patch", "nodes"), ("list", "pods"),
                                                         ("create", "pods/eviction")}


def _is_cordon(request: Any) -> bool:
    return bool(request.verb == "patch" and request.resource == "nodes" and request.body == {
        "spec": {"unschedulable": True}})


def target_rbac() -> set[tuple[str, str]]:
    """(verb, resource) pairs the target RBAC of docs/operations.md ("RBAC in the target cluster") grants."""
    text = (REPO / "docs" / "operations.md").read_text()
    section = text[text.index("### RBAC in the target cluster"):]
    block = section[section.index("```yaml") + len("```yaml"):]
    block = block[:block.index("```")]
    return {(verb, resource) for doc in yaml.safe_load_all(block) if doc for rule in doc["rules"]
            for verb in rule["verbs"] for resource in rule["resources"]}


def _drains(jobs: list[str]) -> list[str]:
    """The drain Jobs among the finished ones (the Node-side Jobs run beside them)."""
    return [name for name in jobs if "-drain" in name]


def test_a_failing_drain_program_fails_its_job_and_keeps_the_log(
    cluster: tuple[RealCluster, RecordedSim],
) -> None:
    # A Job whose program cannot reach its Node's API (no token mounted): the pod fails, is retried, the Job fails.
    running, _ = cluster
    store = running.store
    store.create({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "lone-drain", "namespace": "default"},
        "spec": {"backoffLimit": 1, "template": {"spec": {
            "automountServiceAccountToken": False, "restartPolicy": "Never",
            "containers": [{"name": "drain", "image": "x", "command": ["python", "-m", "drain"], "args": ["n-1"],
                            "terminationMessagePolicy": "FallbackToLogsOnError"}]}}},
    })

    def job_failed() -> Obj | None:
        job = store.try_get("batch/v1", "Job", "lone-drain", "default") or {}
        conditions = {c["type"]: c for c in (job.get("status") or {}).get("conditions") or []}
        return conditions.get("Failed")

    failed = _wait(job_failed, 60, "the Job failed")
    assert failed["reason"] == "BackoffLimitExceeded"
    job = store.get("batch/v1", "Job", "lone-drain", "default")
    assert job["status"]["failed"] == 2 and not job["status"].get("succeeded")
    pods = store.list("v1", "Pod", "default", label_selector={"matchLabels": {"job-name": "lone-drain"}})
    assert len(pods) == 2 and all(p["status"]["phase"] == "Failed" for p in pods)
    terminated = pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 1 and "no ServiceAccount token" in terminated["message"]
    assert all("no ServiceAccount token" in text for text in running.jobs.logs.values())
