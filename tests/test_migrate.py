"""`python -m hooks.migrate` against the emulator's Kubernetes REST API (no Metacontroller: the tests add its
finalizers where it would), and the RBAC that must allow exactly what it calls."""

from __future__ import annotations

import io
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from emulator.kubeapi import KubeApiServer
from emulator.metal import MetalSimulator
from emulator.store import Store
from hooks.equinix.client import MetalClient
from hooks.migrate.__main__ import main
from hooks.migrate.kube import MigrationApi
from hooks.migrate.plan import (
    HOOK_FINALIZERS,
    MC_SECRET_FINALIZER,
    MCM_FINALIZER,
    MCM_NODE_FINALIZER,
    PROVIDER_ID_ANNOTATION,
    Step,
    safe_to_release,
)
from tests.migrate_support import MACHINE_API, PROJECT, TOKEN, McmState, build_mcm_state

REPO = Path(__file__).resolve().parent.parent
MIGRATE_DIR = REPO / "kubernetes" / "migrate"
NS = "shoot--dev--eqx"
API_TOKEN = "migrate-sa-token"
K8S_VERSION = "1.33"
Obj = dict[str, Any]


@dataclass
class World:
    store: Store
    server: KubeApiServer
    api: MigrationApi
    sim: MetalSimulator
    sim_url: str
    state: McmState

    def run(self, *args: str, sleep: Callable[[float], None] | None = None) -> tuple[int, str]:
        """Run the program with a clock that moves only when it sleeps; `sleep` sees each wait first."""
        out = io.StringIO()
        now = [0.0]

        def wait(seconds: float) -> None:
            if sleep is not None:
                sleep(seconds)
            now[0] += seconds

        code = main(["--namespace", NS, "--poll-interval", "1", "--wait-timeout", "5", *args],
                    env={"METAL_API_URL": self.sim_url}, api=self.api, out=out,
                    metal=lambda token: MetalClient(token, base_url=self.sim_url, retry_budget=0.5),
                    monotonic=lambda: now[0], sleep=wait)
        return code, out.getvalue()

    def obj(self, kind: str, name: str) -> Obj:
        api = "v1" if kind in ("Secret", "Node") else MACHINE_API
        return self.store.get(api, kind, name, "" if kind == "Node" else NS)

    def finalizers(self, kind: str, name: str) -> list[str]:
        return list(self.obj(kind, name)["metadata"].get("finalizers") or [])

    def add_hook_finalizers(self) -> None:
        """What Metacontroller does once the controllers run: its finalizer on each decorated object."""
        secrets = [s for s in self.store.list("v1", "Secret", NS)
                   if (s["metadata"].get("labels") or {}).get("metal-machine-hooks/credentials") == "true"]
        for kind, objs in (("Machine", self.store.list(MACHINE_API, "Machine", NS)),
                           ("MachineClass", self.store.list(MACHINE_API, "MachineClass", NS)),
                           ("Secret", secrets)):
            for obj in objs:
                if HOOK_FINALIZERS[kind] not in (obj["metadata"].get("finalizers") or []) and \
                        not obj["metadata"].get("deletionTimestamp"):
                    obj["metadata"]["finalizers"] = [*obj["metadata"].get("finalizers", []), HOOK_FINALIZERS[kind]]
                    self.store.update(obj)


@pytest.fixture
def world() -> Iterator[World]:
    store = Store()
    store.load_yaml(sorted(p for p in (REPO / "kubernetes" / "crds").glob("*.yaml") if p.name != "kustomization.yaml"))
    sim = MetalSimulator({TOKEN: [PROJECT]})
    sim_server = sim.serve()
    server = KubeApiServer(store, tokens={API_TOKEN: f"system:serviceaccount:{NS}:metal-machine-migrate"}).start()
    try:
        state = build_mcm_state(store, sim, NS)
        yield World(store, server, MigrationApi(server.url, lambda: API_TOKEN), sim, sim_server.url, state)
    finally:
        server.stop()
        sim_server.shutdown()


def writes(server: KubeApiServer) -> list[Any]:
    return [r for r in server.requests() if r.verb not in ("get", "list")]


