"""Shared pieces of the Machine hook tests: fixture requests, an in-memory Metal API and Metacontroller's apply.

The fake implements the MetalClient methods the hooks use, records every call and can be told to fail a call, so
tests check what a user of the real API would notice: which devices exist, which requests were sent.
"""

from __future__ import annotations

import base64
import copy
import functools
import itertools
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hooks.config import Settings
from hooks.context import HookContext
from hooks.equinix import tenancy
from hooks.equinix.driver import EquinixDriver
from hooks.equinix.errors import NotFound
from tests import crd_schema

FIXTURES = Path(__file__).parent / "fixtures" / "machine"
NS = "shoot--dev--metal"
NAME = "worker-a-7f9c2"
UID = "5c1f4d2e-8a3b-4c7d-9e0f-1a2b3c4d5e6f"
PROJECT = "2f3c1a52-5d7e-4b8a-9c1d-2e3f4a5b6c7d"
TOKEN = "test-token"
CLASS_KEY = "MachineClass.machine.sapcloud.io/v1alpha1"
CLASS_ID = f"{NS}/metal-small"
SECRET_ID = f"{NS}/metal-credentials"
UID_TAG = f"metal-machine-hooks:uid:{UID}"
OWNER = {"name": "worker-a-6d4b9c8f7", "uid": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"}
CREATED = datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC)
DECORATOR_KEYS = {"labels", "annotations", "status", "attachments", "resyncAfterSeconds", "finalized"}
USERDATA_SECRET_LINE = "echo bootstrap-secret-4f9a2c for"
# The fixture requests relate the kube-system Namespace; its UID is the installation id (hooks/mcm/installation.py).
INSTALLATION = "7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d"
TENANT_TAGS = tenancy.tenant_tags(INSTALLATION, NS)


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


MACHINESET_KEY = "MachineSet.machine.sapcloud.io/v1alpha1"


def sync_request() -> dict[str, Any]:
    """The fixture request (its related map holds the Machine's MachineSet, as the customize hook asks)."""
    return load("sync-request.json")


def owner_machineset(**meta: Any) -> dict[str, Any]:
    """The MachineSet that the fixture Machine's controller ownerReference names."""
    return {"apiVersion": "machine.sapcloud.io/v1alpha1", "kind": "MachineSet",
            "metadata": {"name": OWNER["name"], "namespace": NS, "uid": OWNER["uid"], **meta}}


def permit_failure(body: dict[str, Any], machine: str | None) -> dict[str, Any]:
    """The request with the Machine's MachineSet naming `machine` as the one that may be marked Failed (None: none),
    as the MachineSet hook writes it (hooks/mcm/fail_permit.py)."""
    body = copy.deepcopy(body)
    for machine_set in body["related"][MACHINESET_KEY].values():
        conditions = [] if machine is None else [
            {"type": "MachineFailurePermit", "status": "True", "reason": "CanMarkMachineFailed", "message": machine}]
        machine_set.setdefault("status", {})["machineSetCondition"] = conditions
    return body


def finalize_request(body: dict[str, Any] | None = None) -> dict[str, Any]:
    body = copy.deepcopy(body) if body is not None else sync_request()
    body["finalizing"] = True
    decorated(body)["metadata"]["deletionTimestamp"] = "2026-11-25T12:00:00Z"
    decorated(body)["metadata"]["deletionGracePeriodSeconds"] = 0
    return body


def decorated(body: dict[str, Any]) -> dict[str, Any]:
    """The Machine of a sync/finalize request (`object`, as Metacontroller sends it in v1 and v2)."""
    return body["object"]


def wrong_shape(body: dict[str, Any]) -> dict[str, Any]:
    """The same request with composite names (`parent`/`children`), which no decorator request carries."""
    names = {"object": "parent", "attachments": "children"}
    return {names.get(key, key): copy.deepcopy(value) for key, value in body.items()}


def machine_class(body: dict[str, Any]) -> dict[str, Any]:
    return body["related"][CLASS_KEY][CLASS_ID]


def provider_spec(body: dict[str, Any]) -> dict[str, Any]:
    return machine_class(body)["providerSpec"]


def secret_data(body: dict[str, Any]) -> dict[str, str]:
    return body["related"]["Secret.v1"][SECRET_ID]["data"]


def set_secret_value(body: dict[str, Any], key: str, value: str | None) -> None:
    data = secret_data(body)
    if value is None:
        data.pop(key, None)
    else:
        data[key] = base64.b64encode(value.encode()).decode()


def node(ready: bool = True) -> dict[str, Any]:
    obj = load("node-ready.json")
    if not ready:
        for cond in obj["status"]["conditions"]:
            if cond["type"] == "Ready":
                cond.update(status="False", reason="KubeletNotReady", message="container runtime is down")
    return obj


def node_of(device: dict[str, Any], ready: bool = True) -> dict[str, Any]:
    """The Node of `device`: its providerID names the device (the cloud-controller-manager's form)."""
    obj = node(ready)
    obj["spec"]["providerID"] = f"equinixmetal://{device['id']}"
    return obj


def with_node(body: dict[str, Any], obj: dict[str, Any] | None) -> dict[str, Any]:
    body["related"]["Node.v1"] = {NAME: obj} if obj is not None else {}
    return body


