"""The controller YAMLs for MachineSets, MachineDeployments and MachineClasses, checked against Metacontroller's CRDs
and against the hooks: every child or related kind a hook returns or reads is declared, and every path is served."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from hooks.config import Settings
from hooks.context import HookContext
from hooks.mcm import installation, machineclass, machinedeployment, machineset
from hooks.mcm import vocabulary as mcm
from hooks.server.app import create_app
from tests.crd_schema import metacontroller_crd_schema, problems

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
FILES = {
    "machinesets.yaml": "CompositeController",
    "machinedeployments.yaml": "CompositeController",
    "machineclasses.yaml": "DecoratorController",
}
KINDS = {"machines": "Machine", "machinesets": "MachineSet", "secrets": "Secret", "namespaces": "Namespace"}


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / "metacontroller" / name).read_text())


def rule_key(rule: dict[str, Any]) -> str:
    """The key Metacontroller files a rule's objects under in a v2 request (Kind.group/version or Kind.version)."""
    return f"{KINDS[rule['resource']]}.{rule['apiVersion']}"


@pytest.mark.parametrize(("name", "kind"), FILES.items())
def test_controller_validates_against_metacontrollers_crd(name: str, kind: str) -> None:
    schema = metacontroller_crd_schema(kind)
    if schema is None:
        pytest.skip("Metacontroller's CRDs are not available here")
    doc = load(name)
    assert doc["apiVersion"] == "metacontroller.k8s.io/v1alpha1" and doc["kind"] == kind
    body = {"spec": doc["spec"]}
    assert problems(body, {"type": "object", "properties": {"spec": schema["properties"]["spec"]}}, name) == []


@pytest.mark.parametrize("name", FILES)
def test_every_hook_is_v2_and_served_by_the_app(name: str) -> None:
    app = create_app(Settings())
    served = {rule.rule for rule in app.url_map.iter_rules() if "POST" in (rule.methods or set())}
    hooks = load(name)["spec"]["hooks"]
    for hook in hooks.values():
        assert hook["version"] == "v2"
        assert hook["webhook"]["service"] == {"name": "metal-machine-hooks", "namespace": "metal-machine-hooks",
                                              "port": 80}
        assert hook["webhook"]["path"] in served


def test_children_rules_name_exactly_the_kinds_the_hooks_return() -> None:
    sets = load("machinesets.yaml")["spec"]
    assert sets["parentResource"] == {"apiVersion": mcm.API_VERSION, "resource": "machinesets"}
    assert [rule_key(r) for r in sets["childResources"]] == [machineset.MACHINE_KEY]
    assert sets["childResources"][0]["updateStrategy"]["method"] == "OnDelete"
    assert set(sets["hooks"]) == {"customize", "sync"}  # customize relates the owning MachineDeployment

    deployments = load("machinedeployments.yaml")["spec"]
    assert deployments["parentResource"] == {"apiVersion": mcm.API_VERSION, "resource": "machinedeployments"}
    assert [rule_key(r) for r in deployments["childResources"]] == [machinedeployment.SET_KEY]
    assert deployments["childResources"][0]["updateStrategy"]["method"] == "InPlace"
    assert set(deployments["hooks"]) == {"sync"}


def test_class_controller_relates_exactly_what_the_class_hook_reads() -> None:
    spec = load("machineclasses.yaml")["spec"]
    assert spec["resources"] == [{"apiVersion": mcm.API_VERSION, "resource": "machineclasses"}]
    assert "attachments" not in spec
    assert spec["resyncPeriodSeconds"] >= machineclass.SCAN_INTERVAL
    parent = json.loads((FIXTURES / "machineclass" / "sync-request.json").read_text())["object"]
    ctx = HookContext(settings=Settings(), metal=lambda token: None)  # type: ignore[arg-type,return-value]
    rules = machineclass.customize({"parent": parent}, ctx)["relatedResources"]
    assert sorted({rule_key(r) for r in rules}) == sorted([machineclass.MACHINE_KEY, mcm.SECRET_KEY,
                                                           installation.NAMESPACE_KEY])


@pytest.mark.parametrize(
    ("path", "fixture", "allowed"),
    [
        ("/machineset/sync", "machineset/sync-request.json", {"status", "children", "resyncAfterSeconds",
                                                              "finalized"}),
        ("/machinedeployment/sync", "machinedeployment/sync-request.json", {"status", "children",
                                                                            "resyncAfterSeconds", "finalized"}),
    ],
)
def test_composite_routes_answer_with_composite_fields_only(path: str, fixture: str, allowed: set[str]) -> None:
    client = create_app(Settings()).test_client()
    answer = client.post(path, json=json.loads((FIXTURES / fixture).read_text()))
    assert answer.status_code == 200
    assert set(answer.get_json()) <= allowed and "children" in answer.get_json()


def test_routes_answer_400_to_malformed_requests() -> None:
    client = create_app(Settings()).test_client()
    for path in ("/machineset/sync", "/machinedeployment/sync", "/machineclass/sync", "/machineclass/finalize",
                 "/machineclass/customize"):
        answer = client.post(path, json={"parent": None, "object": None})
        assert answer.status_code == 400, path
        assert "error" in answer.get_json()
