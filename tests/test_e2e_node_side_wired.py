"""End to end through the whole emulated cluster, once the Node side is wired into the hooks (issue 16).

Our hook app under the Metacontroller emulator with the Metal simulator, the Jobs' programs running for real
against the emulator's REST API. Each test asserts what a user sees with hooks/mcm/node_side.py and
hooks/mcm/deletion_request.py wired into the Machine, MachineSet and MachineDeployment hooks (docs/nodes.md,
"Wiring"), in both topologies: one cluster, and two (Nodes and bootstrap tokens in a target cluster that the Jobs
reach through the mounted kubeconfig Secret, issue 17).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hooks.mcm import bootstrap
from hooks.mcm.deletion_request import SCALER_TIME_ANNOTATION, SET_DELETION_ANNOTATION, TRIGGER_DELETION_ANNOTATION
from hooks.mcm.node_side import MACHINE_NAME_LABEL
from hooks.mcm.timefmt import parse_time
from tests.emulator_support import RealCluster, real_cluster
from tests.test_e2e_drain_program import EXAMPLES, MACHINE, MACHINE_API, RecordedSim, _example, _wait
from tests.test_e2e_node_side import valid_bootstrap_token

Obj = dict[str, Any]
KEY = b"wired-e2e-bootstrap-token-key-32-bytes-or-more"
GARDENER_USER_DATA = ("#!/bin/bash\n# gardener-node-agent bootstrap (shape of Gardener's cloud-config)\n"
                      "kubeadm join api.shoot.example:443 --token <<BOOTSTRAP_TOKEN>> --node-name <<MACHINE_NAME>> "
                      "--discovery-token-unsafe-skip-ca-verification\n")
pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(params=[False, True], ids=["one-cluster", "two-clusters"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[RealCluster, RecordedSim]]:
    """Both topologies: with two clusters the Nodes and bootstrap token Secrets are the target's, which the Jobs
    reach through the mounted kubeconfig (the key Secret stays in the Machines' namespace of the control cluster)."""
    (tmp_path / "key").write_bytes(KEY)
    monkeypatch.setenv(bootstrap.KEY_FILE_ENV, str(tmp_path / "key"))  # the hook server's mounted key
    token = _example("secret.yaml", "Secret")["stringData"]["apiToken"]
    project = _example("machine-class.yaml", "MachineClass")["providerSpec"]["projectID"]
    recorded = RecordedSim({token: [project]})
    try:
        with real_cluster(recorded.server.url, recorded.server.base_url, jobs="program",
                          two_clusters=request.param) as running:
            running.store.create({"apiVersion": "v1", "kind": "Secret",
                                  "metadata": {"name": bootstrap.DEFAULT_KEY_SECRET, "namespace": "default"},
                                  "data": {"key": base64.b64encode(KEY).decode()}})
            yield running, recorded
    finally:
        recorded.server.shutdown()


def _machine(store: Any, name: str = MACHINE) -> Obj | None:
    return store.try_get(MACHINE_API, "Machine", name, "default")


def _phase(store: Any, name: str = MACHINE) -> str:
    return str((((_machine(store, name) or {}).get("status") or {}).get("currentStatus") or {}).get("phase") or "")


def test_gardener_user_data_gets_a_fresh_bootstrap_token_that_exists_in_kube_system(
    cluster: tuple[RealCluster, RecordedSim], caplog: pytest.LogCaptureFixture
) -> None:
    running, recorded = cluster
    store = running.store
    secret = _example("secret.yaml", "Secret")
    secret["stringData"]["userData"] = GARDENER_USER_DATA
    store.create(secret)
    store.load_yaml([EXAMPLES / "machine-class.yaml", EXAMPLES / "machine.yaml"])
    devices = _wait(lambda: recorded.sim.devices(), 60, "the device is created")
    user_data = devices[0]["userdata"]
    assert "<<BOOTSTRAP_TOKEN>>" not in user_data
    found = re.search(r"--token ([a-z0-9]{6}\.[a-z0-9]{16}) --node-name eqx-test-machine ", user_data)
    assert found, user_data
    token = found[1]
    stored = running.node_store.get("v1", "Secret", f"bootstrap-token-{token.split('.')[0]}", "kube-system")
    assert valid_bootstrap_token(stored, token, datetime.now(UTC))
    machine = _machine(store)
    assert machine is not None
    created = parse_time(machine["metadata"]["creationTimestamp"])
    assert created is not None
    expiry = base64.b64decode(stored["data"]["expiration"]).decode()
    assert expiry == (created + timedelta(minutes=20)).strftime("%Y-%m-%dT%H:%M:%SZ")  # the creation timeout
    # The secret half is in the device's userData and the Secret only.
    secret_half = token.split(".")[1]
    for obj in [machine, *store.list("batch/v1", "Job", "default"), *store.list("v1", "Pod", "default")]:
        assert secret_half not in json.dumps(obj)
    assert all(secret_half not in text for text in running.jobs.logs.values())
    assert secret_half not in caplog.text and secret_half[:8] not in caplog.text  # the hook server's log lines


def test_scale_down_removes_the_node_after_its_device(cluster: tuple[RealCluster, RecordedSim]) -> None:
    running, recorded = cluster
    store, mc, api = running.store, running.mc, running.node_api
    store.load_yaml([EXAMPLES / "secret.yaml", EXAMPLES / "machine-class.yaml", EXAMPLES / "machine.yaml"])
    mc.wait_for(lambda s: _phase(s) == "Running", timeout=60, message="Machine Running")
    node = _machine(store)["metadata"]["labels"]["node"]  # type: ignore[index]
    assert running.node_store.try_get("v1", "Node", node) is not None
    running.joiner.stop()  # no cloud node lifecycle controller: a Node stays unless someone deletes it
    store.delete(MACHINE_API, "Machine", MACHINE, "default")
    mc.wait_for(lambda s: _machine(s) is None, timeout=90, message="Machine gone")
    assert running.node_store.try_get("v1", "Node", node) is None, "the Node stayed behind"
    deletes = [r for r in api.requests() if r.verb == "delete" and r.resource == "nodes" and r.code == 200]
    assert len(deletes) == 1 and deletes[0].user == running.node_user("metal-machine-node")
    assert deletes[0].at > recorded.device_deletes()[0].at


def test_node_template_appears_on_the_node_and_follows_changes(cluster: tuple[RealCluster, RecordedSim]) -> None:
    running, _ = cluster
    store, mc = running.store, running.mc
    machine = _example("machine.yaml", "Machine")
    machine["spec"]["nodeTemplate"] = {
        "metadata": {"labels": {"worker.gardener.cloud/pool": "gpu"}, "annotations": {"team": "ml"}},
        "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]}}
    store.load_yaml([EXAMPLES / "secret.yaml", EXAMPLES / "machine-class.yaml"])
    store.create(machine)
    mc.wait_for(lambda s: _phase(s) == "Running", timeout=60, message="Machine Running")
    node = _machine(store)["metadata"]["labels"]["node"]  # type: ignore[index]
    _wait(lambda: [j for j in store.list("batch/v1", "Job", "default")
                   if (j["metadata"].get("annotations") or {}).get("metal-machine-hooks/node-step") == "node-sync"],
          10, "a node sync Job is declared")

    nodes = running.node_store

    def labels() -> Obj:
        return (nodes.get("v1", "Node", node)["metadata"].get("labels") or {})

    _wait(lambda: labels().get("worker.gardener.cloud/pool") == "gpu", 60, "the template's label on the Node")
    assert labels()[MACHINE_NAME_LABEL] == MACHINE
    current = nodes.get("v1", "Node", node)
    assert current["metadata"]["annotations"]["team"] == "ml"
    assert current["spec"]["taints"] == machine["spec"]["nodeTemplate"]["spec"]["taints"]
    fresh = _machine(store)
    assert fresh is not None
    fresh["spec"]["nodeTemplate"] = {"metadata": {"labels": {"worker.gardener.cloud/pool": "cpu"}}}
    store.update(fresh)
    _wait(lambda: labels().get("worker.gardener.cloud/pool") == "cpu", 60, "the Node follows the template")
    current = nodes.get("v1", "Node", node)
    assert "team" not in (current["metadata"].get("annotations") or {}) and not current["spec"].get("taints")


def test_the_deletion_annotation_removes_exactly_the_named_machine(cluster: tuple[RealCluster, RecordedSim]) -> None:
    running, _ = cluster
    store, mc = running.store, running.mc
    deployment = _example("machine-deployment.yaml", "MachineDeployment")
    deployment["spec"]["replicas"] = 2
    store.load_yaml([EXAMPLES / "secret.yaml", EXAMPLES / "machine-class.yaml"])
    store.create(deployment)

    def machines(s: Any) -> list[Obj]:
        return [m for m in s.list(MACHINE_API, "Machine", "default") if not m["metadata"].get("deletionTimestamp")]

    mc.wait_for(lambda s: len([m for m in machines(s) if _phase(s, m["metadata"]["name"]) == "Running"]) == 2,
                timeout=90, message="two Machines Running")
    names = sorted(m["metadata"]["name"] for m in machines(store))
    named = names[-1]  # the newest name: not necessarily the one a plain scale-down would pick
    seen: list[str] = []  # every deletion list a MachineSet carried (the MachineDeployment hook passes it down)

    def record(event: Any) -> None:
        if event.object.get("kind") == "MachineSet":
            seen.append(str((event.object["metadata"].get("annotations") or {}).get(SET_DELETION_ANNOTATION) or ""))

    unsubscribe = store.watch(record)
    current = store.get(MACHINE_API, "MachineDeployment", deployment["metadata"]["name"], "default")
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    current["metadata"].setdefault("annotations", {}).update(
        {TRIGGER_DELETION_ANNOTATION: f"{named}~{stamp}", SCALER_TIME_ANNOTATION: stamp})
    current["spec"]["replicas"] = 1
    store.update(current)
    passed = _wait(lambda: [v for v in seen if v.startswith(f"{named}~")], 10, "the MachineSet is told the name")
    assert passed[0] == f"{named}~{stamp}"
    mc.wait_for(lambda s: _machine(s, named) is None, timeout=120, message="the named Machine is gone")
    unsubscribe()
    assert [m["metadata"]["name"] for m in machines(store)] == [n for n in names if n != named]