def test_a_dry_run_prints_the_plan_and_changes_nothing(world: World) -> None:
    before = world.store.resource_version()
    code, out = world.run()
    assert code == 0, out
    assert world.store.resource_version() == before and writes(world.server) == []
    assert "dry run" in out and "is scaled to zero and no pod of it runs" in out
    assert "Secret cloudprovider: add label metal-machine-hooks/credentials=true (used by MachineClass eqx-small)" \
        in out
    for machine in world.state.machines:
        assert f"Machine {machine} lacks {HOOK_FINALIZERS['Machine']}" in out
        assert f"Machine {machine}: record equinixmetal://" in out
        assert f"Machine {machine}: remove MCM's finalizer {MCM_FINALIZER}" in out
        assert f"Node {machine}: remove MCM's finalizer {MCM_NODE_FINALIZER}" in out
    assert out.index("3. Wait for Metacontroller's finalizers: 4") < out.index("4. Remove MCM's finalizers: 9")
    # What cannot be adopted, from the Metal API: the device with the class's tags that no Machine records.
    assert f"device {world.state.stray_device} (hostname 'workers-lost-1') carries MachineClass eqx-small's" in out


@pytest.mark.parametrize(("replicas", "running", "flag", "code", "words"), [
    (1, 1, False, 2, "wants 1 replica(s): MCM still acts on this namespace"),
    (1, 1, True, 2, "wants 1 replica(s)"),  # a visible running MCM is refused even with the confirmation
    (0, 1, False, 2, "1 pod(s) still run"),
    (0, 0, False, 0, "is scaled to zero"),
])
def test_mcm_must_be_stopped(world: World, replicas: int, running: int, flag: bool, code: int, words: str) -> None:
    deployment = world.store.get("apps/v1", "Deployment", "machine-controller-manager", NS)
    deployment["spec"]["replicas"] = replicas
    deployment = world.store.update(deployment)
    deployment["status"] = {"replicas": running}
    world.store.update_status(deployment)
    got, out = world.run("--apply", *(["--mcm-stopped-elsewhere"] if flag else []), "--skip-metal",
                         sleep=lambda s: world.add_hook_finalizers())
    assert got == code, out
    assert words in out
    if code == 2:
        assert writes(world.server) == [] and "refused: nothing was changed" in out


def test_mcm_running_elsewhere_needs_the_explicit_confirmation(world: World) -> None:
    world.store.delete("apps/v1", "Deployment", "machine-controller-manager", NS)
    code, out = world.run("--apply", "--skip-metal")
    assert code == 2 and "does not exist" in out and "--mcm-stopped-elsewhere" in out
    assert writes(world.server) == []
    code, out = world.run("--apply", "--skip-metal", "--mcm-stopped-elsewhere",
                          sleep=lambda s: world.add_hook_finalizers())
    assert code == 0, out and "you confirmed with --mcm-stopped-elsewhere" in out


def test_apply_labels_waits_for_metacontroller_then_removes_every_mcm_finalizer(world: World) -> None:
    looks: list[float] = []

    def metacontroller_arrives(seconds: float) -> None:
        looks.append(seconds)
        # MCM's finalizers must all still be there while the program waits.
        assert all(MCM_FINALIZER in world.finalizers("Machine", m) for m in world.state.machines)
        assert world.obj("Secret", "cloudprovider")["metadata"]["labels"]["metal-machine-hooks/credentials"] == "true"
        if len(looks) == 2:
            world.add_hook_finalizers()

    code, out = world.run("--apply", sleep=metacontroller_arrives)
    assert code == 0, out
    assert len(looks) == 2 and "migration finished" in out
    for machine in world.state.machines:
        assert world.finalizers("Machine", machine) == [HOOK_FINALIZERS["Machine"]]
        assert world.finalizers("Node", machine) == []
        annotations = world.obj("Machine", machine)["metadata"]["annotations"]
        assert annotations[PROVIDER_ID_ANNOTATION] == world.obj("Machine", machine)["spec"]["providerID"]
    assert world.finalizers("MachineClass", "eqx-small") == [HOOK_FINALIZERS["MachineClass"]]
    assert world.finalizers("Secret", "cloudprovider") == [HOOK_FINALIZERS["Secret"]]
    for ms in world.store.list(MACHINE_API, "MachineSet", NS) + world.store.list(MACHINE_API, "MachineDeployment", NS):
        assert MCM_FINALIZER not in (ms["metadata"].get("finalizers") or [])
    # Every write was a JSON patch that first tests the resourceVersion it was computed from (the API's log keeps
    # no Secret bodies, so those are checked by kind and content type only).
    for request in writes(world.server):
        assert request.verb == "patch" and request.content_type == "application/json-patch+json"
        if request.resource != "secrets":
            assert request.body[0]["op"] == "test" and request.body[0]["path"] == "/metadata/resourceVersion"
    assert f"device {world.state.stray_device}" in out  # still listed: nobody decided about it yet
    # Running it again finds nothing to do and writes nothing.
    count = len(writes(world.server))
    code, again = world.run("--apply")
    assert code == 0 and len(writes(world.server)) == count, again
    assert "1. Label the credentials Secrets the classes use: nothing to do" in again


