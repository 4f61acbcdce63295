"""`python -m nodejobs` against a fake API server, and the RBAC that must allow exactly what it calls (issue 16)."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import kubernetes_validate
import pytest
import requests
import requests_mock
import yaml

from emulator.patches import merge_patch, strategic_merge_patch
from hooks.mcm import bootstrap
from hooks.mcm.node_side import LAST_APPLIED_ANNOTATION, MACHINE_NAME_LABEL
from nodejobs.__main__ import main
from nodejobs.kube import NodeSideApi

API = "https://10.0.0.1:443"
NODE_JOBS_DIR = Path(__file__).resolve().parent.parent / "kubernetes" / "node-jobs"
K8S_VERSION = "1.33"
KEY = b"0123456789abcdef0123456789abcdef-key"
UID = "7a1c0d7e-3b7e-4a55-8f7d-0c7e5d1e2f3a"
PROOF = ["--device-id", "d-1", "--provider-id", "equinixmetal://da/d-1"]
NOW = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


def _node(name: str = "m-1", provider_id: str = "equinixmetal://da/d-1", uid: str = "node-uid-1") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "uid": uid, "resourceVersion": "1",
                         "labels": {"kubernetes.io/hostname": name}, "annotations": {}},
            "spec": {"providerID": provider_id},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}}


class FakeCluster:
    """Secrets in namespaces and Nodes, with resourceVersion and UID preconditions; every call recorded."""

    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.nodes: dict[str, dict[str, Any]] = {"m-1": _node()}
        self.calls: list[tuple[str, str, str]] = []  # (verb, resource, namespace)
        self.bodies: list[str] = []
        self.conflicts_left = 0  # node writes answered 409 before working
        self.replace_before_delete: dict[str, Any] | None = None  # a namesake Node appears after the read
        self.secret_error: tuple[int, str] | None = None

    def _bump(self, node: dict[str, Any]) -> None:
        node["metadata"]["resourceVersion"] = str(int(node["metadata"]["resourceVersion"]) + 1)

    def handle(self, request: Any, context: Any) -> Any:
        path = urlparse(request.url).path
        self.bodies.append(request.body.decode() if isinstance(request.body, bytes) else str(request.body or ""))
        body = json.loads(request.body) if request.body else None
        if match := re.fullmatch(r"/api/v1/namespaces/([^/]+)/secrets(?:/([^/]+))?", path):
            namespace, name = match[1], match[2]
            verb = {"POST": "create", "DELETE": "delete", "GET": "get" if name else "list"}[request.method]
            self.calls.append((verb, "secrets", namespace))
            if self.secret_error:
                context.status_code = self.secret_error[0]
                return {"kind": "Status", "code": self.secret_error[0], "message": self.secret_error[1]}
            if request.method == "POST":
                key = (namespace, body["metadata"]["name"])
                if key in self.secrets:
                    context.status_code = 409
                    return {"kind": "Status", "code": 409, "reason": "AlreadyExists"}
                self.secrets[key] = body
                context.status_code = 201
                return body
            if self.secrets.pop((namespace, name), None) is None:
                context.status_code = 404
                return {"kind": "Status", "code": 404, "reason": "NotFound"}
            return {"kind": "Status", "status": "Success"}
        if match := re.fullmatch(r"/api/v1/nodes/([^/]+)(/status)?", path):
            name, status = match[1], bool(match[2])
            verb = {"GET": "get", "PATCH": "patch", "DELETE": "delete", "PUT": "update"}[request.method]
            self.calls.append((verb, "nodes/status" if status else "nodes", ""))
            node = self.nodes.get(name)
            if node is None:
                context.status_code = 404
                return {"kind": "Status", "code": 404, "reason": "NotFound"}
            if request.method == "GET":
                return node
            if request.method == "PATCH":
                if self.conflicts_left or (body.get("metadata") or {}).get("resourceVersion") not in (
                        None, node["metadata"]["resourceVersion"]):
                    self.conflicts_left = max(0, self.conflicts_left - 1)
                    self._bump(node)
                    context.status_code = 409
                    return {"kind": "Status", "code": 409, "reason": "Conflict"}
                strategic = request.headers["Content-Type"] == "application/strategic-merge-patch+json"
                patched = (strategic_merge_patch if strategic else merge_patch)(copy.deepcopy(node), body)
                if status:
                    patched = {**node, "status": patched["status"]}
                patched["metadata"]["resourceVersion"] = node["metadata"]["resourceVersion"]
                self._bump(patched)
                self.nodes[name] = patched
                return patched
            if self.replace_before_delete is not None:
                self.nodes[name] = node = self.replace_before_delete
                self.replace_before_delete = None
            if (body or {}).get("preconditions", {}).get("uid") not in (None, node["metadata"]["uid"]):
                context.status_code = 409
                return {"kind": "Status", "code": 409, "reason": "Conflict", "message": "Precondition failed: UID"}
            del self.nodes[name]
            return {"kind": "Status", "status": "Success"}
        context.status_code = 404
        return {"kind": "Status", "code": 404, "message": f"unexpected {request.method} {path}"}


@pytest.fixture
def cluster() -> Iterator[tuple[FakeCluster, NodeSideApi]]:
    fake = FakeCluster()
    session = requests.Session()
    adapter = requests_mock.Adapter()
    adapter.register_uri(requests_mock.ANY, requests_mock.ANY, json=fake.handle)
    session.mount("https://", adapter)
    yield fake, NodeSideApi(API, lambda: "token", session=session)


@pytest.fixture
def key_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "key").write_bytes(KEY + b"\n")
    return {bootstrap.KEY_FILE_ENV: str(tmp_path / "key")}


def run(api: NodeSideApi, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> int:
    return main(list(args), env=env or {}, api=api, wall_clock=lambda: NOW, termination_log=tmp_path / "term")


CREATE = ["token", "create", "--machine", "m-1", "--machine-uid", UID, "--expiration", "2026-12-03T10:20:00Z"]


def test_token_create_makes_the_secret_the_hook_renders(cluster: tuple[FakeCluster, NodeSideApi], tmp_path: Path,
                                                        key_env: dict[str, str],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    fake, api = cluster
    assert run(api, tmp_path, *CREATE, "--extra-groups", "system:bootstrappers:w", env=key_env) == 0
    token = bootstrap.derive(KEY, UID)
    secret = fake.secrets[("kube-system", token.secret_name)]
    assert secret["type"] == "bootstrap.kubernetes.io/token"
    assert secret["stringData"]["token-id"] == token.token_id and secret["stringData"]["token-secret"] == token.secret
    assert secret["stringData"]["expiration"] == "2026-12-03T10:20:00Z"
    assert secret["stringData"]["auth-extra-groups"] == "system:bootstrappers:w"
    assert secret["metadata"]["labels"][bootstrap.MACHINE_UID_LABEL] == UID
    # Again (a retried pod): the Secret exists, which is success.
    assert run(api, tmp_path, *CREATE, env=key_env) == 0
    out = capsys.readouterr()
    assert token.token_id in out.out and "already exists" in out.out
    assert token.secret not in out.out + out.err


def test_token_create_without_a_key_fails_clearly(cluster: tuple[FakeCluster, NodeSideApi], tmp_path: Path) -> None:
    fake, api = cluster
    assert run(api, tmp_path, *CREATE) == 1
    assert "BOOTSTRAP_TOKEN_KEY_FILE" in (tmp_path / "term").read_text()
    assert fake.calls == []


def test_an_api_error_echoing_the_token_is_redacted(cluster: tuple[FakeCluster, NodeSideApi], tmp_path: Path,
                                                    key_env: dict[str, str],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    fake, api = cluster
    token = bootstrap.derive(KEY, UID)
    fake.secret_error = (422, f'Secret "x" is invalid: data[token-secret]: {token.secret} ({token.value})')
    assert run(api, tmp_path, *CREATE, env=key_env) == 1
    message = (tmp_path / "term").read_text()
    assert "HTTP 422" in message and token.secret not in message
    assert token.secret[:8] not in message + capsys.readouterr().err


def test_token_delete_removes_it_and_a_missing_one_is_fine(cluster: tuple[FakeCluster, NodeSideApi], tmp_path: Path,
                                                           key_env: dict[str, str]) -> None:
    fake, api = cluster
    assert run(api, tmp_path, *CREATE, env=key_env) == 0
    assert run(api, tmp_path, "token", "delete", "--machine-uid", UID, env=key_env) == 0
    assert fake.secrets == {}
    assert run(api, tmp_path, "token", "delete", "--machine-uid", UID, env=key_env) == 0


TEMPLATE = {"metadata": {"labels": {"role": "gpu"}, "annotations": {"team": "a"}},
            "spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}


def test_node_sync_applies_the_template_through_a_conflict(cluster: tuple[FakeCluster, NodeSideApi],
                                                          tmp_path: Path) -> None:
    fake, api = cluster
    fake.conflicts_left = 1  # the kubelet wrote in between: read again, patch again
    assert run(api, tmp_path, "node", "sync", "m-1", "--machine", "m-1", "--template", json.dumps(TEMPLATE),
               *PROOF) == 0
    node = fake.nodes["m-1"]
    assert node["metadata"]["labels"] == {"kubernetes.io/hostname": "m-1", "role": "gpu", MACHINE_NAME_LABEL: "m-1"}
    assert node["metadata"]["annotations"]["team"] == "a" and LAST_APPLIED_ANNOTATION in node["metadata"]["annotations"]
    assert node["spec"]["taints"] == TEMPLATE["spec"]["taints"]
    assert fake.calls.count(("patch", "nodes", "")) == 2
    # The template changes: the label and taint it no longer has go, the Node's own label stays.
    assert run(api, tmp_path, "node", "sync", "m-1", "--machine", "m-1", "--template",
               json.dumps({"metadata": {"labels": {"tier": "1"}}}), *PROOF) == 0
    node = fake.nodes["m-1"]
    assert node["metadata"]["labels"] == {"kubernetes.io/hostname": "m-1", "tier": "1", MACHINE_NAME_LABEL: "m-1"}
    assert node["spec"]["taints"] == [] and "team" not in node["metadata"]["annotations"]


def test_node_steps_leave_a_node_of_another_device_alone(cluster: tuple[FakeCluster, NodeSideApi],
                                                         tmp_path: Path) -> None:
    fake, api = cluster
    fake.nodes["m-1"] = _node(provider_id="equinixmetal://da/someone-else")
    before = copy.deepcopy(fake.nodes)
    for args in (["sync", "m-1", "--machine", "m-1", "--template", "{}"], ["terminating", "m-1"], ["remove", "m-1"]):
        assert run(api, tmp_path, "node", *args, *PROOF) == 0
    assert fake.nodes == before and {c[0] for c in fake.calls} == {"get"}


def test_terminating_condition_is_added_beside_the_kubelets(cluster: tuple[FakeCluster, NodeSideApi],
                                                           tmp_path: Path) -> None:
    fake, api = cluster
    assert run(api, tmp_path, "node", "terminating", "m-1", "--machine-phase", "Running", *PROOF) == 0
    conditions = {c["type"]: c for c in fake.nodes["m-1"]["status"]["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    assert conditions["Terminating"] == {"type": "Terminating", "status": "True", "reason": "ScaleDown",
                                         "message": "Machine Controller is scaling down machine",
                                         "lastHeartbeatTime": "2026-12-03T10:00:00Z",
                                         "lastTransitionTime": "2026-12-03T10:00:00Z"}


def test_remove_deletes_the_proven_node_after_its_finalizers(cluster: tuple[FakeCluster, NodeSideApi],
                                                             tmp_path: Path) -> None:
    fake, api = cluster
    fake.nodes["m-1"]["metadata"]["finalizers"] = ["example.com/keep"]
    assert run(api, tmp_path, "node", "remove", "m-1", *PROOF) == 0
    assert fake.nodes == {}
    assert [c[:2] for c in fake.calls] == [("get", "nodes"), ("patch", "nodes"), ("delete", "nodes")]
    assert run(api, tmp_path, "node", "remove", "m-1", *PROOF) == 0  # already gone: not an error


def test_remove_never_deletes_a_namesake_that_replaced_the_node(cluster: tuple[FakeCluster, NodeSideApi],
                                                                tmp_path: Path) -> None:
    fake, api = cluster
    namesake = _node(provider_id="equinixmetal://da/another-device", uid="node-uid-2")
    fake.replace_before_delete = namesake
    assert run(api, tmp_path, "node", "remove", "m-1", *PROOF) == 0
    assert fake.nodes == {"m-1": namesake}  # the UID precondition failed; read again, not ours: left alone


def test_node_api_errors_fail_the_step(cluster: tuple[FakeCluster, NodeSideApi], tmp_path: Path) -> None:
    fake, api = cluster
    fake.conflicts_left = 100
    assert run(api, tmp_path, "node", "sync", "m-1", "--machine", "m-1", "--template", "{}", *PROOF) == 1
    assert "kept changing" in (tmp_path / "term").read_text()


def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["token", "create", "--machine", "m"], env={}, termination_log=tmp_path / "t")
    assert stop.value.code == 2
    with pytest.raises(SystemExit):
        main(["token", "create", "--machine", "m", "--machine-uid", "u", "--expiration", "2026-01-01T00:00:00Z",
              "--extra-groups", "system:masters"], env={}, termination_log=tmp_path / "t")


# --- RBAC -----------------------------------------------------------------------------------------------------------


def _manifests(directory: Path) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def _granted(role: dict[str, Any]) -> set[tuple[str, str]]:
    granted = set()
    for rule in role["rules"]:
        assert rule["apiGroups"] == [""]
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        granted |= {(verb, resource) for verb in rule["verbs"] for resource in rule["resources"]}
    return granted


def test_manifests_validate_and_bind_the_right_accounts() -> None:
    docs = _manifests(NODE_JOBS_DIR) + _manifests(NODE_JOBS_DIR / "kube-system")
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    accounts = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
    assert accounts == {"metal-machine-node", "metal-machine-bootstrap-token"}  # NodeJobSettings' defaults
    binding = next(d for d in docs if d["kind"] == "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == "metal-machine-node" and binding["subjects"][0]["name"] == "metal-machine-node"
    role_binding = next(d for d in docs if d["kind"] == "RoleBinding")
    role = next(d for d in docs if d["kind"] == "Role")
    assert role["metadata"]["namespace"] == role_binding["metadata"]["namespace"] == "kube-system"
    assert role_binding["subjects"][0]["name"] == "metal-machine-bootstrap-token"
    for directory in (NODE_JOBS_DIR, NODE_JOBS_DIR / "kube-system"):
        kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
        assert sorted(kustomization["resources"]) == sorted(
            p.name for p in directory.glob("*.yaml") if p.name != "kustomization.yaml")


def test_node_cluster_role_grants_exactly_what_the_node_steps_use(cluster: tuple[FakeCluster, NodeSideApi],
                                                                  tmp_path: Path) -> None:
    fake, api = cluster
    fake.nodes["m-1"]["metadata"]["finalizers"] = ["example.com/keep"]
    assert run(api, tmp_path, "node", "sync", "m-1", "--machine", "m-1", "--template", json.dumps(TEMPLATE),
               *PROOF) == 0
    assert run(api, tmp_path, "node", "terminating", "m-1", *PROOF) == 0
    assert run(api, tmp_path, "node", "remove", "m-1", *PROOF) == 0
    role = next(d for d in _manifests(NODE_JOBS_DIR) if d["kind"] == "ClusterRole")
    assert {c[:2] for c in fake.calls} == _granted(role) == {
        ("get", "nodes"), ("patch", "nodes"), ("delete", "nodes"), ("patch", "nodes/status")}


def test_token_role_grants_exactly_what_the_token_steps_use_in_kube_system(
    cluster: tuple[FakeCluster, NodeSideApi], tmp_path: Path, key_env: dict[str, str]
) -> None:
    fake, api = cluster
    assert run(api, tmp_path, *CREATE, env=key_env) == 0
    assert run(api, tmp_path, "token", "delete", "--machine-uid", UID, env=key_env) == 0
    role = next(d for d in _manifests(NODE_JOBS_DIR / "kube-system") if d["kind"] == "Role")
    assert {c[:2] for c in fake.calls} == _granted(role) == {("create", "secrets"), ("delete", "secrets")}
    assert {c[2] for c in fake.calls} == {"kube-system"}
