"""PATCH bodies and list selectors mean what they mean to the API server (RFC 7386, RFC 6902, strategic merge)."""

from __future__ import annotations

import pytest

from emulator import disruption
from emulator.kube_query import QueryError, field_filter, parse_label_selector
from emulator.patches import PatchError, json_patch, merge_patch, strategic_merge_patch


def test_merge_patch_rfc7386_examples() -> None:
    assert merge_patch({"a": "b"}, {"a": "c"}) == {"a": "c"}
    assert merge_patch({"a": "b"}, {"b": "c"}) == {"a": "b", "b": "c"}
    assert merge_patch({"a": "b"}, {"a": None}) == {}
    assert merge_patch({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}) == {"a": {"b": "d"}}
    assert merge_patch({"a": [{"b": "c"}]}, {"a": [1]}) == {"a": [1]}  # lists are replaced
    assert merge_patch({"a": "foo"}, "bar") == "bar"
    assert merge_patch({"e": None}, {"a": 1}) == {"e": None, "a": 1}
    original = {"a": {"b": 1}}
    merge_patch(original, {"a": {"b": 2}})
    assert original == {"a": {"b": 1}}  # arguments are never changed


def test_json_patch_rfc6902_operations() -> None:
    doc = {"foo": ["bar", "baz"], "q": {"x": 1}}
    assert json_patch(doc, [{"op": "add", "path": "/foo/1", "value": "qux"}])["foo"] == ["bar", "qux", "baz"]
    assert json_patch(doc, [{"op": "add", "path": "/foo/-", "value": "end"}])["foo"][-1] == "end"
    assert json_patch(doc, [{"op": "remove", "path": "/foo/0"}])["foo"] == ["baz"]
    assert json_patch(doc, [{"op": "replace", "path": "/q/x", "value": 2}])["q"] == {"x": 2}
    assert json_patch(doc, [{"op": "move", "from": "/q/x", "path": "/y"}]) == {"foo": ["bar", "baz"], "q": {}, "y": 1}
    assert json_patch(doc, [{"op": "copy", "from": "/foo/0", "path": "/first"}])["first"] == "bar"
    assert json_patch({"a/b": {"~c": 1}}, [{"op": "replace", "path": "/a~1b/~0c", "value": 2}]) == {"a/b": {"~c": 2}}
    assert doc == {"foo": ["bar", "baz"], "q": {"x": 1}}
    with pytest.raises(PatchError) as failed:
        json_patch(doc, [{"op": "test", "path": "/q/x", "value": 9}])
    assert failed.value.invalid
    for bad in ([{"op": "remove", "path": "/nope"}], [{"op": "replace", "path": "/foo/5", "value": 1}],
                [{"op": "add", "path": "/missing/deep", "value": 1}]):
        with pytest.raises(PatchError):
            json_patch(doc, bad)
    with pytest.raises(PatchError):
        json_patch(doc, {"op": "add"})


def test_strategic_merge_by_key_and_directives() -> None:
    pod = {"metadata": {"finalizers": ["a"], "ownerReferences": [{"uid": "1", "name": "x"}]},
           "spec": {"containers": [{"name": "main", "image": "1", "env": [{"name": "A", "value": "1"}]}],
                    "tolerations": [{"key": "t1"}]},
           "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    patched = strategic_merge_patch(pod, {
        "metadata": {"finalizers": ["b", "a"]},
        "spec": {"containers": [{"name": "main", "env": [{"name": "B", "value": "2"}]}],
                 "tolerations": [{"key": "t2"}]},  # no merge strategy: replaced
        "status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "PodScheduled", "status": "True"}]},
    })
    assert patched["metadata"]["finalizers"] == ["a", "b"]
    assert patched["spec"]["containers"] == [{"name": "main", "image": "1", "env": [{"name": "A", "value": "1"},
                                                                                     {"name": "B", "value": "2"}]}]
    assert patched["spec"]["tolerations"] == [{"key": "t2"}]
    assert patched["status"]["conditions"] == [{"type": "Ready", "status": "False"},
                                               {"type": "PodScheduled", "status": "True"}]
    removed = strategic_merge_patch(pod, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"],
                                                       "ownerReferences": [{"uid": "1", "$patch": "delete"}]}})
    assert removed["metadata"] == {"finalizers": [], "ownerReferences": []}
    replaced = strategic_merge_patch(pod, {"spec": {"$patch": "replace", "containers": []}})
    assert replaced["spec"] == {"containers": []}
    with pytest.raises(PatchError):
        strategic_merge_patch(pod, {"spec": {"containers": [{"image": "no-name"}]}})


def test_label_selector_strings() -> None:
    assert parse_label_selector("") is None
    assert parse_label_selector("a=b,c!=d,e in (x, y),f notin (z),g,!h") == {"matchExpressions": [
        {"key": "a", "operator": "In", "values": ["b"]},
        {"key": "c", "operator": "NotIn", "values": ["d"]},
        {"key": "e", "operator": "In", "values": ["x", "y"]},
        {"key": "f", "operator": "NotIn", "values": ["z"]},
        {"key": "g", "operator": "Exists"},
        {"key": "h", "operator": "DoesNotExist"},
    ]}
    assert parse_label_selector("app.kubernetes.io/name==web")["matchExpressions"][0]["key"] == "app.kubernetes.io/name"
    for bad in ("a in b", "!a=b", "a in ()", "=b"):
        with pytest.raises(QueryError):
            parse_label_selector(bad)


def test_field_selectors_per_kind() -> None:
    pod = {"metadata": {"name": "p", "namespace": "ns"}, "spec": {"nodeName": "n-1"}, "status": {"phase": "Running"}}
    assert field_filter("spec.nodeName=n-1", "Pod")(pod)
    assert not field_filter("spec.nodeName=n-1,status.phase!=Running", "Pod")(pod)
    assert field_filter("metadata.namespace==ns", "Pod")(pod)
    assert field_filter("spec.unschedulable=false", "Node")({"metadata": {"name": "n"}, "spec": {}})  # unset: false
    assert field_filter("spec.unschedulable=true", "Node")({"metadata": {"name": "n"}, "spec": {"unschedulable": True}})
    with pytest.raises(QueryError, match="field label not supported"):
        field_filter("spec.nodeName=n-1", "ConfigMap")


def _pod(name: str, ready: bool = True, deleting: bool = False) -> dict:
    meta = {"name": name, "namespace": "ns", "labels": {"app": "web"}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "status": {"phase": "Running",
                                         "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_budget_status_from_pods() -> None:
    budget = {"metadata": {"name": "b", "namespace": "ns"},
              "spec": {"selector": {"matchLabels": {"app": "web"}}, "minAvailable": "50%"}}
    pods = [_pod("a"), _pod("b"), _pod("c", ready=False), _pod("d", deleting=True)]
    status = disruption.budget_status(budget, pods)
    # 4 expected, 50% rounded up = 2 desired, 2 healthy (c unready, d terminating): nothing may go.
    assert (status["expectedPods"], status["desiredHealthy"], status["currentHealthy"],
            status["disruptionsAllowed"]) == (4, 2, 2, 0)
    assert status["conditions"][0]["reason"] == "InsufficientPods"
    budget["spec"] = {"selector": {"matchLabels": {"app": "web"}}, "maxUnavailable": 3}
    assert disruption.budget_status(budget, pods)["disruptionsAllowed"] == 1
    budget["spec"] = {"minAvailable": 0}  # no selector: selects nothing in policy/v1
    assert disruption.budget_status(budget, pods)["expectedPods"] == 0