def test_without_metacontroller_mcms_finalizers_stay_and_a_rerun_finishes(world: World) -> None:
    code, out = world.run("--apply", "--skip-metal")
    assert code == 1 and "Metacontroller's finalizers did not arrive in time" in out
    for machine in world.state.machines:
        assert world.finalizers("Machine", machine) == [MCM_FINALIZER]
        assert world.finalizers("Node", machine) == [MCM_NODE_FINALIZER]
    assert world.finalizers("Secret", "cloudprovider") == [MC_SECRET_FINALIZER]
    world.add_hook_finalizers()  # Metacontroller started meanwhile
    code, out = world.run("--apply", "--skip-metal")
    assert code == 0, out
    assert all(world.finalizers("Machine", m) == [HOOK_FINALIZERS["Machine"]] for m in world.state.machines)


def test_a_concurrent_change_is_never_overwritten(world: World) -> None:
    """Another writer changes the Machine between the program's read and its patch: the patch's resourceVersion
    test fails, the program reads again and keeps the other writer's change."""
    machine = world.state.machines[0]
    original = world.api.patch
    interfered: list[bool] = []

    def patch(kind: str, namespace: str, name: str, operations: list[Obj]) -> Any:
        if kind == "Machine" and name == machine and not interfered:
            interfered.append(True)
            obj = world.obj("Machine", machine)
            obj["metadata"]["labels"]["team"] = "blue"
            world.store.update(obj)
        return original(kind, namespace, name, operations)

    world.api.patch = patch  # type: ignore[method-assign]
    code, out = world.run("--apply", "--skip-metal", sleep=lambda s: world.add_hook_finalizers())
    assert code == 0, out
    stored = world.obj("Machine", machine)
    assert stored["metadata"]["labels"]["team"] == "blue"
    assert stored["metadata"]["finalizers"] == [HOOK_FINALIZERS["Machine"]]
    failed = [r for r in world.server.requests() if r.verb == "patch" and r.code == 422]
    assert len(failed) == 1


def test_a_machine_mcm_was_deleting_stays_mcms(world: World) -> None:
    machine = world.state.machines[0]
    world.store.delete(MACHINE_API, "Machine", machine, NS)  # MCM's finalizer keeps it, deleting
    code, out = world.run("--apply", "--skip-metal", sleep=lambda s: world.add_hook_finalizers())
    assert code == 0, out
    assert f"attention: Machine {machine} was being deleted when MCM stopped" in out
    assert world.finalizers("Machine", machine) == [MCM_FINALIZER]


def test_machines_whose_device_is_missing_or_not_provably_theirs_are_listed(world: World) -> None:
    first, second = world.state.machines
    world.sim.set_device_state(world.state.devices[first], "deleted")
    renamed = world.obj("Machine", second)
    renamed["spec"]["providerID"] = f"equinixmetal://da11/{world.state.stray_device}"  # a device named otherwise
    world.store.update(renamed)
    code, out = world.run()
    assert code == 0, out
    assert f"Machine {first}: its device {world.state.devices[first]} does not exist" in out or \
        f"Machine {first}: device {world.state.devices[first]} it cannot be adopted" in out
    assert (f"Machine {second}: device {world.state.stray_device} it cannot be adopted: device "
            f"{world.state.stray_device} has hostname 'workers-lost-1'") in out
    assert "(hostname proof failed)" in out


def test_rollback_writes_spec_provider_id_back_and_removes_the_hooks_finalizers(world: World) -> None:
    code, _ = world.run("--apply", "--skip-metal", sleep=lambda s: world.add_hook_finalizers())
    assert code == 0
    # A Machine the hooks created after the migration: its provider ID lives only in the annotation.
    created = world.obj("Machine", world.state.machines[0])
    del created["spec"]["providerID"]
    created["metadata"]["annotations"][PROVIDER_ID_ANNOTATION] = "equinixmetal://da/0d0e0f00-0000-4000-8000-0000000000aa"
    world.store.update(created)
    code, out = world.run("--rollback", "--apply")
    assert code == 0, out
    assert "rollback finished" in out
    restored = world.obj("Machine", world.state.machines[0])
    assert restored["spec"]["providerID"] == "equinixmetal://da/0d0e0f00-0000-4000-8000-0000000000aa"
    for machine in world.state.machines:
        assert world.finalizers("Machine", machine) == []
    assert world.finalizers("MachineClass", "eqx-small") == [] and world.finalizers("Secret", "cloudprovider") == []


