"""`python -m drain NODE` against a fake API server, and the RBAC that must allow exactly what it calls."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import kubernetes_validate
import pytest
import requests
import requests_mock
import yaml

from drain.__main__ import main
from drain.kube import KubeApi, KubeError
from tests.clocks import SleepClock

API = "https://10.0.0.1:443"
NODE = "worker-1"
DRAIN_DIR = Path(__file__).resolve().parent.parent / "kubernetes" / "drain"
K8S_VERSION = "1.33"


def pod(
    name: str,
    namespace: str = "apps",
    *,
    owner: str = "ReplicaSet",
    phase: str = "Running",
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{namespace}-{name}",
            "annotations": annotations or {},
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": owner, "name": f"{name}-owner", "uid": "o", "controller": True}
            ]
            if owner
            else [],
        },
        "spec": {"nodeName": NODE},
        "status": {"phase": phase},
    }


class FakeCluster:
    """Just enough of an API server: one Node, its pods, evictions that PDBs may refuse a number of times."""

    def __init__(self) -> None:
        self.node: dict[str, Any] | None = {"metadata": {"name": NODE}, "spec": {}}
        self.pods: list[dict[str, Any]] = []
        self.refusals: dict[str, int] = {}  # pod key -> evictions refused (429) before one is allowed
        self.evictions: list[str] = []
        self.patches: list[tuple[str, Any]] = []
        self.list_failures = 0  # lists answered 500 before working
        self.evict_status: int | None = None  # force one status for every eviction
        self.page_size_seen: list[int] = []
        self.calls: list[tuple[str, str]] = []
        self.tokens: list[str] = []
        self.linger = 0  # lists an evicted pod stays visible (terminating) before it is gone
        self.terminating: dict[str, int] = {}

    def handle(self, request: Any, context: Any) -> Any:
        url = urlparse(request.url)
        path = url.path
        self.tokens.append(request.headers.get("Authorization", ""))
        verb_resource = _verb_resource(request.method, path, parse_qs(url.query))
        self.calls.append(verb_resource)
        if path == f"/api/v1/nodes/{NODE}":
            if self.node is None:
                context.status_code = 404
                return {"kind": "Status", "message": f'nodes "{NODE}" not found', "code": 404}
            if request.method == "PATCH":
                self.patches.append((request.headers["Content-Type"], json.loads(request.body)))
                self.node["spec"]["unschedulable"] = True
            return self.node
        if path == "/api/v1/pods":
            if self.list_failures:
                self.list_failures -= 1
                context.status_code = 500
                return {"kind": "Status", "message": "etcdserver: request timed out", "code": 500}
            for key, left in list(self.terminating.items()):
                if left <= 0:
                    self.pods = [p for p in self.pods if _key(p) != key]
                    del self.terminating[key]
                else:
                    self.terminating[key] = left - 1
            query = parse_qs(url.query)
            assert query["fieldSelector"] == [f"spec.nodeName={NODE}"]
            start = int(query.get("continue", ["0"])[0])
            size = int(query["limit"][0])
            page = self.pods[start : start + size]
            more = start + size < len(self.pods)
            return {"kind": "PodList", "items": page, "metadata": {"continue": str(start + size) if more else ""}}
        match = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/eviction", path)
        if match and request.method == "POST":
            key = f"{match[1]}/{match[2]}"
            body = json.loads(request.body)
            assert body["apiVersion"] == "policy/v1" and body["kind"] == "Eviction"
            assert body["metadata"] == {"name": match[2], "namespace": match[1]}
            if self.evict_status:
                context.status_code = self.evict_status
                return {
                    "kind": "Status",
                    "message": 'pods "x" is forbidden: User cannot create pods/eviction',
                    "code": self.evict_status,
                }
            if self.refusals.get(key, 0) > 0:
                self.refusals[key] -= 1
                context.status_code = 429
                return {
                    "kind": "Status",
                    "code": 429,
                    "reason": "TooManyRequests",
                    "message": "Cannot evict pod as it would violate the pod's disruption budget.",
                }
            self.evictions.append(key)
            if self.linger:
                self.terminating[key] = self.linger
                for p in self.pods:
                    if _key(p) == key:
                        p["metadata"]["deletionTimestamp"] = "2026-11-25T10:00:00Z"
            else:
                self.pods = [p for p in self.pods if _key(p) != key]
            context.status_code = 201
            return {"kind": "Status", "status": "Success", "code": 201}
        context.status_code = 404
        return {"kind": "Status", "message": f"unexpected {request.method} {path}", "code": 404}


def _key(p: dict[str, Any]) -> str:
    return f"{p['metadata']['namespace']}/{p['metadata']['name']}"


def _verb_resource(method: str, path: str, query: dict[str, list[str]]) -> tuple[str, str]:
    """The RBAC verb and resource the API server would authorize this request against."""
    if re.fullmatch(r"/api/v1/nodes/[^/]+", path):
        return {"GET": "get", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}[method], "nodes"
    if path == "/api/v1/pods" or re.fullmatch(r"/api/v1/namespaces/[^/]+/pods", path):
        return ("watch" if query.get("watch") else "list"), "pods"
    if re.fullmatch(r"/api/v1/namespaces/[^/]+/pods/[^/]+/eviction", path):
        return {"POST": "create"}[method], "pods/eviction"
    return method.lower(), path


@pytest.fixture
def cluster() -> Iterator[tuple[FakeCluster, KubeApi]]:
    fake = FakeCluster()
    session = requests.Session()
    adapter = requests_mock.Adapter()
    adapter.register_uri(requests_mock.ANY, requests_mock.ANY, json=fake.handle)
    session.mount("https://", adapter)
    tokens = iter(f"token-{i}" for i in range(10_000))
    yield fake, KubeApi(API, lambda: next(tokens), session=session)


def run(api: KubeApi, clock: SleepClock, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> int:
    return main(
        [NODE, *args],
        env=env or {},
        api=api,
        monotonic=clock.monotonic,
        sleep=clock.sleep,
        termination_log=tmp_path / "termination-log",
    )


def test_cordons_evicts_and_succeeds(cluster: tuple[FakeCluster, KubeApi], tmp_path: Path) -> None:
    fake, api = cluster
    fake.pods = [
        pod("web-1"),
        pod("db-0", "data", owner="StatefulSet"),
        pod("bare", "default", owner=""),  # unmanaged: it goes with the server anyway
        pod("fluentd-x", "kube-system", owner="DaemonSet"),
        pod("kube-proxy-worker-1", "kube-system", owner="Node", annotations={"kubernetes.io/config.mirror": "abc"}),
        pod("done", "batch", owner="Job", phase="Succeeded"),
    ]
    clock = SleepClock()
    assert run(api, clock, tmp_path) == 0
    assert fake.patches == [("application/merge-patch+json", {"spec": {"unschedulable": True}})]
    assert sorted(fake.evictions) == ["apps/web-1", "data/db-0", "default/bare"]
    assert [p["metadata"]["name"] for p in fake.pods] == ["fluentd-x", "kube-proxy-worker-1", "done"]
    assert fake.calls.index(("patch", "nodes")) < fake.calls.index(("create", "pods/eviction"))
    assert not (tmp_path / "termination-log").exists()


def test_pdb_refusals_are_retried_until_allowed(cluster: tuple[FakeCluster, KubeApi], tmp_path: Path) -> None:
    fake, api = cluster
    fake.pods = [pod("web-1"), pod("web-2")]
    fake.refusals = {"apps/web-2": 3}
    clock = SleepClock()
    assert run(api, clock, tmp_path, "--retry-interval", "5") == 0
    assert fake.evictions == ["apps/web-1", "apps/web-2"]
    assert fake.calls.count(("create", "pods/eviction")) == 5  # web-1 once, web-2 refused three times then allowed
    # Three rounds refused, one allowed, then the list shows the Node empty.
    assert clock.sleeps == [5.0, 5.0, 5.0, 5.0]


def test_pdb_that_never_allows_fails_at_the_deadline(
    cluster: tuple[FakeCluster, KubeApi], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake, api = cluster
    fake.pods = [pod("web-1")]
    fake.refusals = {"apps/web-1": 10_000}
    clock = SleepClock()
    assert run(api, clock, tmp_path, "--timeout", "60", "--retry-interval", "5") == 1
    assert 59 <= sum(clock.sleeps) <= 60
    message = (tmp_path / "termination-log").read_text()
    assert "timed out with 1 pod(s) left on node worker-1: apps/web-1" in message
    assert "disruption budget" in message
    assert message in capsys.readouterr().err


def test_waits_for_evicted_pods_to_be_gone(cluster: tuple[FakeCluster, KubeApi], tmp_path: Path) -> None:
    fake, api = cluster
    fake.pods = [pod("web-1")]
    fake.linger = 3
    clock = SleepClock()
    assert run(api, clock, tmp_path) == 0
    assert fake.evictions == ["apps/web-1"]  # asked once; the terminating pod is waited for, not evicted again
    assert fake.pods == []
    assert fake.calls.count(("list", "pods")) == 5


def test_terminating_pod_that_never_goes_fails_the_drain(cluster: tuple[FakeCluster, KubeApi], tmp_path: Path) -> None:
    fake, api = cluster
    fake.pods = [pod("web-1")]
    fake.linger = 10_000
    assert run(api, SleepClock(), tmp_path, "--timeout", "30") == 1
    assert "apps/web-1 (terminating)" in (tmp_path / "termination-log").read_text()


def test_deadline_in_the_past_tries_once_then_fails(cluster: tuple[FakeCluster, KubeApi], tmp_path: Path) -> None:
    fake, api = cluster
    fake.pods = [pod("web-1")]
    fake.refusals = {"apps/web-1": 1}
    clock = SleepClock()
    assert run(api, clock, tmp_path, "--deadline", "2000-01-01T00:00:00Z") == 1
    assert fake.patches and fake.calls.count(("create", "pods/eviction")) == 1
    assert clock.sleeps == []


def test_forbidden_eviction_fails_at_once(cluster: tuple[FakeCluster, KubeApi], tmp_path: Path) -> None:
    fake, api = cluster
    fake.pods = [pod("web-1")]
    fake.evict_status = 403
    clock = SleepClock()
    assert run(api, clock, tmp_path) == 1
    assert clock.sleeps == []
    assert "HTTP 403" in (tmp_path / "termination-log").read_text()


def test_server_errors_are_retried(cluster: tuple[FakeCluster, KubeApi], tmp_path: Path) -> None:
    fake, api = cluster
    fake.pods = [pod("web-1")]
    fake.list_failures = 2
    clock = SleepClock()
    assert run(api, clock, tmp_path) == 0
    assert fake.evictions == ["apps/web-1"]
    assert len(clock.sleeps) == 3  # two failed lists, then one wait for the evicted pod to go


def test_missing_node_is_already_drained(cluster: tuple[FakeCluster, KubeApi], tmp_path: Path) -> None:
    fake, api = cluster
    fake.node = None
    assert run(api, SleepClock(), tmp_path) == 0
    assert fake.calls == [("get", "nodes")]


@pytest.mark.slow  # 1,203 evictions through requests_mock
def test_cordoned_node_is_not_patched_again_and_pages_are_followed(
    cluster: tuple[FakeCluster, KubeApi], tmp_path: Path
) -> None:
    fake, api = cluster
    assert fake.node is not None
    fake.node["spec"]["unschedulable"] = True
    fake.pods = [pod(f"web-{i}") for i in range(1203)]
    assert run(api, SleepClock(), tmp_path) == 0
    assert fake.patches == []
    assert len(fake.evictions) == 1203


def test_the_drain_pod_does_not_evict_itself(cluster: tuple[FakeCluster, KubeApi], tmp_path: Path) -> None:
    fake, api = cluster
    fake.pods = [pod("m-1-drain-abcde", "shoot", owner="Job"), pod("web-1")]
    env = {"POD_NAME": "m-1-drain-abcde", "POD_NAMESPACE": "shoot"}
    assert run(api, SleepClock(), tmp_path, env=env) == 0
    assert fake.evictions == ["apps/web-1"]


def test_token_is_read_for_every_request(cluster: tuple[FakeCluster, KubeApi], tmp_path: Path) -> None:
    # Projected ServiceAccount tokens are rotated during a drain that can last hours.
    fake, api = cluster
    fake.pods = [pod("web-1")]
    assert run(api, SleepClock(), tmp_path) == 0
    assert len(set(fake.tokens)) == len(fake.tokens) > 1
    assert all(t.startswith("Bearer token-") for t in fake.tokens)


def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as stop:
        main([NODE, "--deadline", "tomorrow"], env={}, termination_log=tmp_path / "t")
    assert stop.value.code == 2


def test_in_cluster_configuration(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("secret-token\n")
    (tmp_path / "ca.crt").write_text("---CA---")
    api = KubeApi.in_cluster({"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}, tmp_path)
    assert api.base_url == "https://10.96.0.1:443"
    v6 = KubeApi.in_cluster({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}, tmp_path)
    assert v6.base_url == "https://[fd00::1]:443"
    with pytest.raises(KubeError, match="KUBERNETES_SERVICE_HOST"):
        KubeApi.in_cluster({}, tmp_path)
    with pytest.raises(KubeError, match="token"):
        KubeApi.in_cluster({"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, tmp_path / "missing")


def test_token_ca_and_scheme_come_from_the_environment(tmp_path: Path) -> None:
    (tmp_path / "t").write_text("other-token\n")
    (tmp_path / "ca.pem").write_text("---CA---")
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "8080",
           "KUBE_TOKEN_FILE": str(tmp_path / "t"), "KUBE_CA_FILE": str(tmp_path / "ca.pem")}
    api = KubeApi.in_cluster(env, tmp_path / "no-mount")
    assert api.base_url == "https://127.0.0.1:8080" and api._verify == str(tmp_path / "ca.pem")
    assert api._token() == "other-token"
    plain = KubeApi.in_cluster({**env, "KUBE_API_SCHEME": "http"}, tmp_path / "no-mount")
    assert plain.base_url == "http://127.0.0.1:8080"  # only when asked for: the emulator's loopback API
    with pytest.raises(KubeError, match="KUBE_API_SCHEME"):
        KubeApi.in_cluster({**env, "KUBE_API_SCHEME": "ftp"}, tmp_path)
    with pytest.raises(KubeError, match="KUBE_CA_FILE"):
        KubeApi.in_cluster({**env, "KUBE_CA_FILE": str(tmp_path / "missing.pem")}, tmp_path)
    with pytest.raises(KubeError, match="token"):
        KubeApi.in_cluster({**env, "KUBE_TOKEN_FILE": str(tmp_path / "missing")}, tmp_path)


def test_termination_message_path_from_the_environment(cluster: tuple[FakeCluster, KubeApi], tmp_path: Path) -> None:
    fake, api = cluster
    fake.pods = [pod("web-1")]
    fake.evict_status = 403
    message = tmp_path / "message"
    env = {"TERMINATION_MESSAGE_PATH": str(message)}
    assert main([NODE], env=env, api=api, monotonic=SleepClock().monotonic, sleep=SleepClock().sleep) == 1
    assert "HTTP 403" in message.read_text()


def test_outside_a_cluster_the_program_fails_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([NODE], env={}, termination_log=tmp_path / "t") == 1
    assert "KUBERNETES_SERVICE_HOST" in capsys.readouterr().err


# --- RBAC -----------------------------------------------------------------------------------------------------------


def _manifests() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(DRAIN_DIR.rglob("*.yaml")):  # the per-namespace part is in namespace/
        if path.name != "kustomization.yaml":
            docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def test_drain_rbac_manifests_validate() -> None:
    docs = _manifests()
    assert {d["kind"] for d in docs} == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                                         "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    binding = next(d for d in docs if d["kind"] == "ClusterRoleBinding")
    account = next(d for d in docs if d["kind"] == "ServiceAccount")
    assert binding["roleRef"]["name"] == next(d for d in docs if d["kind"] == "ClusterRole")["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": account["metadata"]["namespace"]}
    ]
    assert account["metadata"]["name"] == "metal-machine-drain"  # DrainSettings' default
    kustomization = yaml.safe_load((DRAIN_DIR / "kustomization.yaml").read_text())
    files = [r for r in kustomization["resources"] if not (DRAIN_DIR / r).is_dir()]
    assert sorted(files) == sorted(p.name for p in DRAIN_DIR.glob("*.yaml") if p.name != "kustomization.yaml")


def test_cluster_role_grants_exactly_what_the_program_uses(
    cluster: tuple[FakeCluster, KubeApi], tmp_path: Path
) -> None:
    # A drain that does everything once: read and cordon the Node, list its pods, evict one past a PDB refusal.
    fake, api = cluster
    fake.pods = [pod("web-1"), pod("fluentd", "kube-system", owner="DaemonSet")]
    fake.refusals = {"apps/web-1": 1}
    assert run(api, SleepClock(), tmp_path) == 0
    used = set(fake.calls)
    role = next(d for d in _manifests() if d["kind"] == "ClusterRole")
    granted = set()
    for rule in role["rules"]:
        assert rule["apiGroups"] == [""]
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        granted |= {(verb, resource) for verb in rule["verbs"] for resource in rule["resources"]}
    assert granted == used == {("get", "nodes"), ("patch", "nodes"), ("list", "pods"), ("create", "pods/eviction")}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) not installed")
def test_kustomize_moves_the_service_account_to_the_machines_namespace(tmp_path: Path) -> None:
    base = tmp_path / "base"
    shutil.copytree(DRAIN_DIR, base)
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text("namespace: shoot--p--c\nresources:\n  - ../base\n")
    built = subprocess.run(
        ["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    docs = {d["kind"]: d for d in yaml.safe_load_all(built) if d}
    assert docs["ServiceAccount"]["metadata"]["namespace"] == "shoot--p--c"
    assert docs["ClusterRoleBinding"]["subjects"][0]["namespace"] == "shoot--p--c"
    assert "namespace" not in docs["ClusterRole"]["metadata"]
