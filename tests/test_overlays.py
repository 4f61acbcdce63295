"""The overlays and components in kubernetes/ do what the docs say: each builds offline, what it emits validates
(built-in kinds strictly against the Kubernetes schemas, the controllers against Metacontroller's CRDs), and each has
the effect it promises: probes over HTTPS, a second accepted token, auth off only where asked, the drain Jobs
following a custom image, another Metacontroller namespace followed everywhere, one drain binding per namespace,
and a scrapeable /metrics."""

from __future__ import annotations

import copy
import functools
import os
import shutil
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from hooks.mcm.drain import DrainSettings, build_job
from tests.crd_schema import problems
from tests.test_manifests import (
    CONTROLLER_KINDS,
    CUSTOM_GROUPS,
    K8S_VERSION,
    METACONTROLLER_REF,
    kustomize_build,
    metacontroller_crd_schema,
)

pytestmark = pytest.mark.slow  # every test runs kubectl kustomize

REPO = Path(__file__).resolve().parent.parent
KUBERNETES = REPO / "kubernetes"
OVERLAYS = sorted(p.parent for p in (KUBERNETES / "overlays").rglob("kustomization.yaml"))
COMPONENTS = sorted(p.parent for p in (KUBERNETES / "components").glob("*/kustomization.yaml"))
DEFAULT_IMAGE = "ghcr.io/metal-machine-hooks/metal-machine-hooks"


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


@functools.cache
def _built(directory: Path) -> tuple[dict[str, Any], ...]:
    return tuple(kustomize_build(directory))


def build(directory: Path) -> list[dict[str, Any]]:
    """The objects `kubectl apply -k directory` would send (each build runs once per test session)."""
    return copy.deepcopy(list(_built(directory)))


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = one(objects, "Deployment", "metal-machine-hooks")
    (hooks,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "hooks"]
    return hooks


def env(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container(objects).get("env", [])}


# ------------------------------------------------------------------------------------------- build and validate


@pytest.mark.parametrize("overlay", OVERLAYS, ids=_rel)
def test_overlay_builds_and_validates(overlay: Path) -> None:
    objects = build(overlay)
    assert objects
    for obj in objects:
        group = obj["apiVersion"].split("/")[0]
        if obj["kind"] in CONTROLLER_KINDS:
            schema = copy.deepcopy(metacontroller_crd_schema(obj["kind"]))
            schema["properties"]["metadata"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
            assert problems(obj, schema, obj["metadata"]["name"]) == []
        elif not group.endswith(CUSTOM_GROUPS):
            try:
                kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {'.'.join(map(str, exc.absolute_path))}: "
                            f"{exc.message}")


def test_every_component_is_used_by_an_overlay() -> None:
    used = set()
    for overlay in OVERLAYS:
        doc = yaml.safe_load((overlay / "kustomization.yaml").read_text())
        used |= {(overlay / c).resolve() for c in doc.get("components", [])}
    assert {c.resolve() for c in COMPONENTS} - used == set()


# ------------------------------------------------------------------------------------------------------- effects


