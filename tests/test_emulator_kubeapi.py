"""The emulator's Kubernetes REST API answers as an API server does, over HTTP with a bearer token.

Programs run by Jobs (`python -m drain`) only ever see this API, so where it is kinder than a real API server
(no 409 on a stale write, no 429 from a budget, no 401 without a token) they could pass here and fail on a cluster.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from emulator.kubeapi import KubeApiServer
from emulator.store import Store

TOKEN = "s3cret-token"
Obj = dict[str, Any]
REPO = Path(__file__).resolve().parent.parent
MERGE = {"Content-Type": "application/merge-patch+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}
STRATEGIC = {"Content-Type": "application/strategic-merge-patch+json"}


class Client:
    def __init__(self, api: KubeApiServer, token: str = TOKEN) -> None:
        self.api = api
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def __call__(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.session.request(method, self.api.url + path, timeout=10, **kwargs)


@pytest.fixture
def store() -> Store:
    return Store()


@pytest.fixture
def api(store: Store) -> Iterator[KubeApiServer]:
    with KubeApiServer(store, tokens={TOKEN: "tester"}, reap_interval=0.01) as server:
        yield server


@pytest.fixture
def kube(api: KubeApiServer) -> Iterator[Client]:
    client = Client(api)
    yield client
    client.session.close()


def pod(name: str, node: str = "n-1", *, namespace: str = "default", labels: Obj | None = None, ready: bool = True,
        phase: str = "Running", grace: int | None = None) -> Obj:
    spec: Obj = {"nodeName": node, "containers": [{"name": "main", "image": "app:1"}]} if node else {
        "containers": [{"name": "main", "image": "app:1"}]}
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {"app": name}},
            "spec": spec,
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def pdb(name: str, selector: Obj, **spec: Any) -> Obj:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"selector": {"matchLabels": selector}, **spec}}


def evict(kube: Client, name: str, namespace: str = "default") -> requests.Response:
    return kube("POST", f"/api/v1/namespaces/{namespace}/pods/{name}/eviction",
                json={"apiVersion": "policy/v1", "kind": "Eviction",
                      "metadata": {"name": name, "namespace": namespace}})


def wait_until(predicate: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


# ---------------------------------------------------------------- authentication, errors


def test_a_stopped_api_refuses_connections_and_serves_again_on_the_same_port(store: Store) -> None:
    """An outage of the target cluster's API (issue 17): clients keep their URL; the store keeps every object."""
    with KubeApiServer(store, tokens={TOKEN: "tester"}) as api:
        store.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n-1"}})
        client = Client(api)
        url = api.url
        assert client("GET", "/api/v1/nodes/n-1").status_code == 200
        api.stop()
        with pytest.raises(requests.ConnectionError):
            requests.get(url + "/api/v1/nodes/n-1", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=2)
        api.start()
        assert api.url == url
        answer = requests.get(url + "/api/v1/nodes/n-1", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
        assert answer.status_code == 200 and answer.json()["metadata"]["name"] == "n-1"
        client.session.close()



def test_requests_without_the_token_get_401(api: KubeApiServer, store: Store) -> None:
    assert requests.get(api.url + "/api/v1/namespaces", timeout=10).status_code == 401
    wrong = Client(api, "not-it")("GET", "/api/v1/namespaces")
    assert wrong.status_code == 401
    assert wrong.json() == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": "Unauthorized", "reason": "Unauthorized", "code": 401}
    basic = requests.get(api.url + "/api/v1/namespaces", headers={"Authorization": f"Basic {TOKEN}"}, timeout=10)
    assert basic.status_code == 401
    assert [r.code for r in api.requests()] == [401, 401, 401]
    api.add_token("later", "someone")
    assert Client(api, "later")("GET", "/api/v1/namespaces").status_code == 200


def test_missing_objects_and_resources_are_404_status(kube: Client) -> None:
    missing = kube("GET", "/api/v1/namespaces/default/pods/nope")
    assert missing.status_code == 404
    body = missing.json()
    assert (body["kind"], body["status"], body["reason"], body["code"]) == ("Status", "Failure", "NotFound", 404)
    assert body["details"] == {"name": "nope", "group": "", "kind": "pods"}
    assert 'pods.core "nope" not found' in body["message"]
    assert kube("GET", "/api/v1/widgets").json()["reason"] == "NotFound"
    assert kube("GET", "/api/v1/pods/no-namespace").status_code == 404  # a namespaced kind needs its namespace
    assert kube("GET", "/api/v1/namespaces/default/nodes").status_code == 404  # a cluster-scoped kind has none
    assert kube("GET", "/api/v1/namespaces/default/pods/x/log").status_code == 404
    assert kube("GET", "/version").json()["major"] == "1"


def test_discovery_lists_what_is_served(kube: Client, store: Store) -> None:
    store.load_yaml(sorted(p for p in (REPO / "kubernetes" / "crds").glob("*.yaml") if p.name != "kustomization.yaml"))
    assert kube("GET", "/api").json()["versions"] == ["v1"]
    groups = {g["name"]: g for g in kube("GET", "/apis").json()["groups"]}
    assert {"batch", "policy", "machine.sapcloud.io"} <= set(groups)
    core = {r["name"]: r for r in kube("GET", "/api/v1").json()["resources"]}
    assert core["pods"]["namespaced"] and not core["nodes"]["namespaced"]
    assert core["pods/eviction"]["verbs"] == ["create"] and "nodes/status" in core
    machines = kube("GET", "/apis/machine.sapcloud.io/v1alpha1").json()
    assert {"machines", "machinesets", "machinedeployments", "machineclasses"} <= {
        r["name"] for r in machines["resources"]}
    assert kube("GET", "/apis/nothing.example/v1").status_code == 404


# ---------------------------------------------------------------- get, list, selectors


def test_get_and_list_with_label_and_field_selectors(kube: Client, store: Store) -> None:
    store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}})
    store.create(pod("web-1", "n-1", labels={"app": "web", "tier": "front"}))
    store.create(pod("web-2", "n-2", labels={"app": "web"}))
    store.create(pod("db-0", "n-1", namespace="apps", labels={"app": "db"}))
    store.create(pod("job-x", "", labels={"app": "batch"}, phase="Succeeded"))

    got = kube("GET", "/api/v1/namespaces/default/pods/web-1").json()
    assert got["kind"] == "Pod" and got["metadata"]["labels"]["tier"] == "front"

    def names(path: str, **params: str) -> list[str]:
        response = kube("GET", path, params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["kind"] == "PodList" and body["apiVersion"] == "v1"
        assert int(body["metadata"]["resourceVersion"]) >= max(int(i["metadata"]["resourceVersion"])
                                                                for i in body["items"]) if body["items"] else True
        return [i["metadata"]["name"] for i in body["items"]]

    assert names("/api/v1/pods") == ["db-0", "job-x", "web-1", "web-2"]  # all namespaces
    assert names("/api/v1/namespaces/apps/pods") == ["db-0"]
    assert names("/api/v1/pods", fieldSelector="spec.nodeName=n-1") == ["db-0", "web-1"]
    assert names("/api/v1/pods", fieldSelector="spec.nodeName==n-1,metadata.namespace!=apps") == ["web-1"]
    assert names("/api/v1/pods", fieldSelector="metadata.name=web-2") == ["web-2"]
    assert names("/api/v1/pods", fieldSelector="status.phase!=Succeeded,spec.nodeName!=n-2") == ["db-0", "web-1"]
    assert names("/api/v1/pods", labelSelector="app=web") == ["web-1", "web-2"]
    assert names("/api/v1/pods", labelSelector="app==web,tier") == ["web-1"]
    assert names("/api/v1/pods", labelSelector="app=web,!tier") == ["web-2"]
    assert names("/api/v1/pods", labelSelector="app in (db, batch)") == ["db-0", "job-x"]
    assert names("/api/v1/pods", labelSelector="app notin (db,batch),tier!=front") == ["web-2"]
    bad_field = kube("GET", "/api/v1/pods", params={"fieldSelector": "spec.hostname=x"})
    assert bad_field.status_code == 400 and "field label not supported" in bad_field.json()["message"]
    bad_label = kube("GET", "/api/v1/pods", params={"labelSelector": "app in web"})
    assert bad_label.status_code == 400 and bad_label.json()["reason"] == "BadRequest"


def test_list_pages_follow_continue_tokens(kube: Client, store: Store) -> None:
    for i in range(7):
        store.create(pod(f"p-{i}"))
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 3}
    pages = 0
    while True:
        body = kube("GET", "/api/v1/namespaces/default/pods", params=params).json()
        pages += 1
        seen += [i["metadata"]["name"] for i in body["items"]]
        token = body["metadata"].get("continue")
        if not token:
            break
        params = {"limit": 3, "continue": token}
    assert pages == 3 and seen == [f"p-{i}" for i in range(7)]
    assert kube("GET", "/api/v1/pods", params={"continue": "garbage"}).status_code == 400


