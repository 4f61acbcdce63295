"""Credentials Secrets are held while a MachineClass names them, by MCM's rule (`reconcileClusterSecret` and
`findMachineClassForSecret`, MCM's pkg/util/provider/machinecontroller/secret.go and secret_util.go)."""

from __future__ import annotations

import base64
import copy
import logging
from datetime import UTC, datetime
from typing import Any

import pytest

from hooks.config import Settings
from hooks.context import BadRequest, HookContext
from hooks.mcm import credentials
from hooks.server.app import create_app

NS = "shoot--demo--cluster"
TOKEN = "s3cr3t-api-token-value"
CLASS_KEY = "MachineClass.machine.sapcloud.io/v1alpha1"
DECORATOR_KEYS = {"labels", "annotations", "status", "resyncAfterSeconds", "finalized"}


def ctx() -> HookContext:
    def no_api(token: str) -> Any:
        raise AssertionError("the credentials hooks never call the Metal API")

    return HookContext(settings=Settings(), metal=no_api, clock=lambda: datetime(2026, 12, 3, tzinfo=UTC))


def secret(name: str = "metal-credentials") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": NS, "uid": "5e000000-0000-4000-8000-000000000001",
                         "labels": {"metal-machine-hooks/credentials": "true"}},
            "data": {"apiToken": base64.b64encode(TOKEN.encode()).decode()}}


def machine_class(name: str, *, secret_ref: str | None = None, credentials_ref: str | None = None,
                  namespace: str = NS, ref_namespace: str | None = NS) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "machine.sapcloud.io/v1alpha1", "kind": "MachineClass",
                           "metadata": {"name": name, "namespace": namespace}, "provider": "EquinixMetal"}
    if secret_ref:
        obj["secretRef"] = {"name": secret_ref, **({"namespace": ref_namespace} if ref_namespace else {})}
    if credentials_ref:
        obj["credentialsSecretRef"] = {"name": credentials_ref, "namespace": NS}
    return obj


def request(*classes: dict[str, Any], finalizing: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "controller": {"metadata": {"name": "metal-credentials"}},
        "object": secret(),
        "attachments": {},
        "related": {CLASS_KEY: {f"{c['metadata']['namespace']}/{c['metadata']['name']}": c for c in classes}},
    }
    if finalizing:
        body["finalizing"] = True
    return body


def test_customize_asks_for_the_classes_of_the_secrets_namespace() -> None:
    body = {"controller": {}, "parent": secret()}
    assert credentials.customize(body, ctx()) == {"relatedResources": [
        {"apiVersion": "machine.sapcloud.io/v1alpha1", "resource": "machineclasses", "namespace": NS}]}


def test_sync_names_the_classes_that_use_the_secret_by_either_reference() -> None:
    body = request(machine_class("small", secret_ref="metal-credentials"),
                   machine_class("large", credentials_ref="metal-credentials"),
                   machine_class("other", secret_ref="another-secret"))
    response = credentials.sync(body, ctx())
    assert set(response) <= DECORATOR_KEYS and response["status"] is None
    assert response["annotations"] == {credentials.USED_BY_ANNOTATION: "2 machineclasses: large, small"}


def test_a_reference_without_namespace_counts_as_mcm_matches_by_name() -> None:
    body = request(machine_class("small", secret_ref="metal-credentials", ref_namespace=None))
    assert credentials.sync(body, ctx())["annotations"][credentials.USED_BY_ANNOTATION] == "1 machineclass: small"


def test_classes_of_other_namespaces_never_hold_the_secret() -> None:
    body = request(machine_class("small", secret_ref="metal-credentials", namespace="team-b"))
    assert credentials.sync(body, ctx())["annotations"][credentials.USED_BY_ANNOTATION] is None


def test_finalize_holds_the_secret_while_a_class_names_it_then_lets_it_go() -> None:
    held = credentials.finalize(request(machine_class("small", secret_ref="metal-credentials"), finalizing=True),
                                ctx())
    assert held["finalized"] is False and held["resyncAfterSeconds"] > 0
    assert held["annotations"][credentials.USED_BY_ANNOTATION] == "1 machineclass: small"
    released = credentials.finalize(request(machine_class("small", secret_ref="another"), finalizing=True), ctx())
    assert released["finalized"] is True and "resyncAfterSeconds" not in released
    assert released["annotations"][credentials.USED_BY_ANNOTATION] is None  # removes the annotation


