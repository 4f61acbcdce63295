"""End to end: a namespace MCM managed moves to the hooks with `python -m hooks.migrate`, run as a program.

The state MCM leaves (tests/migrate_support.py: Machines with MCM's finalizers and spec.providerID, an unlabelled
Secret, devices tagged only with the class's tags, Nodes, a MachineDeployment at its second revision) sits in the
emulated cluster while our hooks run under the Metacontroller emulator against the Metal simulator. The migration
program runs as a subprocess against the emulator's Kubernetes REST API with a ServiceAccount token, as the Job in
kubernetes/migrate would. Then the namespace is scaled down, rolled out to a new class and deleted: no server may
leak, none may be duplicated, nothing may hang.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from emulator.kubeapi import KubeApiServer
from emulator.metal import MetalSimulator
from hooks.migrate.plan import HOOK_FINALIZERS, MC_SECRET_FINALIZER, MCM_FINALIZER, MCM_NODE_FINALIZER
from tests.emulator_support import RealCluster, real_cluster
from tests.migrate_support import MACHINE_API, PROJECT, TOKEN, McmState, build_mcm_state

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent
NS = "shoot--dev--eqx"
SA_TOKEN = "migrate-job-token"
Obj = dict[str, Any]


@dataclass
class Migrated:
    cluster: RealCluster
    sim: MetalSimulator
    state: McmState
    result: subprocess.CompletedProcess[str]
    api: KubeApiServer


def _machines(cluster: RealCluster) -> list[Obj]:
    return cluster.store.list(MACHINE_API, "Machine", NS)


def _live_devices(sim: MetalSimulator) -> list[Obj]:
    return [d for d in sim.devices() if d.get("state") not in ("deprovisioning", "deleted")]


def _column(crd: Obj, name: str, obj: Obj) -> Any:
    """What `kubectl get -o wide` shows in column `name` (plain dotted JSONPath; '/' and '-' are ordinary)."""
    (version,) = crd["spec"]["versions"]
    (column,) = [c for c in version["additionalPrinterColumns"] if c["name"] == name]
    value: Any = obj
    for part in column["jsonPath"].lstrip(".").split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def run_migration(api: KubeApiServer, sim_url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The program as the Job's pod runs it: in-cluster settings, a mounted token, plain HTTP to the emulator."""
    token_file = tmp_path / "token"
    token_file.write_text(SA_TOKEN)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "KUBERNETES_SERVICE_HOST": api.host,
        "KUBERNETES_SERVICE_PORT": str(api.port),
        "KUBE_API_SCHEME": "http",
        "KUBE_TOKEN_FILE": str(token_file),
        "METAL_API_URL": sim_url,
        "METAL_RETRY_BUDGET": "1",
    }
    return subprocess.run([sys.executable, "-m", "hooks.migrate", "--namespace", NS, "--poll-interval", "0.2",
                           "--wait-timeout", "60", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=180, check=False)


@pytest.fixture
def migrated(tmp_path: Path) -> Iterator[Migrated]:
    sim = MetalSimulator({TOKEN: [PROJECT]})
    server = sim.serve()
    try:
        with real_cluster(server.url, server.base_url, jobs="stand-in") as cluster:
            api = KubeApiServer(cluster.store, tokens={SA_TOKEN: f"system:serviceaccount:{NS}:metal-machine-migrate"})
            api.start()
            try:
                state = build_mcm_state(cluster.store, sim, NS)
                dry = run_migration(api, server.url, tmp_path)
                assert dry.returncode == 0, dry.stdout + dry.stderr
                assert [r for r in api.requests() if r.verb not in ("get", "list")] == []
                result = run_migration(api, server.url, tmp_path, "--apply")
                yield Migrated(cluster, sim, state, result, api)
            finally:
                api.stop()
    finally:
        server.shutdown()


def test_the_migration_program_takes_the_namespace_over(migrated: Migrated) -> None:
    result, store, state = migrated.result, migrated.cluster.store, migrated.state
    assert result.returncode == 0, result.stdout + result.stderr
    assert "migration finished" in result.stdout
    secret = store.get("v1", "Secret", "cloudprovider", NS)
    assert secret["metadata"]["labels"]["metal-machine-hooks/credentials"] == "true"
    assert secret["metadata"]["finalizers"] == [HOOK_FINALIZERS["Secret"]]
    assert MC_SECRET_FINALIZER not in secret["metadata"]["finalizers"]
    crd = store.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", "machines.machine.sapcloud.io")
    for machine in _machines(migrated.cluster):
        assert machine["metadata"]["finalizers"] == [HOOK_FINALIZERS["Machine"]]
        # kubectl get machines -o wide: the ProviderID column shows every Machine's provider ID.
        shown = _column(crd, "ProviderID", machine)
        assert isinstance(shown, str) and shown.endswith(state.devices[machine["metadata"]["name"]])
    (machine_class,) = store.list(MACHINE_API, "MachineClass", NS)
    assert machine_class["metadata"]["finalizers"] == [HOOK_FINALIZERS["MachineClass"]]
    for kind in ("MachineSet", "MachineDeployment"):
        for obj in store.list(MACHINE_API, kind, NS):
            assert MCM_FINALIZER not in (obj["metadata"].get("finalizers") or [])
    for name in state.machines:
        assert MCM_NODE_FINALIZER not in (store.get("v1", "Node", name)["metadata"].get("finalizers") or [])
    # What the hooks will not adopt is listed for a human: the device with the class's tags and no Machine.
    assert f"device {state.stray_device} (hostname 'workers-lost-1')" in result.stdout
    # Nothing was created meanwhile: the servers are MCM's, one per Machine, plus the stray one.
    assert sorted(d["id"] for d in _live_devices(migrated.sim)) == sorted([*state.devices.values(),
                                                                           state.stray_device])
    # Every write the program made is one its Role allows (tests/test_migrate.py checks the exact match).
    program = [r for r in migrated.api.requests() if r.user.endswith(":metal-machine-migrate")]
    assert {(r.verb, r.resource) for r in program} <= {
        ("get", "deployments"), ("get", "secrets"), ("patch", "secrets"), ("get", "nodes"), ("patch", "nodes"),
        *((v, r) for v in ("get", "list", "patch")
          for r in ("machines", "machineclasses", "machinesets", "machinedeployments"))}


def _wait(predicate: Any, timeout: float, message: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"not within {timeout} s: {message}")


def test_after_the_migration_scale_down_rollout_and_delete_leak_nothing(migrated: Migrated) -> None:
    cluster, sim, state = migrated.cluster, migrated.sim, migrated.state
    store = cluster.store
    assert migrated.result.returncode == 0, migrated.result.stdout + migrated.result.stderr
    seen_hostnames: list[list[str]] = []

    def no_duplicates() -> None:
        names = [d["hostname"] for d in _live_devices(sim)]
        seen_hostnames.append(names)
        assert len(names) == len(set(names)), f"two live servers for one Machine: {sorted(names)}"

    # Adoption: every server MCM made carries the hooks' ownership tag of its Machine, and no new server starts.
    def adopted() -> bool:
        no_duplicates()
        by_id = {d["id"]: d for d in sim.devices()}
        uids = {m["metadata"]["name"]: m["metadata"]["uid"] for m in _machines(cluster)}
        return all(f"metal-machine-hooks:uid:{uids[name]}" in by_id[device]["tags"]
                   for name, device in state.devices.items())

    _wait(adopted, 10, "MCM's servers adopted")
    for machine in _machines(cluster):
        assert machine["status"]["currentStatus"]["phase"] == "Running"
        assert machine["status"]["lastOperation"]["state"] != "Failed", machine["status"]["lastOperation"]
    assert sorted(d["id"] for d in _live_devices(sim)) == sorted([*state.devices.values(), state.stray_device])

    # Scale down to one: one of MCM's servers goes, nothing new starts.
    deployment = store.get(MACHINE_API, "MachineDeployment", "workers", NS)
    deployment["spec"]["replicas"] = 1
    store.update(deployment)
    _wait(lambda: (no_duplicates(), len(_machines(cluster)) == 1 and len(_live_devices(sim)) == 2)[1], 60,
          "scaled down to one Machine and one server (plus the stray one)")

    # Roll out to a new class: the new Machine gets a new server, the old one is deleted.
    second = copy.deepcopy(store.get(MACHINE_API, "MachineClass", "eqx-small", NS))
    second["metadata"] = {"name": "eqx-small-v2", "namespace": NS}
    store.create(second)
    deployment = store.get(MACHINE_API, "MachineDeployment", "workers", NS)
    deployment["spec"]["template"]["spec"]["class"]["name"] = "eqx-small-v2"
    store.update(deployment)

    def rolled_out() -> bool:
        no_duplicates()
        machines = _machines(cluster)
        return (len(machines) == 1 and machines[0]["spec"]["class"]["name"] == "eqx-small-v2"
                and (machines[0].get("status") or {}).get("currentStatus", {}).get("phase") == "Running"
                and not set(state.devices.values()) & {d["id"] for d in _live_devices(sim)})

    _wait(rolled_out, 120, "rolled out to eqx-small-v2, MCM's servers gone")

    # Delete everything: every object goes (nothing hangs) and only the stray server, never adopted, is left.
    store.delete(MACHINE_API, "MachineDeployment", "workers", NS)
    _wait(lambda: not _machines(cluster) and not store.list(MACHINE_API, "MachineSet", NS), 120,
          "Machines and MachineSets gone")
    for name in ("eqx-small", "eqx-small-v2"):
        store.delete(MACHINE_API, "MachineClass", name, NS)
    store.delete("v1", "Secret", "cloudprovider", NS)
    _wait(lambda: store.try_get("v1", "Secret", "cloudprovider", NS) is None
          and not store.list(MACHINE_API, "MachineClass", NS), 60, "classes and Secret gone")
    assert [d["id"] for d in _live_devices(sim)] == [state.stray_device]
    assert len(seen_hostnames) > 3  # the duplicate check ran throughout