def test_custom_resources_are_served_under_their_group(kube: Client, store: Store) -> None:
    store.load_yaml(sorted(p for p in (REPO / "kubernetes" / "crds").glob("*.yaml") if p.name != "kustomization.yaml"))
    path = "/apis/machine.sapcloud.io/v1alpha1/namespaces/default/machineclasses"
    created = kube("POST", path, json={"apiVersion": "machine.sapcloud.io/v1alpha1", "kind": "MachineClass",
                                       "metadata": {"name": "c1"}, "providerSpec": {"plan": "m3.small.x86"},
                                       "provider": "EquinixMetal"})
    assert created.status_code == 201, created.text
    body = kube("GET", path).json()
    assert body["kind"] == "MachineClassList" and [i["metadata"]["name"] for i in body["items"]] == ["c1"]
    assert kube("PATCH", f"{path}/c1", json={"provider": "x"}, headers=STRATEGIC).status_code == 415


# ---------------------------------------------------------------- create, update, conflicts


def test_create_update_and_resource_version_conflicts(kube: Client, store: Store) -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "v"}}
    created = kube("POST", "/api/v1/namespaces/default/secrets", json=secret)
    assert created.status_code == 201
    obj = created.json()
    assert obj["metadata"]["namespace"] == "default" and obj["data"] == {"k": "dg=="}
    again = kube("POST", "/api/v1/namespaces/default/secrets", json=secret)
    assert again.status_code == 409 and again.json()["reason"] == "AlreadyExists"
    elsewhere = dict(secret, metadata={"name": "t", "namespace": "kube-system"})
    assert kube("POST", "/api/v1/namespaces/default/secrets", json=elsewhere).status_code == 400

    obj["data"]["k"] = "dzI="
    updated = kube("PUT", "/api/v1/namespaces/default/secrets/s", json=obj)
    assert updated.status_code == 200
    assert updated.json()["metadata"]["resourceVersion"] != obj["metadata"]["resourceVersion"]
    stale = kube("PUT", "/api/v1/namespaces/default/secrets/s", json=obj)  # the resourceVersion read before
    assert stale.status_code == 409
    assert stale.json()["reason"] == "Conflict" and "the object has been modified" in stale.json()["message"]
    assert store.get("v1", "Secret", "s", "default")["data"]["k"] == "dzI="
    renamed = dict(updated.json(), metadata={**updated.json()["metadata"], "name": "other"})
    assert kube("PUT", "/api/v1/namespaces/default/secrets/s", json=renamed).status_code == 400
    invalid = kube("POST", "/api/v1/namespaces/default/secrets",
                   json={"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "Bad_Name"}})
    assert invalid.status_code == 422 and invalid.json()["reason"] == "Invalid"
    assert [r.body for r in kube.api.requests()] == [None] * 7  # the request log keeps no Secret content


def test_status_subresource_separates_status_from_the_rest(kube: Client, store: Store) -> None:
    store.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n-1", "labels": {"a": "1"}},
                  "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    node = kube("GET", "/api/v1/nodes/n-1").json()
    node["status"]["conditions"][0]["status"] = "False"
    node["metadata"]["labels"]["a"] = "2"
    main = kube("PUT", "/api/v1/nodes/n-1", json=node).json()
    assert main["metadata"]["labels"]["a"] == "2" and main["status"]["conditions"][0]["status"] == "True"
    node = kube("GET", "/api/v1/nodes/n-1/status").json()
    node["status"]["conditions"][0]["status"] = "False"
    node["metadata"]["labels"]["a"] = "3"
    status = kube("PUT", "/api/v1/nodes/n-1/status", json=node).json()
    assert status["metadata"]["labels"]["a"] == "2" and status["status"]["conditions"][0]["status"] == "False"
    patched = kube("PATCH", "/api/v1/nodes/n-1/status", headers=STRATEGIC,
                   json={"status": {"conditions": [{"type": "DiskPressure", "status": "False"}]}}).json()
    assert [c["type"] for c in patched["status"]["conditions"]] == ["Ready", "DiskPressure"]  # merged by type
    assert kube("GET", "/api/v1/namespaces/default/secrets/x/status").status_code == 404


# ---------------------------------------------------------------- patches


def test_merge_patch_cordons_and_null_removes(kube: Client, store: Store) -> None:
    store.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n-1", "labels": {"a": "1", "b": "2"}}})
    response = kube("PATCH", "/api/v1/nodes/n-1", headers=MERGE,
                    json={"spec": {"unschedulable": True}, "metadata": {"labels": {"a": None}}})
    assert response.status_code == 200
    node = store.get("v1", "Node", "n-1")
    assert node["spec"] == {"unschedulable": True} and node["metadata"]["labels"] == {"b": "2"}
    unsupported = kube("PATCH", "/api/v1/nodes/n-1", json={}, headers={"Content-Type": "application/json"})
    assert unsupported.status_code == 415 and unsupported.json()["reason"] == "UnsupportedMediaType"


def test_json_patch_operations_and_failed_test(kube: Client, store: Store) -> None:
    store.create(pod("web-1"))
    ops = [{"op": "add", "path": "/metadata/labels/tier", "value": "front"},
           {"op": "replace", "path": "/spec/containers/0/image", "value": "app:2"},
           {"op": "test", "path": "/metadata/labels/app", "value": "web-1"},
           {"op": "remove", "path": "/metadata/labels/app"}]
    response = kube("PATCH", "/api/v1/namespaces/default/pods/web-1", headers=JSON_PATCH, json=ops)
    assert response.status_code == 200, response.text
    current = store.get("v1", "Pod", "web-1", "default")
    assert current["metadata"]["labels"] == {"tier": "front"} and current["spec"]["containers"][0]["image"] == "app:2"
    failed = kube("PATCH", "/api/v1/namespaces/default/pods/web-1", headers=JSON_PATCH,
                  json=[{"op": "test", "path": "/metadata/labels/tier", "value": "back"},
                        {"op": "add", "path": "/metadata/labels/x", "value": "y"}])
    assert failed.status_code == 422 and "x" not in store.get("v1", "Pod", "web-1", "default")["metadata"]["labels"]
    assert kube("PATCH", "/api/v1/namespaces/default/pods/web-1", headers=JSON_PATCH,
                json={"op": "add"}).status_code == 400


def test_strategic_merge_merges_lists_by_key(kube: Client, store: Store) -> None:
    obj = pod("web-1")
    obj["spec"]["containers"].append({"name": "sidecar", "image": "proxy:1"})
    obj["metadata"]["finalizers"] = ["example.com/a"]
    store.create(obj)
    response = kube("PATCH", "/api/v1/namespaces/default/pods/web-1", headers=STRATEGIC, json={
        "metadata": {"finalizers": ["example.com/b"]},
        "spec": {"containers": [{"name": "sidecar", "image": "proxy:2"}, {"name": "main", "$patch": "delete"}]},
    })
    assert response.status_code == 200, response.text
    current = store.get("v1", "Pod", "web-1", "default")
    assert current["spec"]["containers"] == [{"name": "sidecar", "image": "proxy:2"}]
    assert current["metadata"]["finalizers"] == ["example.com/a", "example.com/b"]


def test_a_patch_pinning_an_old_resource_version_conflicts(kube: Client, store: Store) -> None:
    created = store.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}})
    store.update({**created, "data": {"a": "2"}})
    stale = kube("PATCH", "/api/v1/namespaces/default/configmaps/c", headers=MERGE,
                 json={"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}, "data": {"a": "3"}})
    assert stale.status_code == 409 and stale.json()["reason"] == "Conflict"
    fresh = kube("PATCH", "/api/v1/namespaces/default/configmaps/c", headers=MERGE, json={"data": {"a": "3"}})
    assert fresh.status_code == 200 and store.get("v1", "ConfigMap", "c", "default")["data"] == {"a": "3"}


# ---------------------------------------------------------------- delete


@pytest.mark.slow  # waits out a one-second grace period
def test_delete_is_graceful_for_pods_on_a_node(kube: Client, store: Store) -> None:
    store.create(pod("bound", grace=1))
    store.create(pod("unbound", ""))
    answer = kube("DELETE", "/api/v1/namespaces/default/pods/bound")
    assert answer.status_code == 200 and answer.json()["metadata"]["deletionGracePeriodSeconds"] == 1
    assert store.get("v1", "Pod", "bound", "default")["metadata"]["deletionTimestamp"]
    listed = kube("GET", "/api/v1/pods", params={"fieldSelector": "spec.nodeName=n-1"}).json()["items"]
    assert [p["metadata"]["name"] for p in listed] == ["bound"] and listed[0]["metadata"]["deletionTimestamp"]
    assert kube("DELETE", "/api/v1/namespaces/default/pods/unbound").status_code == 200
    assert store.try_get("v1", "Pod", "unbound", "default") is None
    wait_until(lambda: store.try_get("v1", "Pod", "bound", "default") is None)
    assert kube("DELETE", "/api/v1/namespaces/default/pods/bound").status_code == 404
    store.create(pod("now"))
    assert kube("DELETE", "/api/v1/namespaces/default/pods/now", params={"gracePeriodSeconds": "0"}).ok
    assert store.try_get("v1", "Pod", "now", "default") is None


def test_delete_with_a_stale_uid_precondition_conflicts(kube: Client, store: Store) -> None:
    store.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})
    response = kube("DELETE", "/api/v1/namespaces/default/configmaps/c", json={"preconditions": {"uid": "old"}})
    assert response.status_code == 409
    assert store.try_get("v1", "ConfigMap", "c", "default") is not None
    assert kube("DELETE", "/api/v1/namespaces/default/configmaps/c").json()["status"] == "Success"
    assert store.try_get("v1", "ConfigMap", "c", "default") is None


