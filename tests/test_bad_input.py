"""Bad input, one row per way it can be wrong: every row gets a specific message and never a 500 or a stray device.

Each row is (id, what is wrong, how to build it, expected HTTP code, expected substring, where the message shows).
"where" is `error` (the JSON error of a 400/413), `description` (status.lastOperation.description),
`lastKnownState` (status.lastKnownState) or `annotations` (the annotations the hook asks for).

Requests go through the Flask app with the real MetalClient; the Metal API is requests-mock, answering like a healthy
empty project unless a row says otherwise. Rows about the request or the class expect no API call at all; rows
about API answers list exactly the calls expected (retries included), so a duplicate create would show.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import requests
import requests_mock

from hooks.config import Settings
from hooks.equinix.client import MetalClient
from hooks.mcm.drain import INITIATE_VM_DELETION
from hooks.server import app as hook_app
from hooks.server.app import create_app
from tests.machine_support import (
    CLASS_ID,
    CLASS_KEY,
    NAME,
    NS,
    PROJECT,
    SECRET_ID,
    TENANT_TAGS,
    UID_TAG,
    Clock,
    decorated,
    finalize_request,
    load,
    machine_class,
    provider_spec,
    secret_data,
    set_secret_value,
    sync_request,
)

BASE = "http://metal.test/metal/v1"
LIST = f"{BASE}/projects/{PROJECT}/devices"
DEVICE_ID = "9c1d2e3f-4a5b-4c6d-8e7f-0a1b2c3d4e5f"
DEVICE_URL = f"{BASE}/devices/{DEVICE_ID}"
API_HEADERS = {"Content-Type": "application/json", "X-Request-Id": "req-0001"}
OWN_TAGS = ["metal-machine-hooks:managed", UID_TAG, *TENANT_TAGS]
HTML_502 = "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"
TOKEN = "test-token"
USERDATA_LINE = "echo bootstrap-secret-4f9a2c for"  # part of a line of the fixture Secret's userData
USERDATA_WORD = "bootstrap-secret-4f9a2c"

# What the app would send, in the short form the rows use.
LIST_CALL = "GET /projects/{project}/devices"
CREATE_CALL = "POST /projects/{project}/devices"
GET_CALL = "GET /devices/{id}"
DELETE_CALL = "DELETE /devices/{id}"
ATTEMPTS = 2  # the test client's max_attempts: a retried read shows up exactly twice


class Api:
    """The Metal API as requests-mock: a healthy, empty project unless a row installs other answers."""

    def __init__(self) -> None:
        self.adapter = requests_mock.Adapter()
        self.session = requests.Session()
        self.session.mount("http://metal.test", self.adapter)
        self.answer("GET", LIST, json={"devices": [], "meta": {"current_page": 1, "last_page": 1, "total": 0}})
        self.answer("POST", LIST, status_code=201, json=self._created)
        self.answer("GET", re.compile(rf"{re.escape(BASE)}/devices/[^/?]+"), status_code=404,
                    json={"error": "Not found"})
        self.answer("DELETE", re.compile(rf"{re.escape(BASE)}/devices/[^/?]+"), status_code=204)

    def answer(self, method: str, url: Any, **response: Any) -> None:
        """The latest answer registered for a URL wins (requests-mock's rule)."""
        headers = {**API_HEADERS, **response.pop("headers", {})}
        self.adapter.register_uri(method, url, headers=headers, **response)

    def answers(self, method: str, url: Any, *responses: dict[str, Any]) -> None:
        """Answers in turn, the last one repeating."""
        self.adapter.register_uri(method, url, [{"headers": {**API_HEADERS, **r.pop("headers", {})}, **r}
                                                for r in map(dict, responses)])

    @staticmethod
    def _created(request: Any, _context: Any) -> dict[str, Any]:
        sent = request.json()
        return device(hostname=sent["hostname"], tags=sent["tags"], state="queued")

    def calls(self) -> list[str]:
        out = []
        for sent in self.adapter.request_history:
            path = sent.path.replace(f"/metal/v1/projects/{PROJECT}", "/projects/{project}").replace("/metal/v1", "")
            out.append(f"{sent.method} {re.sub(r'^/devices/[^/]+$', '/devices/{id}', path)}")
        return out

    def client(self, token: str) -> MetalClient:
        return MetalClient(token, base_url=BASE, session=self.session, sleep=lambda _: None, max_attempts=ATTEMPTS)


def device(**fields: Any) -> dict[str, Any]:
    """A device as the API renders it, owned by the fixture Machine, unless `fields` say otherwise."""
    return {**load("device-active.json"), "tags": list(OWN_TAGS), **fields}


# ------------------------------------------------------------------------------------------------ how rows build


@dataclass(frozen=True)
class Call:
    route: str
    body: Any  # a dict or list is sent as JSON, bytes as they are
    content_type: str = "application/json"


Build = Callable[[Api], Call]


def sync(change: Callable[[dict], Any] = lambda body: None, route: str = "/machine/sync") -> Build:
    def build(_api: Api) -> Call:
        body = sync_request()
        change(body)
        return Call(route, body)

    return build


def finalize(change: Callable[[dict], Any] = lambda body: None) -> Build:
    def build(_api: Api) -> Call:
        body = finalize_request()
        # Metacontroller already stored the drain outcome (no Node: nothing to drain), so this call deletes.
        decorated(body)["status"] = {"currentStatus": {"phase": "Terminating"}, "lastOperation": {
            "description": f"Skipping drain as nodeName is not a valid one for machine. {INITIATE_VM_DELETION}",
            "state": "Processing", "type": "Delete"}}
        change(body)
        return Call("/machine/finalize", body)

    return build


def raw(route: str, data: bytes, content_type: str = "application/json") -> Build:
    return lambda _api: Call(route, data, content_type)


def body_is(route: str, value: Any) -> Build:
    return lambda _api: Call(route, copy.deepcopy(value))


def api(setup: Callable[[Api], None], then: Build | None = None) -> Build:
    """API answers installed before the request of `then` (a plain sync by default) is sent."""

    def build(mock: Api) -> Call:
        setup(mock)
        return (then or sync())(mock)

    return build


def running(body: dict) -> None:
    decorated(body)["status"] = {"currentStatus": {"phase": "Running", "lastUpdateTime": "2026-11-25T10:05:00Z"}}


def attachments_key(body: dict[str, Any]) -> str:
    return "attachments"


def recorded(body: dict) -> None:
    decorated(body)["metadata"]["annotations"] = {"metal-machine-hooks/device-id": DEVICE_ID}


def spec_set(key: str, value: Any) -> Callable[[dict], None]:
    return lambda body: provider_spec(body).__setitem__(key, value)


def spec_without(key: str) -> Callable[[dict], None]:
    return lambda body: provider_spec(body).pop(key)


def tags_without(marker: str) -> Callable[[dict], None]:
    def change(body: dict) -> None:
        provider_spec(body)["tags"] = [t for t in provider_spec(body)["tags"] if marker not in t]

    return change


def class_set(key: str, value: Any) -> Callable[[dict], None]:
    return lambda body: machine_class(body).__setitem__(key, value)


def secret(key: str, value: str | None) -> Callable[[dict], None]:
    return lambda body: set_secret_value(body, key, value)


def secret_raw(key: str, value: str) -> Callable[[dict], None]:
    return lambda body: secret_data(body).__setitem__(key, value)


def machine_meta(key: str, value: Any) -> Callable[[dict], None]:
    return lambda body: decorated(body)["metadata"].__setitem__(key, value)


def machine_spec(key: str, value: Any) -> Callable[[dict], None]:
    return lambda body: decorated(body)["spec"].__setitem__(key, value)


def v1_keys(kind: str, key: str) -> Callable[[dict], None]:
    def change(body: dict) -> None:
        objects = body["related"][kind]
        objects[key.split("/", 1)[1]] = objects.pop(key)

    return change


def both(*changes: Callable[[dict], Any]) -> Callable[[dict], None]:
    def change(body: dict) -> None:
        for one in changes:
            one(body)

    return change


def huge_annotation(size: int) -> Callable[[dict], None]:
    return lambda body: decorated(body)["metadata"].__setitem__("annotations", {"note": "x" * size})


TOO_LARGE = hook_app.BODY_LIMITS["/machine/sync"] + 1
MINIMAL_MACHINE = {"apiVersion": "machine.sapcloud.io/v1alpha1", "kind": "Machine",
                   "metadata": {"name": "m", "namespace": "n", "uid": "u"}}


# --------------------------------------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Row:
    id: str
    wrong: str
    build: Build
    code: int
    message: str
    where: str
    calls: tuple[str, ...] = ()  # the exact API calls expected; none for anything decided before the API


ROWS: list[Row] = [
    # -- MachineClass providerSpec: a status naming the field, no API call ------------------------------------------
    Row("spec-metro-missing", "providerSpec has no metro", sync(spec_without("metro")), 200,
        "providerSpec.metro: Required value: Metro is required", "description"),
    Row("spec-metro-empty", "metro is an empty string", sync(spec_set("metro", "")), 200,
        "providerSpec.metro: Required value: Metro is required", "description"),
    Row("spec-machine-type-number", "machineType is a number", sync(spec_set("machineType", 3)), 200,
        "providerSpec.machineType: Invalid value: 3: must be a string", "description"),
    Row("spec-project-missing", "no projectID", sync(spec_without("projectID")), 200,
        "providerSpec.projectID: Required value: Project ID is required", "description"),
    Row("spec-project-null", "projectID is null", sync(spec_set("projectID", None)), 200,
        "providerSpec.projectID: Required value: Project ID is required", "description"),
    Row("spec-os-missing", "neither OS nor ipxeScriptUrl", sync(spec_without("OS")), 200,
        "providerSpec.OS: Required value: OS or IPXEScriptURL is required", "description"),
    Row("spec-os-empty", "OS is an empty string", sync(spec_set("OS", "")), 200,
        "providerSpec.OS: Required value: OS or IPXEScriptURL is required", "description"),
    Row("spec-billing-weekly", "billingCycle outside the enum", sync(spec_set("billingCycle", "weekly")), 200,
        'providerSpec.billingCycle: Unsupported value: "weekly": supported values: "hourly"', "description"),
    Row("spec-billing-missing", "no billingCycle", sync(spec_without("billingCycle")), 200,
        "providerSpec.billingCycle: Required value: Billing cycle is required", "description"),
    Row("spec-cluster-tag-missing", "no kubernetes.io/cluster/ tag", sync(tags_without("kubernetes.io/cluster/")),
        200, "Tag required of the form kubernetes.io/cluster/****", "description"),
    Row("spec-role-tag-missing", "no kubernetes.io/role/ tag", sync(tags_without("kubernetes.io/role/")), 200,
        "Tag required of the form kubernetes.io/role/****", "description"),
    Row("spec-tags-string", "tags is a string, not a list", sync(spec_set("tags", "kubernetes.io/cluster/x")), 200,
        'providerSpec.tags: Invalid value: "kubernetes.io/cluster/x": must be a list', "description"),
    Row("spec-tag-too-long", "a tag longer than the API allows",
        sync(lambda b: provider_spec(b)["tags"].append("t" * 81)), 200,
        "providerSpec.tags[3]: Too long: may have at most 80 characters", "description"),
    Row("spec-tag-empty", "an empty tag", sync(lambda b: provider_spec(b)["tags"].append("")), 200,
        'providerSpec.tags[3]: Invalid value: "": must not be empty', "description"),
    Row("spec-tag-ours", "a tag that would forge our ownership tags",
        sync(lambda b: provider_spec(b)["tags"].append("metal-machine-hooks:uid:someone-else")), 200,
        "providerSpec.tags[3]: Forbidden: tags starting with \"metal-machine-hooks:\" are reserved", "description"),
    Row("spec-ipxe-ftp", "ipxeScriptUrl is not http(s)", sync(spec_set("ipxeScriptUrl", "ftp://boot/x")), 200,
        'providerSpec.ipxeScriptUrl: Invalid value: "ftp://boot/x": must be an http:// or https:// URL',
        "description"),
    Row("spec-reserved-only-string", "reservedDevicesOnly is a string", sync(spec_set("reservedDevicesOnly", "yes")),
        200, 'providerSpec.reservedDevicesOnly: Invalid value: "yes": must be true or false', "description"),
    Row("spec-reservations-string", "reservationIDs is a string", sync(spec_set("reservationIDs", "r-1")), 200,
        'providerSpec.reservationIDs: Invalid value: "r-1": must be a list', "description"),
    Row("spec-ssh-key-number", "an sshKeys entry is a number", sync(spec_set("sshKeys", [1])), 200,
        "providerSpec.sshKeys[0]: Invalid value: 1: must be a string", "description"),
    Row("spec-not-a-mapping", "providerSpec is a string", sync(class_set("providerSpec", "ny")), 200,
        'providerSpec: Invalid value: "ny": must be a mapping', "description"),
    Row("spec-null", "providerSpec is null", sync(class_set("providerSpec", None)), 200,
        "providerSpec: Invalid value: null: must be a mapping", "description"),
    Row("class-wrong-provider", "the class is for another provider", sync(class_set("provider", "AWS")), 200,
        "Requested for Provider 'AWS', we only support 'EquinixMetal'", "description"),
    Row("class-missing", "the class does not exist", sync(lambda b: b["related"][CLASS_KEY].clear()), 200,
        f'spec.class.name: Not found: MachineClass "{CLASS_ID}" does not exist', "description"),
    Row("class-kind-wrong", "spec.class names another kind",
        sync(lambda b: decorated(b)["spec"]["class"].__setitem__("kind", "AWSMachineClass")), 200,
        'spec.class.kind: Unsupported value: "AWSMachineClass"', "description"),
    Row("class-ref-missing", "spec.class is absent", sync(lambda b: decorated(b)["spec"].pop("class")), 200,
        "spec.class.name: Required value: Name is required", "description"),
    # -- credentials Secrets ------------------------------------------------------------------------------------------
    Row("secret-not-visible", "the Secret lacks the label, so Metacontroller does not send it",
        sync(lambda b: b["related"]["Secret.v1"].clear()), 200,
        'must exist in namespace "shoot--dev--metal" and carry the label metal-machine-hooks/credentials: "true"',
        "description"),
    Row("secret-ref-missing", "the class names no Secret", sync(lambda b: machine_class(b).pop("secretRef")), 200,
        "secretRef: Required value: the MachineClass names neither secretRef nor credentialsSecretRef",
        "description"),
    Row("secret-other-namespace", "secretRef points into another namespace",
        sync(class_set("secretRef", {"name": "metal-credentials", "namespace": "kube-system"})), 200,
        'secretRef.namespace: Forbidden: Secret "kube-system/metal-credentials" is outside the Machine\'s namespace',
        "description"),
    Row("credentials-ref-missing", "credentialsSecretRef names a Secret that is not there",
        sync(class_set("credentialsSecretRef", {"name": "gone", "namespace": NS})), 200,
        f'credentialsSecretRef: Not found: Secret "{NS}/gone" is not visible to the hooks', "description"),
    Row("token-missing", "no apiToken nor alternateApiToken", sync(secret("apiToken", None)), 200,
        "secretRef.apiToken: Required value: Required Equinix Metal API Key one of 'apiToken' or "
        "'alternateApiToken'", "description"),
    Row("token-blank", "apiToken is whitespace only", sync(secret("apiToken", "   ")), 200,
        "Required Equinix Metal API Key", "description"),
    Row("token-non-ascii", "apiToken holds a non-ASCII character (it cannot go into a header)",
        sync(secret("apiToken", "tok€n-0123456789")), 200,
        "secretRef.apiToken: Invalid value: the API token holds characters an HTTP header cannot carry",
        "description"),
    Row("token-zero-width-space", "apiToken pasted with a zero-width space",
        sync(secret("apiToken", "0123456789\u200babcdef")), 200, "only visible ASCII is allowed", "description"),
    Row("token-header-injection", "apiToken with a line break and a second header",
        sync(secret("apiToken", "0123456789\nX-Other: 1")), 200,
        "the API token holds characters an HTTP header cannot carry", "description"),
    Row("token-non-ascii-finalize", "finalize with a token that cannot be sent: stays Terminating",
        finalize(both(secret("apiToken", None), secret("alternateApiToken", "tök-0123456789"))), 200,
        "secretRef.alternateApiToken: Invalid value: the API token holds characters", "description"),
    Row("token-not-base64", "apiToken is not base64", sync(secret_raw("apiToken", "not base64!")), 200,
        "secretRef.data.apiToken: Invalid value: Secret \"shoot--dev--metal/metal-credentials\" key apiToken is not "
        "valid base64-encoded UTF-8", "description"),
    Row("userdata-missing", "no userData", sync(secret("userData", None)), 200,
        "secretRef.userData: Required value: Required userData", "description"),
    Row("userdata-not-utf8", "userData decodes to bytes that are not UTF-8",
        sync(secret_raw("userData", base64.b64encode(b"\xff\xfe\x00").decode())), 200,
        "key userData is not valid base64-encoded UTF-8", "description"),
    Row("secret-data-string", "the Secret's data is a string",
        sync(lambda b: b["related"]["Secret.v1"][SECRET_ID].__setitem__("data", "apiToken=x")), 200,
        'secretRef: Invalid value: Secret "shoot--dev--metal/metal-credentials" has a malformed data field',
        "description"),
    # -- Machine names and Machine fields -------------------------------------------------------------------------
    Row("name-uppercase", "the name is not a hostname", sync(machine_meta("name", "Worker_A")), 200,
        "name did not match allowed regex '^[-a-z0-9]+$'", "description"),
    Row("name-too-long", "the name is longer than a hostname label", sync(machine_meta("name", "w" * 64)), 200,
        "name was length 64, more than the maximum 63", "description"),
    Row("name-with-dot", "the name has a dot", sync(machine_meta("name", "worker.a")), 200,
        'metadata.name: Invalid value: "worker.a": name did not match', "description"),
    Row("name-unicode", "the name has a non-ASCII letter", sync(machine_meta("name", "wörker")), 200,
        "name did not match allowed regex", "description"),
    Row("name-empty", "the name is empty", sync(machine_meta("name", "")), 400,
        "metadata.name' must be a non-empty string", "error"),
    Row("name-number", "the name is a number", sync(machine_meta("name", 7)), 400,
        "metadata.name' must be a non-empty string", "error"),
    Row("creation-timeout-words", "creationTimeout is not a duration",
        sync(machine_spec("creationTimeout", "twenty minutes")), 200,
        'spec.creationTimeout: Invalid value: "twenty minutes": must be a duration', "description"),
    Row("health-timeout-negative", "healthTimeout is negative", sync(machine_spec("healthTimeout", "-5m")), 200,
        'spec.healthTimeout: Invalid value: "-5m": must be a duration', "description"),
    # -- hook request bodies -------------------------------------------------------------------------------------------
    Row("body-not-json", "the body is not JSON", raw("/machine/sync", b"{this is not json"), 400,
        "request body must be a JSON object", "error"),
    Row("body-empty", "the body is empty", raw("/machine/finalize", b""), 400,
        "request body must be a JSON object", "error"),
    Row("body-form", "a form post instead of JSON",
        raw("/machine/sync", b"object=worker", "application/x-www-form-urlencoded"), 400,
        "request body must be a JSON object", "error"),
    Row("body-array", "a JSON array", body_is("/machine/sync", [1, 2]), 400, "request body must be a JSON object",
        "error"),
    Row("body-null", "JSON null", raw("/machine/customize", b"null"), 400, "request body must be a JSON object",
        "error"),
    Row("body-string", "a JSON string", raw("/machine/sync", b'"worker-a"'), 400,
        "request body must be a JSON object", "error"),
    Row("body-too-large", "bigger than the Machine sync route's limit", raw("/machine/sync", b" " * TOO_LARGE), 413,
        f"request body larger than {hook_app.BODY_LIMITS['/machine/sync']} bytes", "error"),
    Row("body-large-allowed", "a 4 MB annotation (allowed) on a Machine whose class is missing",
        sync(both(huge_annotation(4 * 1024 * 1024), lambda b: b["related"][CLASS_KEY].clear())), 200,
        "does not exist", "description"),
    Row("body-nested-too-deep", "arrays nested 100000 deep (the JSON decoder's recursion limit)",
        raw("/machine/sync", b"[" * 100_000 + b"]" * 100_000), 400, "request body is nested too deeply", "error"),
    Row("body-no-object", "no 'object' (the key Metacontroller sends a decorated object under)",
        body_is("/machine/sync", {"controller": {}, "related": {}}), 400, "request has no `object`", "error"),
    Row("body-object-pod", "the object is a Pod",
        body_is("/machine/sync", {"object": {**MINIMAL_MACHINE, "apiVersion": "v1", "kind": "Pod"}}), 400,
        "'object' is a v1 Pod, expected a machine.sapcloud.io/v1alpha1 Machine", "error"),
    Row("body-metadata-list", "metadata is a list",
        body_is("/machine/finalize", {"object": {**MINIMAL_MACHINE, "metadata": []}}), 400,
        "'object.metadata' must be an object", "error"),
    Row("body-uid-missing", "metadata has no uid", sync(lambda b: decorated(b)["metadata"].pop("uid")), 400,
        "metadata.uid' must be a non-empty string", "error"),
    Row("body-labels-list", "labels is a list", sync(machine_meta("labels", ["a"])), 400,
        "metadata.labels' must be an object", "error"),
    Row("body-status-string", "status is a string", sync(lambda b: decorated(b).__setitem__("status", "Running")),
        400, ".status' must be an object", "error"),
    Row("body-related-list", "related is a list", sync(lambda b: b.__setitem__("related", [])), 400,
        "'related' must map 'Kind.group/version' to objects keyed by 'namespace/name'", "error"),
    Row("body-related-entry-list", "a related entry is a list",
        sync(lambda b: b["related"].__setitem__("Secret.v1", ["x"])), 400, "'related' must map", "error"),
    Row("body-attachments-list", "attachments is a list", finalize(lambda b: b.__setitem__(attachments_key(b), [{}])),
        400, "' must map 'Kind.group/version' to objects keyed by 'namespace/name'", "error"),
    Row("body-v1-class-key", "hook version v1: related class keyed by name only",
        sync(v1_keys(CLASS_KEY, CLASS_ID)), 400,
        "must use version: v2 (keys 'namespace/name')", "error"),
    Row("body-v1-secret-key", "hook version v1 on finalize: Secret keyed by name only",
        finalize(v1_keys("Secret.v1", SECRET_ID)), 400, "has no namespace", "error"),
    Row("customize-no-parent", "a customize request without 'parent'",
        body_is("/machine/customize", {"controller": {}}), 400, "request has no 'parent' object", "error"),
    Row("customize-parent-pod", "customize for a Pod",
        body_is("/machine/customize", {"parent": {**MINIMAL_MACHINE, "kind": "Pod"}}), 400,
        "expected a machine.sapcloud.io/v1alpha1 Machine", "error"),
    Row("machineset-not-json", "the MachineSet hook gets no JSON", raw("/machineset/sync", b"<xml/>"), 400,
        "request body must be a JSON object", "error"),
    Row("machinedeployment-array", "the MachineDeployment hook gets an array",
        body_is("/machinedeployment/sync", []), 400, "request body must be a JSON object", "error"),
    Row("machineclass-too-large", "the MachineClass hook gets too much",
        raw("/machineclass/customize", b"{" * (hook_app.BODY_LIMITS["/machineclass/customize"] + 1)),
        413, "request body larger than", "error"),
    # -- answers of the Metal API -------------------------------------------------------------------------------
    Row("api-list-500-text", "the listing fails with a plain-text 500",
        api(lambda m: m.answer("GET", LIST, status_code=500, text="upstream exploded",
                               headers={"Content-Type": "text/plain"})), 200,
        "looking up the device failed: list_devices failed: HTTP 500 (not from the Metal API): upstream exploded",
        "description", (LIST_CALL,) * ATTEMPTS),
    Row("api-list-502-html", "a load balancer's HTML 502",
        api(lambda m: m.answer("GET", LIST, status_code=502, text=HTML_502,
                               headers={"Content-Type": "text/html", "X-Request-Id": ""})), 200,
        "HTTP 502 (not from the Metal API): 502 Bad Gateway", "description", (LIST_CALL,) * ATTEMPTS),
    Row("api-list-truncated", "a 200 listing cut off mid-JSON",
        api(lambda m: m.answer("GET", LIST, text='{"devices": [{"id": "9c1d')), 200,
        "HTTP 200 with a body that is not the expected JSON object (truncated?)", "description",
        (LIST_CALL,) * ATTEMPTS),
    Row("api-list-no-devices-key", "a 200 listing without 'devices'",
        api(lambda m: m.answer("GET", LIST, json={"meta": {"total": 0}})), 200,
        "list_devices failed: the answer has no 'devices' list", "description", (LIST_CALL,)),
    Row("api-list-no-meta", "a 200 listing without 'meta' that holds our device",
        api(lambda m: m.answer("GET", LIST, json={"devices": [device(state="provisioning")]})), 200,
        f"device {DEVICE_ID} is provisioning", "lastKnownState", (LIST_CALL,)),
    Row("api-list-device-not-object", "a listing whose entries are strings",
        api(lambda m: m.answer("GET", LIST, json={"devices": ["9c1d2e3f"], "meta": {}})), 200,
        "list_devices failed: page 1 holds an entry that is not an object ('9c1d2e3f')", "description",
        (LIST_CALL,)),
    Row("api-list-ours-no-id", "a listed device with our tag but no id: it might be ours, so no create",
        api(lambda m: m.answer("GET", LIST, json={"devices": [{**device(), "id": None}], "meta": {}})), 200,
        f"list_devices answered a device with the tag {UID_TAG} but without a usable id", "description",
        (LIST_CALL,)),
    Row("api-list-ours-id-number", "a listed device with our tag and a numeric id",
        api(lambda m: m.answer("GET", LIST, json={"devices": [{**device(), "id": 4711}], "meta": {}})), 200,
        "but without a usable id ('4711')", "description", (LIST_CALL,)),
    Row("api-finalize-ours-no-id", "finalize's tag lookup lists our device without an id: not finalized",
        api(lambda m: m.answer("GET", LIST, json={"devices": [{**device(), "id": ""}], "meta": {}}), finalize()),
        200, "VM deletion failed due to - list_devices answered a device with the tag", "description",
        (LIST_CALL,)),
    Row("api-create-truncated", "the create answer is cut off", api(lambda m: m.answer(
        "POST", LIST, status_code=201, text='{"id": "9c1d2e3f-')), 200,
        "the outcome of the create request is unknown", "description", (LIST_CALL, CREATE_CALL)),
    Row("api-create-no-id", "the create answer has no id", api(lambda m: m.answer(
        "POST", LIST, status_code=201, json={"hostname": NAME, "state": "queued"})), 200,
        "the create request was answered without a device id", "description", (LIST_CALL, CREATE_CALL)),
    Row("api-create-id-number", "the create answer's id is a number, not a UUID string", api(lambda m: m.answer(
        "POST", LIST, status_code=201, json=device(id=4711, state="queued"))), 200,
        "the create request was answered without a device id", "description", (LIST_CALL, CREATE_CALL)),
    Row("api-create-503-html", "the create gets an HTML 503", api(lambda m: m.answer(
        "POST", LIST, status_code=503, text=HTML_502.replace("502 Bad Gateway", "503 Service Unavailable"),
        headers={"Content-Type": "text/html", "X-Request-Id": ""})), 200,
        "HTTP 503 (not from the Metal API): 503 Service Unavailable; the outcome is unknown", "description",
        (LIST_CALL, CREATE_CALL)),
    Row("api-create-422-echo", "a 422 that quotes the userData back", api(lambda m: m.answer(
        "POST", LIST, status_code=422, json={"errors": [f"userdata is invalid: {USERDATA_LINE} worker-a-7f9c2"]})),
        200, "Could not create machine: create_device failed: HTTP 422: userdata is invalid: echo [redacted] for",
        "description", (LIST_CALL, CREATE_CALL)),
    Row("api-create-401-echo", "a 401 that quotes the token back", api(lambda m: m.answer(
        "POST", LIST, status_code=401, json={"error": f"token {TOKEN} is not valid"})), 200,
        "create_device failed: HTTP 401: token [redacted] is not valid", "description", (LIST_CALL, CREATE_CALL)),
    Row("api-create-capacity", "no capacity in the metro", api(lambda m: m.answer(
        "POST", LIST, status_code=422, json={"errors": ["Oh snap, no provisionable c3.small.x86 in ny"]})), 200,
        "no provisionable c3.small.x86 in ny", "description", (LIST_CALL, CREATE_CALL)),
    Row("api-list-429", "rate limited on every try", api(lambda m: m.answer(
        "GET", LIST, status_code=429, json={"error": "Too Many Requests"}, headers={"Retry-After": "0"})), 200,
        "list_devices failed: HTTP 429: Too Many Requests", "description", (LIST_CALL,) * ATTEMPTS),
    Row("api-retry-after-far-future", "a 429 whose Retry-After is 3000 years away: the resync is capped",
        api(lambda m: m.answer("GET", DEVICE_URL, status_code=429, json={"error": "Too Many Requests"},
                               headers={"Retry-After": "99999999999"}), sync(both(recorded, running))), 200,
        "3600.0", "resyncAfterSeconds", (GET_CALL,)),
    Row("api-retry-after-far-future-finalize", "the same on finalize's DELETE: the resync is capped",
        api(lambda m: (m.answer("GET", DEVICE_URL, json=device()),
                       m.answer("DELETE", DEVICE_URL, status_code=429, json={"error": "Too Many Requests"},
                                headers={"Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT"})), finalize(recorded)), 200,
        "3600.0", "resyncAfterSeconds", (GET_CALL, LIST_CALL, DELETE_CALL)),
    Row("api-device-state-unknown", "the recorded device is in a state the API spec does not list",
        api(lambda m: m.answer("GET", DEVICE_URL, json=device(state="hibernating")), sync(recorded)), 200,
        f"device {DEVICE_ID} is hibernating", "lastKnownState", (GET_CALL,)),
    Row("api-device-no-state", "the recorded device has no state",
        api(lambda m: m.answer("GET", DEVICE_URL, json={k: v for k, v in device().items() if k != "state"}),
            sync(recorded)), 200,
        f"device {DEVICE_ID} is in an unknown state", "lastKnownState", (GET_CALL,)),
    Row("api-device-no-metro", "the device has no metro: the class's metro names it",
        api(lambda m: m.answer("GET", LIST, json={"devices": [device(metro=None)], "meta": {}})), 200,
        f"equinixmetal://ny/{DEVICE_ID}", "annotations", (LIST_CALL,)),
    Row("api-device-ip-null", "ip_addresses is null: only the hostname is an address",
        api(lambda m: m.answer("GET", DEVICE_URL, json=device(ip_addresses=None)), sync(recorded)), 200,
        '"addresses": [{"address": "worker-a-7f9c2", "type": "Hostname"}]', "status", (GET_CALL,)),
    Row("api-device-no-id", "the recorded device's answer lacks an id: the recorded id is used",
        api(lambda m: m.answer("GET", DEVICE_URL, json={k: v for k, v in device().items() if k != "id"}),
            sync(recorded)), 200, f"device {DEVICE_ID} is active", "lastKnownState", (GET_CALL,)),
    Row("api-device-404-html", "a proxy's 404 for the recorded device (not the API saying it is gone)",
        api(lambda m: m.answer("GET", DEVICE_URL, status_code=404, text="<html><title>404 Not Found</title></html>",
                               headers={"Content-Type": "text/html", "X-Request-Id": ""}), sync(recorded)), 200,
        "get_device failed: HTTP 404 (not from the Metal API): 404 Not Found", "description", (GET_CALL,)),
    Row("api-device-403", "the recorded device is forbidden",
        api(lambda m: m.answer("GET", DEVICE_URL, status_code=403, json={"error": "You are not authorized"}),
            sync(recorded)), 200, "get_device failed: HTTP 403: You are not authorized", "description",
        (GET_CALL,)),
    Row("api-finalize-delete-500", "the DELETE fails with a 500",
        api(lambda m: (m.answer("GET", DEVICE_URL, json=device()),
                       m.answer("DELETE", DEVICE_URL, status_code=500, json={"error": "Internal Server Error"})),
            finalize(recorded)), 200,
        "VM deletion failed due to - delete_device failed: HTTP 500: Internal Server Error", "description",
        (GET_CALL, LIST_CALL, DELETE_CALL, DELETE_CALL)),
    Row("api-finalize-foreign", "the recorded device is someone else's: it is left alone",
        api(lambda m: m.answer("GET", DEVICE_URL, json=device(tags=["kubernetes.io/cluster/other"])),
            finalize(recorded)), 200, "does not carry its ownership tag", "description", (GET_CALL, LIST_CALL)),
    Row("api-finalize-list-garbage", "finalize's tag lookup answers HTML with status 200",
        api(lambda m: m.answer("GET", LIST, text=HTML_502, headers={"Content-Type": "text/html"}), finalize()), 200,
        "VM deletion failed due to - list_devices failed: HTTP 200 with a body that is not the expected JSON",
        "description", (LIST_CALL,) * ATTEMPTS),
]


def _where(answer: dict[str, Any], where: str) -> str:
    if where == "error":
        return answer["error"]
    if where == "description":
        return answer["status"]["lastOperation"]["description"]
    if where == "lastKnownState":
        return answer["status"]["lastKnownState"]
    return json.dumps(answer[where], sort_keys=True)


def test_the_table_is_big_and_its_ids_are_unique() -> None:
    ids = [row.id for row in ROWS]
    assert len(ids) == len(set(ids))
    assert len(ROWS) >= 40


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_bad_input_gets_a_specific_message_and_no_device(row: Row) -> None:
    mock = Api()
    call = row.build(mock)
    assert call.route in hook_app._routes(), f"{call.route} is not served by hooks.app"
    client = create_app(Settings(metal_api_url=BASE), metal=mock.client, clock=Clock()).test_client()
    if isinstance(call.body, bytes):
        response = client.post(call.route, data=call.body, content_type=call.content_type)
    else:
        response = client.post(call.route, json=call.body)
    assert response.status_code == row.code, response.get_data(as_text=True)[:500]
    assert response.is_json, response.get_data(as_text=True)[:200]
    assert row.message in _where(response.json, row.where)
    assert mock.calls() == list(row.calls)
    text = response.get_data(as_text=True)
    for secret in (TOKEN, USERDATA_WORD):
        assert secret not in text