def test_mcms_finalizer_never_goes_before_metacontrollers_is_there() -> None:
    machine = {"metadata": {"name": "m", "finalizers": [MCM_FINALIZER]}}
    step = Step("Machine", "m", "remove", remove_finalizers=(MCM_FINALIZER,))
    assert not safe_to_release(machine, step)
    machine["metadata"]["finalizers"].append(HOOK_FINALIZERS["Machine"])
    assert safe_to_release(machine, step)
    # Kinds the hooks hold without a finalizer (MachineSets, Nodes) have nothing to wait for.
    assert safe_to_release({"metadata": {"finalizers": [MCM_NODE_FINALIZER]}},
                           Step("Node", "n", "remove", remove_finalizers=(MCM_NODE_FINALIZER,)))


def test_outside_a_cluster_the_program_fails_clearly() -> None:
    out = io.StringIO()
    assert main(["--namespace", NS], env={}, out=out) == 1
    assert "KUBERNETES_SERVICE_HOST is not set" in out.getvalue()


def test_bad_arguments_exit_2() -> None:
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2


# ------------------------------------------------------------------------------------------------------ RBAC


def _manifests() -> list[Obj]:
    return [d for p in sorted(MIGRATE_DIR.glob("*.yaml")) if p.name != "kustomization.yaml"
            for d in yaml.safe_load_all(p.read_text()) if d]


def test_migrate_manifests_validate_and_bind_the_job_account() -> None:
    docs = _manifests()
    assert {d["kind"] for d in docs} == {"ServiceAccount", "Role", "RoleBinding", "ClusterRole",
                                         "ClusterRoleBinding", "Job"}
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    by_kind = {d["kind"]: d for d in docs}
    account = by_kind["ServiceAccount"]["metadata"]["name"]
    for binding, role in (("RoleBinding", "Role"), ("ClusterRoleBinding", "ClusterRole")):
        assert by_kind[binding]["roleRef"]["name"] == by_kind[role]["metadata"]["name"]
        assert by_kind[binding]["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": "default"}]
    pod = by_kind["Job"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account
    assert pod["containers"][0]["command"] == ["python", "-m", "hooks.migrate"]


def test_roles_grant_exactly_what_the_program_uses(world: World) -> None:
    # Everything once: a migration with a conflict-free wait, then a rollback.
    assert world.run("--apply", sleep=lambda s: world.add_hook_finalizers())[0] == 0
    assert world.run("--rollback", "--apply")[0] == 0
    used = {(r.verb, r.resource, r.name if r.resource == "deployments" else "") for r in world.server.requests()}
    granted: set[tuple[str, str, str]] = set()
    for doc in _manifests():
        if doc["kind"] not in ("Role", "ClusterRole"):
            continue
        for rule in doc["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
            names = rule.get("resourceNames") or [""]
            granted |= {(verb, resource, name) for verb in rule["verbs"] for resource in rule["resources"]
                        for name in names}
    assert used == granted


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) not installed")
def test_kustomize_moves_everything_to_the_namespace_being_migrated(tmp_path: Path) -> None:
    base = tmp_path / "base"
    shutil.copytree(MIGRATE_DIR, base)
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text("namespace: shoot--p--c\nresources:\n  - ../base\n")
    built = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, timeout=60,
                           check=True).stdout
    docs = {d["kind"]: d for d in yaml.safe_load_all(built) if d}
    for kind in ("ServiceAccount", "Role", "RoleBinding", "Job"):
        assert docs[kind]["metadata"]["namespace"] == "shoot--p--c", kind
    for kind in ("RoleBinding", "ClusterRoleBinding"):
        assert docs[kind]["subjects"][0]["namespace"] == "shoot--p--c", kind
    assert "namespace" not in docs["ClusterRole"]["metadata"]


def test_the_awaited_finalizers_are_those_of_the_shipped_controllers() -> None:
    """Metacontroller names a DecoratorController's finalizer after it: metacontroller.io/decoratorcontroller-<name>."""
    decorated: dict[str, str] = {}
    for path in sorted((REPO / "metacontroller").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "DecoratorController" and doc["spec"]["hooks"].get("finalize"):
                for resource in doc["spec"]["resources"]:
                    decorated[resource["resource"]] = f"metacontroller.io/decoratorcontroller-{doc['metadata']['name']}"
    assert {"Machine": decorated["machines"], "MachineClass": decorated["machineclasses"],
            "Secret": decorated["secrets"]} == HOOK_FINALIZERS
