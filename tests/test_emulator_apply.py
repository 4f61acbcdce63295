"""The emulator applies desired children exactly as Metacontroller v4.17.2's DynamicApply does.

The first cases are the table of Metacontroller's own pkg/dynamic/apply/apply_test.go (TestMerge,
TestLastAppliedAnnotation) and pkg/controller/common/manage_children_test.go (TestRevertObjectMetaSystemFields),
ported as data; the rest pin down the consequences a hook author meets: a desired null, ownerReferences and
finalizers other writers added, lists merged by key, and what a create writes.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from emulator import mc_apply
from emulator.store import Store
from tests.emulator_support import HookServer, composite, get, running, widget, widget_store

Obj = dict[str, Any]

# apply_test.go TestMerge: name, observed, lastApplied, desired, want.
MERGE_CASES = [
    ("empty", "{}", "{}", "{}", "{}"),
    ("scalars", '{"keep": "other", "remove": "other", "replace": "other"}', '{"remove": "old", "replace": "old"}',
     '{"replace": "new", "add": "new"}', '{"replace": "new", "add": "new", "keep": "other"}'),
    ("nested object", '{"update": {"keep": "other", "remove": "other"}}',
     '{"update": {"remove": "old", "replace": "old"}}', '{"update": {"replace": "new", "add": "new"}}',
     '{"update": {"replace": "new", "add": "new", "keep": "other"}}'),
    ("replace list", '{"list": [1,2,3,{"a":true}]}', '{"list": [4,5,6]}', '{"list": [7,8,9,{"b":false}]}',
     '{"list": [7,8,9,{"b":false}]}'),
    ("merge list-map",
     """{"listMap": [{"name": "keep", "value": "other"}, {"name": "remove", "value": "other"},
                     {"name": "merge", "nested": {"keep": "other"}}],
         "ports1": [{"port": 80, "keep": "other"}], "ports2": [{"containerPort": 80, "keep": "other"}]}""",
     """{"listMap": [{"name": "remove", "value": "old"}], "ports1": [{"port": 80, "remove": "old"}]}""",
     """{"listMap": [{"name": "add", "value": "new"}, {"name": "merge", "nested": {"add": "new"}}],
         "ports1": [{"port": 80, "add": "new"}, {"port": 90}],
         "ports2": [{"containerPort": 80}, {"containerPort": 90}]}""",
     """{"listMap": [{"name": "keep", "value": "other"}, {"name": "merge", "nested": {"keep": "other", "add": "new"}},
                     {"name": "add", "value": "new"}],
         "ports1": [{"port": 80, "keep": "other", "add": "new"}, {"port": 90}],
         "ports2": [{"containerPort": 80, "keep": "other"}, {"containerPort": 90}]}"""),
    ("replace list of objects that's not a list-map",
     """{"notListMap": [{"name": "keep", "value": "other"}, {"notName": "remove", "value": "other"},
                        {"name": "merge", "nested": {"keep": "other"}}]}""",
     """{"notListMap": [{"name": "remove", "value": "old"}]}""",
     """{"notListMap": [{"name": "add", "value": "new"}, {"name": "merge", "nested": {"add": "new"}}]}""",
     """{"notListMap": [{"name": "add", "value": "new"}, {"name": "merge", "nested": {"add": "new"}}]}"""),
]


@pytest.mark.parametrize(("observed", "last", "desired", "want"), [c[1:] for c in MERGE_CASES],
                         ids=[c[0] for c in MERGE_CASES])
def test_merge_table_of_apply_go(observed: str, last: str, desired: str, want: str) -> None:
    assert mc_apply.merge(json.loads(observed), json.loads(last), json.loads(desired)) == json.loads(want)


def test_merge_leaves_its_inputs_alone() -> None:
    observed, desired = {"a": {"b": [1]}}, {"a": {"c": 2}}
    merged = mc_apply.merge(observed, None, desired)
    merged["a"]["c"] = 3
    assert observed == {"a": {"b": [1]}} and desired == {"a": {"c": 2}}


def test_last_applied_round_trip() -> None:
    obj: Obj = {}
    mc_apply.set_last_applied(obj, {"testing": "123"})
    assert mc_apply.get_last_applied(obj) == {"testing": "123"}
    assert mc_apply.get_last_applied({"metadata": {}}) is None
    with pytest.raises(mc_apply.ApplyError, match="can't unmarshal"):
        mc_apply.get_last_applied({"metadata": {"annotations": {mc_apply.LAST_APPLIED: "{not json"}}})


def test_last_applied_is_go_json() -> None:
    obj: Obj = {}
    mc_apply.set_last_applied(obj, {"b": "<x & y>", "a": "é"})
    assert obj["metadata"]["annotations"][mc_apply.LAST_APPLIED] == '{"a":"é","b":"\\u003cx \\u0026 y\\u003e"}'


def test_revert_object_meta_system_fields() -> None:
    """manage_children_test.go TestRevertObjectMetaSystemFields."""
    orig = {"metadata": {"origMeta": "should stay gone", "otherMeta": "should change value",
                         "creationTimestamp": "should restore orig value",
                         "deletionTimestamp": "should restore orig value", "uid": "should bring back removed value"},
            "other": "should change value"}
    new = {"metadata": {"creationTimestamp": None, "deletionTimestamp": "new value", "newMeta": "new value",
                        "otherMeta": "new value", "selfLink": "should be removed"}, "other": "new value"}
    mc_apply.revert_system_fields(new, orig)
    assert new == {"metadata": {"otherMeta": "new value", "newMeta": "new value",
                                "creationTimestamp": "should restore orig value",
                                "deletionTimestamp": "should restore orig value",
                                "uid": "should bring back removed value"}, "other": "new value"}


def test_a_desired_null_removes_only_what_was_applied_before() -> None:
    """apply.go never errors on a type mismatch: a null (or scalar) desired for a map drops the applied keys only."""
    observed = {"data": {"mine": "1", "theirs": "2"}, "list": [1, 2], "keyed": [{"name": "a"}, {"name": "b"}]}
    last = {"data": {"mine": "1"}, "list": [1], "keyed": [{"name": "a"}]}
    desired = {"data": None, "list": None, "keyed": None}
    assert mc_apply.merge(observed, last, desired) == {"data": {"theirs": "2"}, "list": None,
                                                        "keyed": [{"name": "b"}]}


def test_owner_references_and_finalizers_follow_the_merge() -> None:
    """They are not reverted: others' entries survive unless the hook names the field itself."""
    observed = {"metadata": {"name": "c", "uid": "u1", "resourceVersion": "7", "finalizers": ["batch/job-tracking"],
                             "ownerReferences": [{"name": "p", "uid": "p-uid", "controller": True},
                                                 {"name": "other", "uid": "o-uid"}]},
                "spec": {"x": 1}, "status": {"ok": True}}
    kept = mc_apply.apply_update(observed, {"metadata": {"name": "c"}, "spec": {"x": 2}})
    assert kept["metadata"]["finalizers"] == ["batch/job-tracking"]
    assert kept["metadata"]["ownerReferences"] == observed["metadata"]["ownerReferences"]
    assert kept["status"] == {"ok": True} and kept["metadata"]["resourceVersion"] == "7"
    replaced = mc_apply.apply_update(observed, {"metadata": {"name": "c", "finalizers": ["mine"],
                                                             "ownerReferences": [{"name": "extra", "uid": "e"}]}})
    assert replaced["metadata"]["finalizers"] == ["mine"]  # a list of strings is replaced
    assert [r["name"] for r in replaced["metadata"]["ownerReferences"]] == ["p", "other", "extra"]  # merged by name