def apply(body: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    """What Metacontroller does with a decorator response: merge labels/annotations (None deletes), replace status."""
    body = copy.deepcopy(body)
    meta = decorated(body)["metadata"]
    for key in ("labels", "annotations"):
        current = meta.setdefault(key, {})
        for name, value in (response.get(key) or {}).items():
            if value is None:
                current.pop(name, None)
            else:
                current[name] = value
    if response.get("status") is not None:
        decorated(body)["status"] = response["status"]
    return body


def observe_jobs(body: dict, jobs: list[dict], *, complete: bool) -> dict:
    """What Metacontroller shows in the next call: the declared Jobs, as the Job controller left them."""
    observed = {}
    for job in jobs:
        job = {**job, "metadata": {**job["metadata"], "uid": "f00d0000-0000-4000-8000-000000000001"}}
        if complete:
            job["status"] = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
        else:
            job["status"] = {"active": 1}
        observed[f"{job['metadata']['namespace']}/{job['metadata']['name']}"] = job
    body["attachments"] = {"Job.batch/v1": observed}
    return body


class Clock:
    """A settable clock for ctx.clock."""

    def __init__(self, start: datetime = CREATED + timedelta(seconds=30)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class FakeMetal:
    """An in-memory Equinix Metal API with the MetalClient methods the hooks call."""

    def __init__(self) -> None:
        self.devices: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, Any]] = []
        self.create_requests: list[Any] = []
        self.tokens: list[str] = []
        # op name -> queue of exceptions, or callables(arg) returning an exception or None
        self.failures: dict[str, list[Any]] = {}
        self.lose_create_answer = False
        self.slow_delete = False
        self._ids = itertools.count(1)
        self._time = itertools.count(0)

    def factory(self, token: str) -> FakeMetal:
        self.tokens.append(token)
        return self

    def fail(self, op: str, *errors: Any) -> None:
        self.failures.setdefault(op, []).extend(errors)

    def _maybe_fail(self, op: str, arg: Any) -> None:
        queue = self.failures.get(op) or []
        if not queue:
            return
        item = queue[0]
        if callable(item) and not isinstance(item, BaseException):
            error = item(arg)
            if error is not None:
                raise error
            return
        queue.pop(0)
        raise item

    def add(self, **fields: Any) -> dict[str, Any]:
        device_id = fields.pop("id", None) or f"00000000-0000-4000-8000-{next(self._ids):012d}"
        created = CREATED + timedelta(seconds=5 + next(self._time))
        device = {
            "id": device_id,
            "hostname": NAME,
            "state": "provisioning",
            "created_at": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tags": ["metal-machine-hooks:managed", UID_TAG, *TENANT_TAGS],
            "metro": {"code": "ny"},
            "ip_addresses": [
                {"address_family": 4, "public": True, "address": "147.75.84.11"},
                {"address_family": 4, "public": False, "address": "10.70.1.3"},
            ],
            **fields,
        }
        self.devices[device_id] = device
        return copy.deepcopy(device)

    def create_device(self, project_id: str, request: Any) -> dict[str, Any]:
        self.calls.append(("create_device", request.hardware_reservation_id))
        self.create_requests.append(request)
        self._maybe_fail("create_device", request)
        device = self.add(
            hostname=request.hostname,
            tags=list(request.tags or []),
            metro={"code": request.metro},
            state="queued",
            project=project_id,
        )
        if self.lose_create_answer:
            from hooks.equinix.errors import TransportError

            raise TransportError("read timed out after the request was sent", operation="create_device")
        return device

    def get_device(self, device_id: str, **_: Any) -> dict[str, Any]:
        self.calls.append(("get_device", device_id))
        self._maybe_fail("get_device", device_id)
        if device_id not in self.devices:
            raise NotFound("Not found", status=404, from_api=True, operation="get_device")
        return copy.deepcopy(self.devices[device_id])

    def list_devices(self, project_id: str, *, tag: str | None = None, **_: Any) -> list[dict[str, Any]]:
        self.calls.append(("list_devices", tag))
        self._maybe_fail("list_devices", tag)
        return [copy.deepcopy(d) for d in self.devices.values() if tag is None or tag in d.get("tags", [])]

    def update_tags(self, device_id: str, tags: list[str]) -> dict[str, Any]:
        self.calls.append(("update_tags", device_id))
        self._maybe_fail("update_tags", device_id)
        if device_id not in self.devices:
            raise NotFound("Not found", status=404, from_api=True, operation="update_tags")
        self.devices[device_id]["tags"] = list(tags)
        return copy.deepcopy(self.devices[device_id])

    def delete_device(self, device_id: str, *, force: bool = False) -> None:
        self.calls.append(("delete_device", device_id))
        self._maybe_fail("delete_device", device_id)
        if device_id not in self.devices:
            raise NotFound("Not found", status=404, from_api=True, operation="delete_device")
        if self.slow_delete:
            self.devices[device_id]["state"] = "deprovisioning"
        else:
            del self.devices[device_id]

    def ops(self) -> list[str]:
        return [op for op, _ in self.calls]


@pytest.fixture(name="fake")
def fake_fixture() -> FakeMetal:
    """A fresh in-memory Metal API per test, so no test sees another's devices or calls."""
    return FakeMetal()


@pytest.fixture(name="clock")
def clock_fixture() -> Clock:
    return Clock()


def context(fake: FakeMetal, clock: Callable[[], datetime], **settings: Any) -> HookContext:
    """The hooks with the real EquinixDriver over the in-memory API: these tests pin what the API sees."""
    config = Settings(**settings)
    return HookContext(settings=config, metal=fake.factory, clock=clock, driver=EquinixDriver(config, fake.factory))


_cached_schema = functools.cache(crd_schema.load_crd_schema)


@pytest.fixture(autouse=True)
def cached_crd_schemas(monkeypatch: pytest.MonkeyPatch) -> None:
    """status_problems re-reads the CRD YAML on every call; within these tests the files do not change."""
    monkeypatch.setattr(crd_schema, "load_crd_schema", _cached_schema)