def test_a_deleting_class_still_holds_the_secret() -> None:
    deleting = machine_class("small", secret_ref="metal-credentials")
    deleting["metadata"]["deletionTimestamp"] = "2026-12-03T09:00:00Z"
    assert credentials.finalize(request(deleting, finalizing=True), ctx())["finalized"] is False


def test_long_lists_are_shortened() -> None:
    names = [f"class-{i:02d}" for i in range(12)]
    assert credentials.used_by_text(names) == ("12 machineclasses: " + ", ".join(names[:10]) + " and 2 more")


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda b: b.pop("object"), "no `object`"),
    (lambda b: b.__setitem__("object", {"kind": "ConfigMap", "metadata": {"name": "x", "namespace": NS}}),
     "must be a Secret"),
    (lambda b: b["object"]["metadata"].pop("namespace"), "must be a Secret with a name and a namespace"),
    (lambda b: b.__setitem__("related", []), "related must be a map"),
    (lambda b: b.__setitem__("related", {CLASS_KEY: []}), "must be a map"),
])
def test_malformed_requests_are_bad_requests(mutate: Any, message: str) -> None:
    body = request()
    mutate(body)
    with pytest.raises(BadRequest, match=message):
        credentials.sync(body, ctx())


def test_the_routes_answer_and_no_token_reaches_the_log(caplog: pytest.LogCaptureFixture) -> None:
    client = create_app(Settings()).test_client()
    body = request(machine_class("small", secret_ref="metal-credentials"), finalizing=True)
    body["object"]["metadata"]["name"] = TOKEN  # a value that would show up in the access log's subject
    body["object"]["data"]["apiToken"] = base64.b64encode(TOKEN.encode()).decode()
    with caplog.at_level(logging.DEBUG):
        for path in ("/credentials/sync", "/credentials/finalize"):
            response = client.post(path, json=copy.deepcopy(body))
            assert response.status_code == 200, response.get_data()
    assert TOKEN not in caplog.text
    customize = client.post("/credentials/customize", json={"controller": {}, "parent": secret()})
    assert customize.status_code == 200


@pytest.mark.e2e
def test_a_used_secret_survives_its_deletion_until_no_class_names_it(metal_sim: Any) -> None:
    """Under the Metacontroller emulator with metacontroller/credentials.yaml: the Secret gets the controller's
    finalizer and the used-by annotation, stays while deleted, and goes once its last class is gone."""
    from pathlib import Path

    from tests.emulator_support import real_cluster

    examples = Path(__file__).resolve().parent.parent / "kubernetes" / "examples"
    with real_cluster(metal_sim.url, metal_sim.base_url, jobs="stand-in") as running:
        store, mc = running.store, running.mc
        store.load_yaml([examples / "secret.yaml", examples / "machine-class.yaml"])

        def stored() -> dict[str, Any] | None:
            return store.try_get("v1", "Secret", "test-secret", "default")

        def annotated(s: Any) -> bool:
            obj = stored() or {}
            return "metacontroller.io/decoratorcontroller-metal-credentials" in (
                obj.get("metadata", {}).get("finalizers") or []) and (
                obj["metadata"].get("annotations") or {}).get(credentials.USED_BY_ANNOTATION) == (
                "2 machineclasses: eqx-mc, eqx-mc-v2")

        mc.wait_for(annotated, timeout=30, message="Secret decorated with finalizer and used-by")
        store.delete("v1", "Secret", "test-secret", "default")
        store.delete("machine.sapcloud.io/v1alpha1", "MachineClass", "eqx-mc", "default")
        mc.wait_for(lambda s: (((stored() or {}).get("metadata") or {}).get("annotations") or {}).get(
            credentials.USED_BY_ANNOTATION) == "1 machineclass: eqx-mc-v2", timeout=30, message="one class left")
        assert stored() is not None and stored()["metadata"].get("deletionTimestamp")  # type: ignore[index]
        store.delete("machine.sapcloud.io/v1alpha1", "MachineClass", "eqx-mc-v2", "default")
        mc.wait_for(lambda s: stored() is None, timeout=30, message="Secret gone once no class names it")