def test_create_keeps_the_hooks_owner_references_and_adds_ours_once() -> None:
    ours = {"apiVersion": "v1", "kind": "Widget", "name": "w", "uid": "w-uid", "controller": True,
            "blockOwnerDeletion": True}
    desired = {"metadata": {"name": "c", "ownerReferences": [{"name": "x", "uid": "x-uid", "controller": True}]}}
    created = mc_apply.object_to_create(desired, ours)
    assert created["metadata"]["ownerReferences"] == [*desired["metadata"]["ownerReferences"], ours]
    assert mc_apply.get_last_applied(created) == desired  # recorded before the ownerRef is added
    already = mc_apply.object_to_create({"metadata": {"name": "c", "ownerReferences": [{"uid": "w-uid"}]}}, ours)
    assert already["metadata"]["ownerReferences"] == [{"uid": "w-uid"}]


@pytest.fixture
def store() -> Store:
    return widget_store()


def test_in_place_update_keeps_what_another_writer_added(store: Store, server: HookServer) -> None:
    """Through the emulator: a label someone else put on the child survives the hook's next InPlace update."""
    def child(body: Obj) -> Obj:
        size = str(body["parent"]["spec"].get("size", 1))
        return {"children": [{"apiVersion": "v1", "kind": "ConfigMap",
                               "metadata": {"name": "w1-0", "labels": {"app": "w1"}}, "data": {"size": size}}]}

    server.handlers["/sync"] = child
    store.create(widget("w1", spec={"size": 1}))
    with running(store, [composite("cc", server.url, method="InPlace")]) as mc:
        mc.wait_for(lambda s: get(s, "ConfigMap", "w1-0"))
        cm = get(store, "ConfigMap", "w1-0")
        cm["metadata"]["labels"]["added-by"] = "someone-else"
        store.update(cm)
        parent = get(store, "Widget", "w1")
        parent["spec"]["size"] = 2
        store.update(parent)
        mc.wait_for(lambda s: get(s, "ConfigMap", "w1-0")["data"] == {"size": "2"}, message="InPlace update")
        assert get(store, "ConfigMap", "w1-0")["metadata"]["labels"] == {"app": "w1", "added-by": "someone-else"}
