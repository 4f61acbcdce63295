"""The Machine hooks through the Flask app: bad Machines get a status naming the problem, bad requests a 400."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from hooks.config import Settings
from hooks.server.app import create_app
from tests import crd_schema
from tests.crd_schema import status_problems
from tests.machine_support import (
    CLASS_ID,
    CLASS_KEY,
    DECORATOR_KEYS,
    NAME,
    NS,
    Clock,
    FakeMetal,
    cached_crd_schemas,
    fake_fixture,
    finalize_request,
    load,
    machine_class,
    provider_spec,
    secret_data,
    set_secret_value,
    sync_request,
    wrong_shape,
)

__all__ = ["cached_crd_schemas", "fake_fixture"]

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def client(fake: FakeMetal) -> Any:
    return create_app(Settings(), metal=fake.factory, clock=Clock()).test_client()


def _spec_without(*keys: str) -> Callable[[dict], None]:
    def change(body: dict) -> None:
        for key in keys:
            provider_spec(body).pop(key, None)

    return change


def _spec_set(key: str, value: Any) -> Callable[[dict], None]:
    return lambda body: provider_spec(body).__setitem__(key, value)


def _tags_without(marker: str) -> Callable[[dict], None]:
    def change(body: dict) -> None:
        provider_spec(body)["tags"] = [t for t in provider_spec(body)["tags"] if marker not in t]

    return change


def _rename_machine(name: str) -> Callable[[dict], None]:
    return lambda body: body["object"]["metadata"].__setitem__("name", name)


BAD_MACHINES: list[tuple[str, Callable[[dict], None], str]] = [
    ("wrong-provider", lambda b: machine_class(b).__setitem__("provider", "AWS"),
     "Requested for Provider 'AWS', we only support 'EquinixMetal'"),
    ("class-missing", lambda b: b["related"][CLASS_KEY].clear(), f'MachineClass "{CLASS_ID}" does not exist'),
    ("class-name-missing", lambda b: b["object"]["spec"]["class"].pop("name"),
     "spec.class.name: Required value: Name is required"),
    ("class-kind-wrong", lambda b: b["object"]["spec"]["class"].__setitem__("kind", "AWSMachineClass"),
     "spec.class.kind: Unsupported value"),
    ("secret-missing", lambda b: b["related"]["Secret.v1"].clear(),
     'carry the label metal-machine-hooks/credentials: "true"'),
    ("no-secret-ref", lambda b: machine_class(b).pop("secretRef"),
     "names neither secretRef nor credentialsSecretRef"),
    ("secret-other-namespace", lambda b: machine_class(b).__setitem__("secretRef", {"name": "x", "namespace": "kube"}),
     'secretRef.namespace: Forbidden: Secret "kube/x"'),
    ("token-missing", lambda b: set_secret_value(b, "apiToken", None),
     "secretRef.apiToken: Required value: Required Equinix Metal API Key one of 'apiToken' or 'alternateApiToken'"),
    ("userdata-missing", lambda b: set_secret_value(b, "userData", None),
     "secretRef.userData: Required value: Required userData"),
    ("userdata-not-base64", lambda b: secret_data(b).__setitem__("userData", "!!!"),
     "secretRef.data.userData: Invalid value"),
    ("machine-type-missing", _spec_without("machineType"),
     "providerSpec.machineType: Required value: Machine Type is required"),
    ("metro-missing", _spec_without("metro"), "providerSpec.metro: Required value: Metro is required"),
    ("project-missing", _spec_without("projectID"), "providerSpec.projectID: Required value: Project ID is required"),
    ("os-missing", _spec_without("OS"), "providerSpec.OS: Required value: OS or IPXEScriptURL is required"),
    ("billing-cycle-bad", _spec_set("billingCycle", "weekly"),
     'providerSpec.billingCycle: Unsupported value: "weekly"'),
    ("billing-cycle-missing", _spec_without("billingCycle"), "providerSpec.billingCycle: Required value"),
    ("cluster-tag-missing", _tags_without("kubernetes.io/cluster/"),
     "Tag required of the form kubernetes.io/cluster/****"),
    ("role-tag-missing", _tags_without("kubernetes.io/role/"), "Tag required of the form kubernetes.io/role/****"),
    ("tags-not-a-list", _spec_set("tags", "kubernetes.io/cluster/x"), "providerSpec.tags: Invalid value"),
    ("tag-too-long", lambda b: provider_spec(b)["tags"].append("t" * 81),
     "providerSpec.tags[3]: Too long: may have at most 80 characters"),
    ("reserved-tag", lambda b: provider_spec(b)["tags"].append("metal-machine-hooks:managed"),
     "providerSpec.tags[3]: Forbidden"),
    ("ipxe-not-http", _spec_set("ipxeScriptUrl", "ftp://boot/x"), "providerSpec.ipxeScriptUrl: Invalid value"),
    ("reserved-only-not-bool", _spec_set("reservedDevicesOnly", "yes"),
     'providerSpec.reservedDevicesOnly: Invalid value: "yes": must be true or false'),
    ("ssh-keys-not-a-list", _spec_set("sshKeys", "key"), "providerSpec.sshKeys: Invalid value"),
    ("metro-not-a-string", _spec_set("metro", 7), "providerSpec.metro: Invalid value: 7: must be a string"),
    ("provider-spec-not-a-mapping", lambda b: machine_class(b).__setitem__("providerSpec", "ny"),
     "providerSpec: Invalid value"),
    ("name-not-a-hostname", _rename_machine("Worker_A"), "name did not match allowed regex '^[-a-z0-9]+$'"),
    ("name-too-long", _rename_machine("w" * 64), "name was length 64, more than the maximum 63"),
    ("creation-timeout-bad", lambda b: b["object"]["spec"].__setitem__("creationTimeout", "twenty minutes"),
     'spec.creationTimeout: Invalid value: "twenty minutes"'),
]


@pytest.mark.parametrize(("change", "expected"), [c[1:] for c in BAD_MACHINES], ids=[c[0] for c in BAD_MACHINES])
def test_bad_machine_gets_a_status_naming_the_problem(client, fake, change, expected) -> None:
    body = sync_request()
    change(body)
    answer = client.post("/machine/sync", json=body)
    assert answer.status_code == 200, answer.json
    response = answer.json
    assert set(response) <= DECORATOR_KEYS
    status = response["status"]
    assert status_problems(status, "Machine") == []
    assert status["currentStatus"]["phase"] == "CrashLoopBackOff"
    assert status["lastOperation"]["state"] == "Failed"
    assert status["lastOperation"]["errorCode"] == "InvalidArgument"
    assert expected in status["lastOperation"]["description"]
    assert fake.create_requests == [] and fake.devices == {}
    assert fake.calls == []  # not even a lookup with credentials that may not be meant for us
    assert response["resyncAfterSeconds"] > 0


def test_every_problem_of_a_class_is_named_at_once(client) -> None:
    body = sync_request()
    for key in ("machineType", "metro"):
        provider_spec(body).pop(key)
    set_secret_value(body, "userData", None)
    description = client.post("/machine/sync", json=body).json["status"]["lastOperation"]["description"]
    for expected in ("Machine Type is required", "Metro is required", "Required userData"):
        assert expected in description


def _v1_keys(body: dict) -> None:
    body["related"][CLASS_KEY] = {"metal-small": body["related"][CLASS_KEY][CLASS_ID]}


BAD_REQUESTS: list[tuple[str, Any, str]] = [
    ("not-json", b"{this is not json", "JSON"),
    ("json-array", [1, 2], "JSON object"),
    ("no-object", {"controller": {}, "related": {}}, "request has no `object`"),
    ("composite-keys", "composite-keys", "request has no `object`"),
    ("parent-only", {"parent": {"kind": "Machine", "metadata": {"name": "m", "namespace": "n", "uid": "u"}}},
     "request has no `object`"),
    ("object-not-a-dict", {"object": "worker"}, "'object'"),
    ("object-is-a-pod", {"object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "n",
                                                                               "uid": "u"}}}, "Machine"),
    ("no-metadata", {"object": {"kind": "Machine"}}, "metadata"),
    ("no-uid", {"object": {"kind": "Machine", "metadata": {"name": "m", "namespace": "n"}}}, "'object.metadata.uid'"),
    ("no-namespace", {"object": {"kind": "Machine", "metadata": {"name": "m", "uid": "u"}}}, "metadata.namespace"),
    ("labels-not-a-dict", {"object": {"kind": "Machine", "metadata": {"name": "m", "namespace": "n", "uid": "u",
                                                                      "labels": ["a"]}}}, "labels"),
    ("spec-not-a-dict", {"object": {"kind": "Machine", "metadata": {"name": "m", "namespace": "n", "uid": "u"},
                                    "spec": "x"}}, "spec"),
    ("related-not-a-dict", "related-list", "'related'"),
    ("related-entry-not-a-dict", "related-entry-list", "'related'"),
    ("v1-keys", "v1-keys", "version: v2"),
    ("attachments-not-a-dict", "attachments-list", "'attachments'"),
]


def _bad_body(spec: Any) -> Any:
    if spec == "related-list":
        body = sync_request()
        body["related"] = []
        return body
    if spec == "related-entry-list":
        body = sync_request()
        body["related"]["Secret.v1"] = ["a"]
        return body
    if spec == "attachments-list":
        body = sync_request()
        body["attachments"] = [{"kind": "Job"}]
        return body
    if spec == "composite-keys":
        return wrong_shape(sync_request())
    if spec == "v1-keys":
        body = sync_request()
        _v1_keys(body)
        return body
    return spec


@pytest.mark.parametrize("route", ["/machine/sync", "/machine/finalize"])
@pytest.mark.parametrize(("body", "expected"), [c[1:] for c in BAD_REQUESTS], ids=[c[0] for c in BAD_REQUESTS])
def test_malformed_requests_get_400_json(client, fake, route, body, expected) -> None:
    body = _bad_body(copy.deepcopy(body))
    if isinstance(body, bytes):
        answer = client.post(route, data=body, content_type="application/json")
    else:
        answer = client.post(route, json=body)
    assert answer.status_code == 400
    assert expected in answer.json["error"]
    assert fake.calls == []


def test_customize_asks_for_class_secrets_and_node(client) -> None:
    answer = client.post("/machine/customize", json=load("customize-request.json"))
    assert answer.status_code == 200
    assert answer.json == {
        "relatedResources": [
            {"apiVersion": "machine.sapcloud.io/v1alpha1", "resource": "machineclasses", "namespace": NS,
             "names": ["metal-small"]},
            {"apiVersion": "v1", "resource": "secrets", "namespace": NS,
             "labelSelector": {"matchLabels": {"metal-machine-hooks/credentials": "true"}}},
            {"apiVersion": "v1", "resource": "nodes", "names": [NAME]},
            # The namespace's target cluster (two clusters: docs/operations.md), only from its own namespace.
            {"apiVersion": "v1", "resource": "secrets", "namespace": NS,
             "labelSelector": {"matchLabels": {"metal-machine-hooks/target-kubeconfig": "true"}}},
            {"apiVersion": "machine.sapcloud.io/v1alpha1", "resource": "machinesets", "namespace": NS,
             "names": ["worker-a-6d4b9c8f7"]},
            # Without INSTALLATION_ID, the kube-system Namespace's UID is the installation id (tenant tags).
            {"apiVersion": "v1", "resource": "namespaces", "names": ["kube-system"]},
        ]
    }
    for rule in answer.json["relatedResources"]:
        assert not ("names" in rule and "labelSelector" in rule)


def test_customize_without_class_name_leaves_out_the_class_rule(client) -> None:
    body = load("customize-request.json")
    del body["parent"]["spec"]["class"]["name"]
    resources = [r["resource"] for r in client.post("/machine/customize", json=body).json["relatedResources"]]
    assert resources == ["secrets", "nodes", "secrets", "machinesets", "namespaces"]


def test_customize_of_a_machine_without_controller_asks_for_no_machineset(client) -> None:
    """A Machine the user made (no controller ownerReference) is never held back by an owner."""
    body = load("customize-request.json")
    body["parent"]["metadata"]["ownerReferences"][0]["controller"] = False
    resources = [r["resource"] for r in client.post("/machine/customize", json=body).json["relatedResources"]]
    assert resources == ["machineclasses", "secrets", "nodes", "secrets", "namespaces"]


@pytest.mark.parametrize("body", [{"controller": {}}, {"parent": "m"}, {"object": load("sync-request.json")["object"]}])
def test_customize_without_parent_is_400(client, body) -> None:
    answer = client.post("/machine/customize", json=body)
    assert answer.status_code == 400 and "'parent'" in answer.json["error"]


def test_full_flow_through_http(client, fake) -> None:
    from tests.machine_support import apply, node, with_node

    body = sync_request()
    response = client.post("/machine/sync", json=body).json
    body = apply(body, response)
    (device_id,) = fake.devices
    fake.devices[device_id]["state"] = "active"
    response = client.post("/machine/sync", json=with_node(body, node())).json
    assert response["status"]["currentStatus"]["phase"] == "Running"
    gone = with_node(finalize_request(apply(body, response)), None)  # the Node went away: nothing to drain
    for _ in range(3):
        answer = client.post("/machine/finalize", json=gone).json
        assert set(answer) <= DECORATOR_KEYS
        if answer["finalized"]:
            break
        gone = apply(gone, answer)
    assert answer["finalized"] is True and fake.devices == {}


def test_controller_config_validates_against_metacontroller_crd() -> None:
    schema = crd_schema.metacontroller_crd_schema("DecoratorController")
    if schema is None:
        pytest.skip("Metacontroller's CRDs are not available under ../shared")
    (config,) = list(yaml.safe_load_all((REPO / "metacontroller" / "machines.yaml").read_text()))
    body = {k: v for k, v in config.items() if k not in ("apiVersion", "kind", "metadata")}
    properties = {k: v for k, v in schema["properties"].items() if k not in ("apiVersion", "kind", "metadata")}
    required = [k for k in schema.get("required", []) if k != "metadata"]  # metadata is the API server's business
    checked = {**schema, "properties": properties, "required": required}
    assert crd_schema.problems(body, checked, "DecoratorController") == []
    assert "spec" in required


def test_controller_config_uses_v2_hooks_on_our_routes() -> None:
    (config,) = list(yaml.safe_load_all((REPO / "metacontroller" / "machines.yaml").read_text()))
    assert config["kind"] == "DecoratorController" and config["metadata"]["name"] == "metal-machines"
    assert config["spec"]["resources"] == [{"apiVersion": "machine.sapcloud.io/v1alpha1", "resource": "machines"}]
    # hooks.drain reads Jobs from attachments["Job.batch/v1"]
    assert config["spec"]["attachments"] == [
        {"apiVersion": "batch/v1", "resource": "jobs", "updateStrategy": {"method": "OnDelete"}}]
    assert config["spec"]["resyncPeriodSeconds"] > 0
    routes = {rule.rule for rule in create_app(Settings()).url_map.iter_rules()}
    for name in ("customize", "sync", "finalize"):
        hook = config["spec"]["hooks"][name]
        assert hook["version"] == "v2"
        assert hook["webhook"]["path"] == f"/machine/{name}" and hook["webhook"]["path"] in routes
        assert hook["webhook"]["service"] == {"name": "metal-machine-hooks", "namespace": "metal-machine-hooks",
                                              "port": 80}
        assert hook["webhook"]["timeout"].endswith("s")


def test_fixture_requests_are_shaped_like_metacontroller_v2() -> None:
    body = sync_request()
    # Metacontroller v4.17 pkg/controller/decorator/api/v2/hooks.go DecoratorHookRequest: Go fields Parent/Children,
    # JSON keys object/attachments (as in v1).
    assert set(body) == {"controller", "object", "attachments", "related", "finalizing"}
    assert body["controller"]["spec"]["hooks"]["sync"]["version"] == "v2"
    for kind_map in body["related"].values():
        for key, obj in kind_map.items():
            meta = obj["metadata"]
            assert key == (f"{meta['namespace']}/{meta['name']}" if "namespace" in meta else meta["name"])
    assert json.loads(json.dumps(body)) == body


def test_secrets_never_reach_the_log_or_the_answer(client, fake, caplog) -> None:
    import base64
    import logging

    from hooks.equinix.errors import Unauthorized
    from tests.machine_support import USERDATA_SECRET_LINE

    caplog.set_level(logging.DEBUG)
    token = "tok-http-SECRET-5555"
    body = sync_request()
    set_secret_value(body, "apiToken", token)
    fake.fail("list_devices", Unauthorized(f"401 Unauthorized for token {token}", status=401))
    answers = [client.post("/machine/sync", json=body).get_data(as_text=True)]
    fake.lose_create_answer = True
    answers.append(client.post("/machine/sync", json=body).get_data(as_text=True))
    answers.append(client.post("/machine/finalize", json=finalize_request(body)).get_data(as_text=True))
    text = "\n".join(answers) + caplog.text
    for secret in (token, base64.b64encode(token.encode()).decode(), USERDATA_SECRET_LINE):
        assert secret not in text