def test_tls_serves_https_and_the_probes_follow() -> None:
    objects = build(KUBERNETES / "overlays" / "tls")
    hooks = container(objects)
    for probe in ("livenessProbe", "readinessProbe"):
        assert hooks[probe]["httpGet"]["scheme"] == "HTTPS", f"{probe} would fail against HTTPS and restart the pod"
    values = env(objects)
    mounts = {m["name"]: m["mountPath"] for m in hooks["volumeMounts"]}
    volumes = {v["name"]: v for v in one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    for variable in ("TLS_CERT_FILE", "TLS_KEY_FILE"):
        assert os.path.dirname(values[variable]["value"]) == mounts["tls"]
    assert volumes["tls"]["secret"]["secretName"] == "metal-machine-hooks-tls"
    (port,) = one(objects, "Service")["spec"]["ports"]
    assert port["port"] == 443 and port["targetPort"] == "http"


def test_base_probes_stay_plain_http() -> None:
    hooks = container(build(KUBERNETES / "deploy"))
    assert "scheme" not in hooks["livenessProbe"]["httpGet"]


def test_tls_controllers_call_every_hook_over_https_with_the_ca() -> None:
    controllers = [o for o in build(KUBERNETES / "overlays" / "tls-controllers") if o["kind"] in CONTROLLER_KINDS]
    assert len(controllers) == 5  # machines, classes, sets, deployments, credentials
    for controller in controllers:
        for name, hook in controller["spec"]["hooks"].items():
            webhook = hook["webhook"]
            where = f"{controller['metadata']['name']} {name}"
            assert webhook["service"]["port"] == 443 and webhook["service"]["protocol"] == "https", where
            assert webhook["service"]["name"] == "metal-machine-hooks", where
            assert webhook["caBundle"]["secretRef"] == {"name": "metal-machine-hooks-tls",
                                                        "namespace": "metal-machine-hooks", "key": "ca.crt"}, where
            assert webhook["path"].startswith("/"), where


def test_token_rotation_accepts_a_next_token_from_the_same_secret() -> None:
    values = env(build(KUBERNETES / "overlays" / "token-rotation"))
    current = values["HOOK_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
    upcoming = values["HOOK_AUTH_TOKEN_NEXT"]["valueFrom"]["secretKeyRef"]
    assert upcoming["name"] == current["name"] and upcoming["key"] != current["key"]
    assert upcoming["optional"] is True, "without the `next` key only the current token must be accepted"
    assert "HOOK_AUTH_TOKEN_NEXT" not in env(build(KUBERNETES / "deploy"))


def test_auth_is_off_only_in_the_local_overlay() -> None:
    assert env(build(KUBERNETES / "overlays" / "local-no-auth"))["HOOK_AUTH_DISABLED"]["value"] == "true"
    for overlay in OVERLAYS:
        if overlay.name != "local-no-auth" and any(o["kind"] == "Deployment" for o in build(overlay)):
            assert "HOOK_AUTH_DISABLED" not in env(build(overlay)), _rel(overlay)


@pytest.mark.parametrize("overlay", [KUBERNETES / "deploy", *OVERLAYS], ids=_rel)
def test_drain_jobs_run_the_image_the_hook_server_runs(overlay: Path) -> None:
    """DRAIN_IMAGE equals the container image in every build, so the drain Job the finalize hook declares runs the
    image the overlay chose (not the default one from a registry the cluster may not reach)."""
    objects = build(overlay)
    if not any(o["kind"] == "Deployment" for o in objects):
        pytest.skip("no hook server in this overlay")
    image = container(objects)["image"]
    settings = DrainSettings.from_env({k: v["value"] for k, v in env(objects).items() if "value" in v})
    machine = {"apiVersion": "machine.sapcloud.io/v1alpha1", "kind": "Machine",
               "metadata": {"name": "m-1", "namespace": "team-a", "uid": "0b6f3a3e-4c1d-4f2a-9d7e-5a6b7c8d9e0f"},
               "spec": {}}
    job = build_job(machine, "node-1", settings)
    assert {c["image"] for c in job["spec"]["template"]["spec"]["containers"]} == {image}


def test_custom_image_overlay_moves_the_image_and_the_drain_image() -> None:
    objects = build(KUBERNETES / "overlays" / "custom-image")
    image = container(objects)["image"]
    assert not image.startswith(DEFAULT_IMAGE)
    assert env(objects)["DRAIN_IMAGE"]["value"] == image


def test_metacontroller_namespace_is_followed_by_the_policy_and_the_admission_rule() -> None:
    component = yaml.safe_load((KUBERNETES / "components" / "metacontroller-namespace" / "kustomization.yaml")
                               .read_text())
    values = {str(op.get("value")) for p in component["patches"] for op in yaml.safe_load(p["patch"])
              if op["op"] == "replace"}
    namespaces = {v.split(":")[2] if v.startswith("'system:serviceaccount:") else v for v in values}
    assert len(namespaces) == 1, f"the component's values disagree: {sorted(values)}"
    (namespace,) = namespaces
    objects = build(KUBERNETES / "overlays" / "metacontroller-namespace")
    policy = one(objects, "NetworkPolicy")
    admitted = [p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                for rule in policy["spec"]["ingress"] for p in rule["from"]]
    assert admitted == [namespace]
    admission = one(objects, "ValidatingAdmissionPolicy")
    user = {v["name"]: v["expression"] for v in admission["spec"]["variables"]}["metacontrollerUser"]
    assert user == f"'system:serviceaccount:{namespace}:metacontroller'"


def test_metacontroller_namespace_moves_the_least_privilege_binding(tmp_path: Path) -> None:
    if not METACONTROLLER_REF.is_dir():
        pytest.skip("Metacontroller's manifests are not available beside the repository (../shared)")
    base = tmp_path / "base"
    shutil.copytree(METACONTROLLER_REF, base)
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    components = [os.path.relpath(REPO / "metacontroller" / "least-privilege", overlay),
                  os.path.relpath(KUBERNETES / "components" / "metacontroller-namespace", overlay)]
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({"resources": ["../base"], "components": components}))
    binding = one(kustomize_build(overlay), "ClusterRoleBinding", "metacontroller-least-privilege")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "metacontroller",
                                    "namespace": "metacontroller-system"}]