# ---------------------------------------------------------------- eviction and budgets


def test_eviction_is_refused_with_429_while_the_budget_allows_no_disruption(kube: Client, store: Store) -> None:
    store.create(pod("web-1", labels={"app": "web"}, grace=0))
    store.create(pdb("web", {"app": "web"}, minAvailable=1))
    budget = kube("GET", "/apis/policy/v1/namespaces/default/poddisruptionbudgets/web").json()["status"]
    assert (budget["currentHealthy"], budget["desiredHealthy"], budget["disruptionsAllowed"]) == (1, 1, 0)
    refused = evict(kube, "web-1")
    assert refused.status_code == 429
    body = refused.json()
    assert (body["kind"], body["reason"], body["code"]) == ("Status", "TooManyRequests", 429)
    assert body["message"] == "Cannot evict pod as it would violate the pod's disruption budget."
    assert body["details"]["causes"] == [{"reason": "DisruptionBudget",
                                          "message": "The disruption budget web needs 1 healthy pods and has 1 "
                                                     "currently"}]
    assert store.try_get("v1", "Pod", "web-1", "default") is not None

    store.create(pod("web-2", "n-2", labels={"app": "web"}))  # a replacement elsewhere: one disruption allowed
    allowed = kube("GET", "/apis/policy/v1/namespaces/default/poddisruptionbudgets").json()["items"][0]["status"]
    assert allowed["disruptionsAllowed"] == 1
    granted = evict(kube, "web-1")
    assert granted.status_code == 201 and granted.json()["status"] == "Success"
    wait_until(lambda: store.try_get("v1", "Pod", "web-1", "default") is None)
    assert evict(kube, "web-2").status_code == 429  # the last healthy one stays
    assert evict(kube, "gone").status_code == 404
    assert [(r.verb, r.resource, r.code) for r in kube.api.requests() if r.resource == "pods/eviction"] == [
        ("create", "pods/eviction", 429), ("create", "pods/eviction", 201), ("create", "pods/eviction", 429),
        ("create", "pods/eviction", 404)]


