"""The in-memory API server behaves like the real one where hooks could tell the difference."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path

import pytest

from emulator.store import AlreadyExists, Conflict, Invalid, NotFound, Store, WatchEvent
from tests.emulator_support import API, configmap, widget, widget_crd

REPO = Path(__file__).resolve().parent.parent
MCM_CRDS = REPO.parent / "shared" / "reference" / "mcm-crds"
OUR_CRDS = REPO / "kubernetes" / "crds"


@pytest.fixture
def store() -> Store:
    s = Store(clock=lambda: datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    s.register_crd(widget_crd())
    return s


def test_create_sets_system_metadata(store: Store) -> None:
    obj = store.create(widget("w1"))
    meta = obj["metadata"]
    assert meta["creationTimestamp"] == "2026-01-02T03:04:05Z"
    assert meta["generation"] == 1 and meta["uid"] and meta["resourceVersion"]
    with pytest.raises(AlreadyExists):
        store.create(widget("w1"))


def test_stale_resource_version_is_a_conflict(store: Store) -> None:
    obj = store.create(widget("w1"))
    first = dict(obj, spec={**obj["spec"], "size": 1})
    store.update(first)
    with pytest.raises(Conflict):
        store.update(dict(obj, spec={**obj["spec"], "size": 2}))


def test_generation_bumps_on_spec_only(store: Store) -> None:
    obj = store.create(widget("w1"))
    obj["metadata"]["labels"]["extra"] = "yes"
    obj = store.update(obj)
    assert obj["metadata"]["generation"] == 1
    obj["status"] = {"phase": "Ready"}
    obj = store.update_status(obj)
    assert obj["metadata"]["generation"] == 1
    obj["spec"]["size"] = 3
    obj = store.update(obj)
    assert obj["metadata"]["generation"] == 2


def test_update_ignores_status_and_update_status_ignores_the_rest(store: Store) -> None:
    obj = store.create(widget("w1"))
    obj["status"] = {"phase": "Sneaky"}
    obj = store.update(obj)
    assert "status" not in obj
    obj["status"] = {"phase": "Ready"}
    obj["spec"]["size"] = 9
    obj["metadata"]["labels"] = {"changed": "yes"}
    obj = store.update_status(obj)
    assert obj["status"] == {"phase": "Ready"}
    assert "size" not in obj["spec"] and obj["metadata"]["labels"] == {"app": "w1"}


def test_status_subresource_missing_means_no_update_status() -> None:
    s = Store()
    s.register_crd(widget_crd(status_subresource=False))
    obj = s.create(widget("w1"))
    with pytest.raises(NotFound):
        s.update_status(dict(obj, status={"phase": "x"}))
    with pytest.raises(NotFound):
        s.update_status(s.create(configmap("c1")))


def test_unknown_status_fields_are_pruned_and_wrong_types_rejected(store: Store) -> None:
    obj = store.create(widget("w1"))
    obj["status"] = {"phase": "Ready", "notInSchema": {"a": 1}, "count": None}
    obj = store.update_status(obj)
    assert obj["status"] == {"phase": "Ready"}
    obj["status"] = {"count": "three"}
    with pytest.raises(Invalid, match=r"status\.count"):
        store.update_status(obj)


def test_mcm_machine_status_is_pruned_by_its_crd() -> None:
    if not MCM_CRDS.is_dir():
        pytest.skip("MCM reference CRDs not available")
    s = Store()
    s.load_yaml(MCM_CRDS)
    m = s.create({"apiVersion": "machine.sapcloud.io/v1alpha1", "kind": "Machine",
                  "metadata": {"name": "m1", "namespace": "default"},
                  "spec": {"class": {"kind": "MachineClass", "name": "c"}, "madeUp": True}})
    assert "madeUp" not in m["spec"]
    m["status"] = {"currentStatus": {"phase": "Running", "bogus": 1}, "deviceState": "active"}
    m = s.update_status(m)
    assert m["status"] == {"currentStatus": {"phase": "Running"}}


def test_our_crds_and_examples_load() -> None:
    s = Store()
    kinds = {rt.kind for rt in s.resource_types()}
    s.load_yaml(OUR_CRDS)
    assert {"Machine", "MachineClass", "MachineSet", "MachineDeployment"} <= {rt.kind for rt in s.resource_types()}
    assert kinds < {rt.kind for rt in s.resource_types()}
    examples = REPO / "kubernetes" / "examples"
    if any(examples.glob("*.yaml")):
        loaded = s.load_yaml(examples)
        assert {"Secret", "MachineClass"} <= {o["kind"] for o in loaded}


def test_delete_with_finalizers_only_marks_and_last_finalizer_removes(store: Store) -> None:
    obj = widget("w1")
    obj["metadata"]["finalizers"] = ["example.com/hold"]
    store.create(obj)
    store.delete(API, "Widget", "w1", "default")
    marked = store.get(API, "Widget", "w1", "default")
    assert marked["metadata"]["deletionTimestamp"] == "2026-01-02T03:04:05Z"
    marked["metadata"]["finalizers"].append("example.com/other")
    with pytest.raises(Invalid, match="no new finalizers"):
        store.update(marked)
    marked["metadata"]["finalizers"] = []
    store.update(marked)
    assert store.try_get(API, "Widget", "w1", "default") is None


def test_garbage_collection_removes_orphaned_dependents(store: Store) -> None:
    owner = store.create(widget("w1"))
    ref = {"apiVersion": API, "kind": "Widget", "name": "w1", "uid": owner["metadata"]["uid"], "controller": True}
    child = configmap("c1")
    child["metadata"]["ownerReferences"] = [ref]
    store.create(child)
    other = store.create(widget("w2"))
    shared = configmap("c2")
    shared["metadata"]["ownerReferences"] = [ref, {"apiVersion": API, "kind": "Widget", "name": "w2",
                                                   "uid": other["metadata"]["uid"]}]
    store.create(shared)
    store.delete(API, "Widget", "w1", "default")
    assert store.try_get("v1", "ConfigMap", "c1", "default") is None
    survivor = store.get("v1", "ConfigMap", "c2", "default")
    assert [r["name"] for r in survivor["metadata"]["ownerReferences"]] == ["w2"]


def test_dependent_of_a_missing_owner_is_collected_on_create(store: Store) -> None:
    child = configmap("c1")
    child["metadata"]["ownerReferences"] = [{"apiVersion": API, "kind": "Widget", "name": "gone",
                                             "uid": "00000000-0000-0000-0000-000000000000"}]
    store.create(child)
    assert store.try_get("v1", "ConfigMap", "c1", "default") is None


def test_no_op_update_emits_no_event(store: Store) -> None:
    events: list[WatchEvent] = []
    obj = store.create(widget("w1"))
    store.watch(events.append)
    same = store.update(obj)
    assert same["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]
    assert events == []
    obj["metadata"]["labels"]["x"] = "y"
    store.update(obj)
    assert [(e.type, e.old["metadata"]["labels"]) for e in events] == [("MODIFIED", {"app": "w1"})]


def test_secret_string_data_becomes_base64_data() -> None:
    s = Store()
    secret = s.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s1"},
                       "stringData": {"token": "abc"}})
    assert "stringData" not in secret
    assert base64.b64decode(secret["data"]["token"]) == b"abc"
    assert secret["type"] == "Opaque"


def test_invalid_labels_and_names_are_rejected(store: Store) -> None:
    with pytest.raises(Invalid, match="label"):
        store.create(widget("w1", labels={"app": "has space"}))
    with pytest.raises(Invalid, match="RFC 1123"):
        store.create(widget("Upper"))


def test_namespace_must_exist_unless_auto() -> None:
    with pytest.raises(NotFound, match="namespaces"):
        Store().create(configmap("c", "elsewhere"))
    s = Store(auto_namespaces=True)
    s.create(configmap("c", "elsewhere"))
    assert s.try_get("v1", "Namespace", "elsewhere") is not None


def test_list_filters_by_namespace_and_selector(store: Store) -> None:
    store.create(configmap("a", labels={"tier": "x"}))
    store.create(configmap("b", labels={"tier": "y"}))
    store.create(configmap("c", "kube-system", labels={"tier": "x"}))
    selected = store.list("v1", "ConfigMap", label_selector={"matchLabels": {"tier": "x"}})
    names = [o["metadata"]["name"] for o in selected]
    assert names == ["a", "c"]
    assert [o["metadata"]["name"] for o in store.list("v1", "ConfigMap", namespace="default")] == ["a", "b"]
    expr = {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["x"]}]}
    assert [o["metadata"]["name"] for o in store.list("v1", "ConfigMap", label_selector=expr)] == ["b"]