def drain_builds() -> list[Path]:
    return [KUBERNETES / "drain", *sorted(p for p in OVERLAYS if p.parent.name == "drain-namespaces")]


def test_each_machine_namespace_gets_its_own_drain_binding() -> None:
    bindings: dict[str, str] = {}
    for directory in drain_builds():
        objects = build(directory)
        account = one(objects, "ServiceAccount", "metal-machine-drain")
        namespace = account["metadata"]["namespace"]
        binding = one(objects, "ClusterRoleBinding")
        assert binding["metadata"]["name"] == f"metal-machine-drain-{namespace}"
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "metal-machine-drain",
                                        "namespace": namespace}]
        assert binding["metadata"]["name"] not in bindings, f"{_rel(directory)} replaces {bindings}"
        bindings[binding["metadata"]["name"]] = _rel(directory)
    assert len(bindings) >= 2


def test_an_extra_drain_namespace_brings_no_cluster_wide_object_but_its_binding() -> None:
    """So `kubectl delete -k` on it removes that namespace's rights and nothing the others share."""
    for directory in drain_builds()[1:]:
        kinds = sorted(o["kind"] for o in build(directory))
        assert kinds == ["ClusterRoleBinding", "ServiceAccount"], _rel(directory)


def test_a_hyphenated_namespace_names_its_binding_whole(tmp_path: Path) -> None:
    overlay = tmp_path / "ns"
    overlay.mkdir()
    source = yaml.safe_load((drain_builds()[1] / "kustomization.yaml").read_text())
    source["namespace"] = "team-blue-2"
    source["resources"] = [os.path.relpath(KUBERNETES / "drain" / "namespace", overlay)]
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(source))
    binding = one(kustomize_build(overlay), "ClusterRoleBinding")
    assert binding["metadata"]["name"] == "metal-machine-drain-team-blue-2"


def test_metrics_overlay_admits_the_scraper_and_keeps_metacontroller() -> None:
    objects = build(KUBERNETES / "overlays" / "metrics")
    policy = one(objects, "NetworkPolicy")
    admitted = {p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                for rule in policy["spec"]["ingress"] for p in rule["from"]}
    assert admitted == {"metacontroller", "monitoring"}
    assert all(rule["ports"] == [{"protocol": "TCP", "port": 8080}] for rule in policy["spec"]["ingress"])
    monitor = one(objects, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= one(objects, "Service")["metadata"]["labels"].items()


def test_components_combine_tls_and_metrics_scraping(tmp_path: Path) -> None:
    """Your own overlay may list several components: with TLS, the scrape follows to HTTPS. Components apply in
    order, so metrics-scraping (which adds the ServiceMonitor) comes before tls (which patches it)."""
    overlay = tmp_path / "mine"
    overlay.mkdir()
    components = [os.path.relpath(KUBERNETES / "components" / name, overlay) for name in ("metrics-scraping", "tls")]
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(
        {"resources": [os.path.relpath(KUBERNETES / "deploy", overlay)], "components": components}))
    objects = kustomize_build(overlay)
    (endpoint,) = one(objects, "ServiceMonitor")["spec"]["endpoints"]
    (port,) = one(objects, "Service")["spec"]["ports"]
    assert endpoint["scheme"] == "https" and endpoint["port"] == port["name"] == "https"
    assert endpoint["tlsConfig"]["serverName"] == "metal-machine-hooks.metal-machine-hooks"
