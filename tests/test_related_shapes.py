"""Related objects of the wrong shape never make a hook answer 500.

Metacontroller hands the hooks whatever the API server stores: a Node written by another controller, a Job, a
Secret, the class or the owning set. A schema-valid parent with a related object whose fields have the wrong
types (`status.conditions` a string, a Secret's `data` a list, a Job's `status.succeeded` an object ...) must get an
answer, not a stack trace that strands the Machine. Hypothesis puts arbitrary JSON at each such field, for the
Machine's sync and finalize (with its device recorded, Running, with a Node and a drain Job), through the Flask app
with the real Equinix driver against a requests-mock API that answers like a project holding the Machine's device.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import requests
import requests_mock
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hooks.config import Settings
from hooks.equinix.client import MetalClient
from hooks.server.app import create_app
from tests.machine_support import (
    NAME,
    PROJECT,
    UID_TAG,
    Clock,
    decorated,
    finalize_request,
    load,
    node,
    sync_request,
    with_node,
)

BASE = "http://metal.test/metal/v1"
DEVICE_ID = "9c1d2e3f-4a5b-4c6d-8e7f-0a1b2c3d4e5f"
HEADERS = {"Content-Type": "application/json", "X-Request-Id": "req-shapes"}

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _app() -> Any:
    session = requests.Session()
    adapter = requests_mock.Adapter()
    session.mount("http://metal.test", adapter)
    device = {**load("device-active.json"), "id": DEVICE_ID, "tags": ["metal-machine-hooks:managed", UID_TAG]}
    adapter.register_uri("GET", f"{BASE}/projects/{PROJECT}/devices", json={"devices": [device], "meta": {"total": 1}},
                         headers=HEADERS)
    adapter.register_uri("GET", f"{BASE}/devices/{DEVICE_ID}", json=device, headers=HEADERS)
    adapter.register_uri("PUT", f"{BASE}/devices/{DEVICE_ID}", json=device, headers=HEADERS)
    adapter.register_uri("DELETE", f"{BASE}/devices/{DEVICE_ID}", status_code=204, headers=HEADERS)
    adapter.register_uri("POST", f"{BASE}/projects/{PROJECT}/devices", json=device, status_code=201, headers=HEADERS)

    def metal(token: str) -> MetalClient:
        return MetalClient(token, base_url=BASE, session=session, retry_budget=0.0, max_attempts=1)

    return create_app(Settings(metal_api_url=BASE), metal=metal, clock=Clock()).test_client()


def _running(body: dict[str, Any]) -> dict[str, Any]:
    decorated(body)["metadata"].setdefault("annotations", {})["metal-machine-hooks/device-id"] = DEVICE_ID
    decorated(body)["status"] = {"currentStatus": {"phase": "Running", "lastUpdateTime": "2026-11-25T10:05:00Z"}}
    return with_node(body, node())


def _job() -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": f"{NAME}-drain", "namespace": decorated(sync_request())["metadata"]["namespace"],
                         "labels": {}},
            "spec": {"template": {"spec": {"containers": []}}},
            "status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}}


def _only(group: dict[str, Any]) -> dict[str, Any]:
    (obj,) = group.values()
    return obj


# Where a wrong shape goes: (id, how to reach the object in a request, the path inside it).
Target = tuple[str, Callable[[dict[str, Any]], dict[str, Any]], tuple[str, ...]]
TARGETS: list[Target] = [
    ("node.status", lambda b: _only(b["related"]["Node.v1"]), ("status",)),
    ("node.status.conditions", lambda b: _only(b["related"]["Node.v1"]), ("status", "conditions")),
    ("node.status.addresses", lambda b: _only(b["related"]["Node.v1"]), ("status", "addresses")),
    ("node.spec", lambda b: _only(b["related"]["Node.v1"]), ("spec",)),
    ("node.spec.providerID", lambda b: _only(b["related"]["Node.v1"]), ("spec", "providerID")),
    ("node.metadata.labels", lambda b: _only(b["related"]["Node.v1"]), ("metadata", "labels")),
    ("node.metadata.annotations", lambda b: _only(b["related"]["Node.v1"]), ("metadata", "annotations")),
    ("secret.data", lambda b: _only(b["related"]["Secret.v1"]), ("data",)),
    ("secret.stringData", lambda b: _only(b["related"]["Secret.v1"]), ("stringData",)),
    ("secret.metadata", lambda b: _only(b["related"]["Secret.v1"]), ("metadata",)),
    ("class.providerSpec", lambda b: _only(b["related"]["MachineClass.machine.sapcloud.io/v1alpha1"]),
     ("providerSpec",)),
    ("class.secretRef", lambda b: _only(b["related"]["MachineClass.machine.sapcloud.io/v1alpha1"]), ("secretRef",)),
    ("class.nodeTemplate", lambda b: _only(b["related"]["MachineClass.machine.sapcloud.io/v1alpha1"]),
     ("nodeTemplate",)),
    ("set.spec", lambda b: _only(b["related"]["MachineSet.machine.sapcloud.io/v1alpha1"]), ("spec",)),
    ("set.status", lambda b: _only(b["related"]["MachineSet.machine.sapcloud.io/v1alpha1"]), ("status",)),
    ("job.status", lambda b: _only(b["attachments"]["Job.batch/v1"]), ("status",)),
    ("job.status.conditions", lambda b: _only(b["attachments"]["Job.batch/v1"]), ("status", "conditions")),
    ("job.status.succeeded", lambda b: _only(b["attachments"]["Job.batch/v1"]), ("status", "succeeded")),
    ("job.metadata.labels", lambda b: _only(b["attachments"]["Job.batch/v1"]), ("metadata", "labels")),
    ("job.spec", lambda b: _only(b["attachments"]["Job.batch/v1"]), ("spec",)),
]


def _put(obj: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        if not isinstance(obj.get(key), dict):
            obj[key] = {}
        obj = obj[key]
    obj[path[-1]] = value


def _requests() -> dict[str, dict[str, Any]]:
    sync = _running(sync_request())
    sync["attachments"]["Job.batch/v1"] = {f"{decorated(sync)['metadata']['namespace']}/{NAME}-drain": _job()}
    finalize = finalize_request(copy.deepcopy(sync))
    return {"/machine/sync": sync, "/machine/finalize": finalize}


CLIENT = None


@pytest.mark.slow  # Hypothesis: a dozen examples for each of some forty targets, seconds in all
@pytest.mark.parametrize("target", TARGETS, ids=[t[0] for t in TARGETS])
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=JSON)
def test_a_related_object_of_the_wrong_shape_gets_an_answer_not_a_500(target: Target, value: Any) -> None:
    global CLIENT
    CLIENT = CLIENT or _app()
    _, reach, path = target
    for route, body in _requests().items():
        body = copy.deepcopy(body)
        _put(reach(body), path, value)
        answer = CLIENT.post(route, json=body)
        assert answer.status_code != 500, (route, path, value, answer.get_data(as_text=True)[:300])


@pytest.mark.parametrize("target", TARGETS, ids=[t[0] for t in TARGETS])
def test_the_request_of_each_target_is_served_when_well_formed(target: Target) -> None:
    """Each target exists in the requests (so a wrong shape really lands on a field the hooks read)."""
    _, reach, _path = target
    for route, body in _requests().items():
        obj = reach(copy.deepcopy(body))
        assert isinstance(obj, dict) and obj.get("kind"), route
        assert _app().post(route, json=body).status_code == 200, route


# -- the collection hooks: a set's Machines, a class's Machines and Secret, a deployment's sets -------------------

FIXTURES = __import__("pathlib").Path(__file__).parent / "fixtures"


def _fixture(kind: str) -> dict[str, Any]:
    import json

    return json.loads((FIXTURES / kind / "sync-request.json").read_text())


def _first(group: dict[str, Any]) -> dict[str, Any]:
    return next(iter(group.values()))


MACHINE = "Machine.machine.sapcloud.io/v1alpha1"
# (id, route, fixture, how to reach the object, the path inside it)
CollectionTarget = tuple[str, str, str, Callable[[dict[str, Any]], dict[str, Any]], tuple[str, ...]]
COLLECTION_TARGETS: list[CollectionTarget] = [
    *[(f"set.machine.{'.'.join(p)}", "/machineset/sync", "machineset", lambda b: _first(b["children"][MACHINE]), p)
      for p in (("status",), ("status", "currentStatus"), ("status", "lastOperation"), ("spec",),
                ("metadata", "labels"), ("metadata", "annotations"), ("metadata", "ownerReferences"),
                ("metadata", "deletionTimestamp"))],
    *[(f"class.machine.{'.'.join(p)}", "/machineclass/sync", "machineclass",
       lambda b: _first(b["related"][MACHINE]), p)
      for p in (("status",), ("spec",), ("spec", "class"), ("metadata", "annotations"), ("metadata", "labels"))],
    *[(f"class.secret.{'.'.join(p)}", "/machineclass/sync", "machineclass",
       lambda b: _first(b["related"]["Secret.v1"]), p) for p in (("data",), ("data", "apiToken"), ("metadata",))],
    *[(f"deployment.set.{'.'.join(p)}", "/machinedeployment/sync", "machinedeployment",
       lambda b: _first(b["children"]["MachineSet.machine.sapcloud.io/v1alpha1"]), p)
      for p in (("status",), ("status", "replicas"), ("spec",), ("spec", "replicas"), ("metadata", "annotations"))],
]


@pytest.mark.slow  # Hypothesis: a dozen examples for each of some forty targets, seconds in all
@pytest.mark.parametrize("target", COLLECTION_TARGETS, ids=[t[0] for t in COLLECTION_TARGETS])
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=JSON)
def test_a_collection_member_of_the_wrong_shape_gets_an_answer_not_a_500(target: CollectionTarget,
                                                                         value: Any) -> None:
    global CLIENT
    CLIENT = CLIENT or _app()
    _, route, kind, reach, path = target
    body = _fixture(kind)
    _put(reach(body), path, value)
    answer = CLIENT.post(route, json=body)
    assert answer.status_code != 500, (route, path, value, answer.get_data(as_text=True)[:300])