def test_one_disruption_at_a_time_with_max_unavailable(kube: Client, store: Store) -> None:
    for i in range(4):
        store.create(pod(f"web-{i}", labels={"app": "web"}, grace=30))
    store.create(pdb("web", {"app": "web"}, maxUnavailable="25%"))  # 25% of 4, rounded up: 1
    assert evict(kube, "web-0").status_code == 201
    assert store.get("v1", "Pod", "web-0", "default")["metadata"]["deletionTimestamp"]  # terminating, 30 s grace
    assert evict(kube, "web-1").status_code == 429  # web-0 still counts as disrupted
    assert evict(kube, "web-0").status_code == 201  # already terminating: no budget needed


def test_pods_a_budget_does_not_protect_are_evicted_freely(kube: Client, store: Store) -> None:
    store.create(pod("pending", labels={"app": "web"}, phase="Pending"))
    store.create(pod("done", labels={"app": "web"}, phase="Succeeded"))
    store.create(pod("unready", labels={"app": "web"}, ready=False))
    store.create(pod("ready", labels={"app": "web"}))
    store.create(pod("two-budgets", labels={"app": "both"}))
    store.create(pdb("web", {"app": "web"}, minAvailable=1))
    store.create(pdb("both-a", {"app": "both"}, minAvailable=0))
    store.create({**pdb("both-b", {"app": "both"}, minAvailable=0)})
    assert evict(kube, "pending").status_code == 201
    assert evict(kube, "done").status_code == 201
    assert evict(kube, "unready").status_code == 201  # not healthy, and the budget has its 1 healthy pod
    assert evict(kube, "ready").status_code == 429
    two = evict(kube, "two-budgets")
    assert two.status_code == 500 and "more than one PodDisruptionBudget" in two.json()["message"]
    bad = kube("POST", "/api/v1/namespaces/default/pods/ready/eviction", json={"kind": "Pod"})
    assert bad.status_code == 400
