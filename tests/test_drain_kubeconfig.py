"""The drain and Node-side Job programs reach the target cluster through a mounted kubeconfig (KUBECONFIG).

The programs run against the emulator's REST API over a "target" store while the pod's in-cluster settings point
at a port where nothing listens: only the kubeconfig can make the drain succeed.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drain.__main__ import main as drain_main
from drain.kube import KubeApi, KubeError
from emulator.kubeapi import KubeApiServer
from emulator.store import Store
from nodejobs.kube import NodeSideApi

TOKEN = "target-token-for-drain-0123456789"
NODE = "m1"


def kubeconfig(server: str, user: dict[str, Any]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Config", "current-context": "t",
                       "clusters": [{"name": "t", "cluster": {"server": server}}],
                       "contexts": [{"name": "t", "context": {"cluster": "t", "user": "u"}}],
                       "users": [{"name": "u", "user": user}]})


@pytest.fixture
def target() -> Iterator[KubeApiServer]:
    store = Store()
    store.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}, "spec": {}})
    store.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "default"},
                  "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 0,
                           "containers": [{"name": "c", "image": "x"}]}})
    with KubeApiServer(store, tokens={TOKEN: "target-drainer"}, reap_interval=0.01) as api:
        yield api


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def in_cluster_env(tmp_path: Path) -> dict[str, str]:
    token = tmp_path / "sa-token"
    token.write_text("control-cluster-token")
    return {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(dead_port()),
            "KUBE_API_SCHEME": "http", "KUBE_TOKEN_FILE": str(token)}


def test_the_drain_program_drains_the_node_in_the_cluster_the_kubeconfig_names(
        target: KubeApiServer, tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(kubeconfig(target.url, {"token": TOKEN}))
    env = {**in_cluster_env(tmp_path), "KUBECONFIG": str(path)}
    assert drain_main([NODE, "--timeout", "10", "--retry-interval", "0.05"], env=env,
                      termination_log=tmp_path / "t") == 0
    assert target.store.get("v1", "Node", NODE)["spec"]["unschedulable"] is True
    assert target.store.try_get("v1", "Pod", "web", "default") is None
    assert {r.user for r in target.requests()} == {"target-drainer"}


def test_without_kubeconfig_the_pods_own_cluster_is_used(target: KubeApiServer, tmp_path: Path) -> None:
    env = in_cluster_env(tmp_path)
    assert drain_main([NODE, "--timeout", "0"], env=env, termination_log=tmp_path / "t") == 1
    assert target.requests() == []


def test_the_token_is_read_again_for_every_request_so_rotation_takes_effect(
        target: KubeApiServer, tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(kubeconfig(target.url, {"token": "old-token-that-was-revoked"}))
    api = KubeApi.from_kubeconfig(path)
    with pytest.raises(KubeError) as caught:
        api.get_node(NODE)
    assert caught.value.status == 401
    path.write_text(kubeconfig(target.url, {"token": TOKEN}))  # the kubelet refreshed the Secret volume
    assert api.get_node(NODE)["metadata"]["name"] == NODE


def test_a_kubeconfig_the_programs_cannot_use_fails_the_job_with_the_reason(
        target: KubeApiServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(kubeconfig(target.url, {"exec": {"command": "aws", "apiVersion": "v1"}}))
    log = tmp_path / "termination"
    assert drain_main([NODE], env={"KUBECONFIG": str(path)}, termination_log=log) == 1
    assert "exec credential plugin" in log.read_text()
    assert "exec credential plugin" in capsys.readouterr().err
    missing = {"KUBECONFIG": str(tmp_path / "nope")}
    assert drain_main([NODE], env=missing, termination_log=log) == 1
    assert "KUBECONFIG=" in log.read_text()


def test_the_node_side_jobs_client_takes_the_kubeconfig_too(target: KubeApiServer, tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(kubeconfig(target.url, {"token": TOKEN}))
    api = NodeSideApi.from_env({**in_cluster_env(tmp_path), "KUBECONFIG": str(path)})
    assert isinstance(api, NodeSideApi)
    api.patch_node(NODE, {"metadata": {"labels": {"node.machine.sapcloud.io/machine-name": "m1"}}})
    labels = target.store.get("v1", "Node", NODE)["metadata"]["labels"]
    assert labels == {"node.machine.sapcloud.io/machine-name": "m1"}
