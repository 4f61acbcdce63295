"""The Metacontroller emulator applies hook answers the way Metacontroller v4.17 does.

Each test runs the emulator against tiny hook servers with canned answers and asserts what a user would see in
the cluster (objects, labels, status) or in the hook requests.
"""

from __future__ import annotations

import base64
import itertools
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from emulator.metacontroller import DECORATOR_ANNOTATION, LAST_APPLIED, Metacontroller, load_controllers
from emulator.store import Store
from tests.emulator_support import (
    API,
    HookServer,
    composite,
    configmap,
    decorator,
    get,
    running,
    widget,
    widget_crd,
    widget_store,
)

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent
Obj = dict[str, Any]


@pytest.fixture
def store() -> Store:
    return widget_store({"apiVersion": "v1", "kind": "Namespace",
                         "metadata": {"name": "other", "labels": {"team": "a"}}})


def children_of(body: Obj, size: int, *, labels: Obj | None = None, **data: str) -> list[Obj]:
    name = body["parent"]["metadata"]["name"]
    return [{"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": f"{name}-{i}", "labels": labels or {"app": name}},
             "data": {"index": str(i), **data}} for i in range(size)]


def errors(mc: Metacontroller, hook: str = "sync") -> list[str]:
    return [e["error"] for e in mc.hook_calls(hook=hook) if e["outcome"] == "error"]


# ---------------------------------------------------------------- decoding


def test_v2_response_with_unknown_field_is_rejected(store: Store, server: HookServer) -> None:
    server.handlers["/sync"] = lambda body: {"status": {"phase": "Ready"}, "children": [], "labels": {"x": "y"}}
    store.create(widget("w1"))
    with running(store, [composite("cc", server.url)]) as mc:
        mc.wait_for(lambda s: len(errors(mc)) >= 2, message="sync retried after the decode error")
        assert 'unknown field "labels"' in errors(mc)[0]
        assert "version=v2" in errors(mc)[0]
        assert "status" not in get(store, "Widget", "w1")


def test_v1_response_with_unknown_field_is_accepted(store: Store, server: HookServer) -> None:
    server.handlers["/sync"] = lambda body: {"status": {"phase": "Ready"}, "children": [], "labels": {"x": "y"},
                                             "ResyncAfterSeconds": 5}
    store.create(widget("w1"))
    with running(store, [composite("cc", server.url, version="v1")]) as mc:
        mc.wait_for(lambda s: (get(s, "Widget", "w1").get("status") or {}).get("phase") == "Ready")
        assert errors(mc) == []
        assert mc.runtime("cc").queue.pending_delays() == {}  # the mis-cased field was ignored, not honoured


def test_v2_duplicate_field_and_wrong_type_are_errors(store: Store, server: HookServer) -> None:
    answers = iter(['{"status": {}, "status": {"phase": "x"}}', '{"children": {"not": "a list"}}'])
    server.handlers["/sync"] = lambda body: (200, next(answers, "{}"))
    store.create(widget("w1"))
    with running(store, [composite("cc", server.url)]) as mc:
        mc.wait_for(lambda s: len(errors(mc)) >= 2)
        assert 'duplicate field "status"' in errors(mc)[0]
        assert "cannot unmarshal dict into field children" in errors(mc)[1]


def test_decorator_and_composite_field_sets_differ(store: Store, server: HookServer) -> None:
    server.handlers["/sync"] = lambda body: {"children": []}
    store.create(widget("w1"))
    with running(store, [decorator("dc", server.url)]) as mc:
        mc.wait_for(lambda s: errors(mc))
        assert 'unknown field "children"' in errors(mc)[0]


def test_only_http_200_is_success_and_failures_back_off(store: Store, server: HookServer) -> None:
    times: list[float] = []

    def created(body: Obj) -> Any:
        times.append(time.monotonic())
        return 201, {"status": {"phase": "Ready"}, "children": []}

    server.handlers["/sync"] = created
    store.create(widget("w1"))
    with running(store, [composite("cc", server.url)], backoff_base=0.02, backoff_cap=0.16) as mc:
        mc.wait_for(lambda s: len(times) >= 6, message="six attempts")
        assert "unsupported status code: 201" in errors(mc)[0]
        assert "status" not in get(store, "Widget", "w1")
        sync_errors = [e for e in mc.events if e["outcome"] == "sync-error"]
        assert sync_errors and sync_errors[0]["error"].startswith("Sync error: sync hook failed for Widget default/w1")
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[3] >= 0.14 and gaps[4] >= 0.14  # 20 ms, 40, 80, then 160 (the cap)
    assert gaps[0] < gaps[3]
    assert max(gaps) < 1.5


def test_429_retry_after_requeues_without_an_error(store: Store, server: HookServer) -> None:
    times: list[float] = []

    def busy_once(body: Obj) -> Any:
        times.append(time.monotonic())
        if len(times) == 1:
            return 429, {"error": "busy"}, {"Retry-After": "1"}
        return {"status": {"phase": "Ready"}, "children": []}

    server.handlers["/sync"] = busy_once
    store.create(widget("w1"))
    with running(store, [composite("cc", server.url)]) as mc:
        mc.wait_for(lambda s: (get(s, "Widget", "w1").get("status") or {}).get("phase") == "Ready", timeout=5)
        assert times[1] - times[0] >= 0.95
        assert [e["outcome"] for e in mc.hook_calls(hook="sync")][:2] == ["retry-after", "ok"]
        assert not [e for e in mc.events if e["outcome"] == "sync-error"]


def test_webhook_timeout_from_yaml(store: Store, server: HookServer) -> None:
    def slow(body: Obj) -> Obj:
        time.sleep(0.5)
        return {"children": []}

    server.handlers["/sync"] = slow
    cc = composite("cc", server.url)
    cc["spec"]["hooks"]["sync"]["webhook"]["timeout"] = "100ms"
    store.create(widget("w1"))
    with running(store, [cc]) as mc:
        mc.wait_for(lambda s: errors(mc))
        assert "Client.Timeout exceeded" in errors(mc)[0]
        assert mc.hook_calls(hook="sync")[0]["seconds"] < 0.45


# ---------------------------------------------------------------- composite


def test_children_left_out_are_deleted(store: Store, server: HookServer) -> None:
    server.handlers["/sync"] = lambda body: {"children": children_of(body, body["parent"]["spec"].get("size", 0))}
    store.create(widget("w1", spec={"size": 3}))
    with running(store, [composite("cc", server.url)]) as mc:
        names = lambda s: sorted(o["metadata"]["name"] for o in s.list("v1", "ConfigMap", "default"))  # noqa: E731
        mc.wait_for(lambda s: names(s) == ["w1-0", "w1-1", "w1-2"])
        child = get(store, "ConfigMap", "w1-0")
        ref = child["metadata"]["ownerReferences"][0]
        assert ref["controller"] is True and ref["blockOwnerDeletion"] is True and ref["kind"] == "Widget"
        assert LAST_APPLIED in child["metadata"]["annotations"]
        parent = get(store, "Widget", "w1")
        parent["spec"]["size"] = 1
        store.update(parent)
        mc.wait_for(lambda s: names(s) == ["w1-0"], message="children beyond size 1 deleted")
        mc.wait_idle()
        assert list(server.calls("/sync")[-1]["children"]["ConfigMap.v1"]) == ["default/w1-0"]


def test_status_replaced_with_observed_generation_and_pruned(store: Store, server: HookServer) -> None:
    replies = {"status": {"phase": "Ready", "debugNotInSchema": "x"}}
    server.handlers["/sync"] = lambda body: {**replies, "children": []}
    store.create(widget("w1"))
    with running(store, [composite("cc", server.url)]) as mc:
        mc.wait_for(lambda s: get(s, "Widget", "w1").get("status") == {"phase": "Ready", "observedGeneration": 1})
        replies["status"] = None
        parent = get(store, "Widget", "w1")
        parent["spec"]["size"] = 2
        store.update(parent)
        mc.wait_for(lambda s: get(s, "Widget", "w1").get("status") == {"observedGeneration": 2},
                    message="null composite status wipes the status but keeps observedGeneration")


def test_desired_child_not_matching_selector_fails_the_sync(store: Store, server: HookServer) -> None:
    server.handlers["/sync"] = lambda body: {"status": {"phase": "Ready"},
                                             "children": children_of(body, 1, labels={"app": "someone-else"})}
    store.create(widget("w1"))
    with running(store, [composite("cc", server.url)]) as mc:
        mc.wait_for(lambda s: [e for e in mc.events if e["outcome"] == "sync-error"])
        error = next(e for e in mc.events if e["outcome"] == "sync-error")["error"]
        assert "labels on desired child ConfigMap default/w1-0 don't match parent selector" in error
        assert store.list("v1", "ConfigMap", "default") == []
        assert "status" not in get(store, "Widget", "w1")


def test_parent_without_selector_is_an_error_unless_generated(store: Store, server: HookServer) -> None:
    server.handlers["/sync"] = lambda body: {"children": children_of(body, 1, labels={"x": "y"})}
    w = widget("w1")
    del w["spec"]["selector"]
    store.create(w)
    with running(store, [composite("cc", server.url)]) as mc:
        mc.wait_for(lambda s: [e for e in mc.events if e["outcome"] == "sync-error"])
        assert ".spec.selector must have either matchLabels" in mc.events[-1]["error"] or any(
            ".spec.selector" in (e["error"] or "") for e in mc.events)
    with running(store, [composite("gen", server.url, generateSelector=True)]) as mc:
        mc.wait_for(lambda s: get(s, "ConfigMap", "w1-0"))
        labels = get(store, "ConfigMap", "w1-0")["metadata"]["labels"]
        assert labels == {"x": "y", "controller-uid": get(store, "Widget", "w1")["metadata"]["uid"]}


def test_orphans_are_adopted_then_deleted_when_not_desired(store: Store, server: HookServer) -> None:
    store.create(configmap("w1-0", labels={"app": "w1"}, data={"pre": "existing"}))
    store.create(configmap("stray", labels={"app": "w1"}))
    store.create(configmap("unrelated", labels={"app": "nobody"}))
    server.handlers["/sync"] = lambda body: {"children": children_of(body, 1)}
    store.create(widget("w1"))
    with running(store, [composite("cc", server.url)]) as mc:
        mc.wait_for(lambda s: get(s, "ConfigMap", "stray") is None, message="adopted orphan not desired → deleted")
        adopted = get(store, "ConfigMap", "w1-0")
        assert adopted["metadata"]["ownerReferences"][0]["uid"] == get(store, "Widget", "w1")["metadata"]["uid"]
        assert adopted["data"] == {"pre": "existing"}  # OnDelete: adopted, never updated
        assert get(store, "ConfigMap", "unrelated")["metadata"].get("ownerReferences") is None


@pytest.mark.parametrize("method", ["InPlace", "Recreate", "OnDelete"])
def test_update_strategies(store: Store, server: HookServer, method: str) -> None:
    server.handlers["/sync"] = lambda body: {"children": children_of(body, 1, v=str(body["parent"]["spec"]["size"]))}
    store.create(widget("w1", spec={"size": 1}))
    with running(store, [composite("cc", server.url, method=method)]) as mc:
        mc.wait_for(lambda s: get(s, "ConfigMap", "w1-0"))
        first_uid = get(store, "ConfigMap", "w1-0")["metadata"]["uid"]
        parent = get(store, "Widget", "w1")
        parent["spec"]["size"] = 2
        store.update(parent)
        if method == "OnDelete":
            mc.wait_for(lambda s: len(server.calls("/sync")) >= 2)
            mc.wait_idle()
            assert get(store, "ConfigMap", "w1-0")["data"]["v"] == "1"
            return
        mc.wait_for(lambda s: ((get(s, "ConfigMap", "w1-0") or {}).get("data") or {}).get("v") == "2")
        same_object = get(store, "ConfigMap", "w1-0")["metadata"]["uid"] == first_uid
        assert same_object is (method == "InPlace")


def test_children_are_garbage_collected_with_the_parent(store: Store, server: HookServer) -> None:
    server.handlers["/sync"] = lambda body: {"children": children_of(body, 2)}
    store.create(widget("w1"))
    with running(store, [composite("cc", server.url)]) as mc:
        mc.wait_for(lambda s: len(s.list("v1", "ConfigMap", "default")) == 2)
        store.delete(API, "Widget", "w1", "default")
        mc.wait_for(lambda s: s.list("v1", "ConfigMap", "default") == [])


def test_parent_kept_until_finalize_answers_finalized(store: Store, server: HookServer) -> None:
    done = threading.Event()
    server.handlers["/sync"] = lambda body: {"children": children_of(body, 1)}
    server.handlers["/finalize"] = lambda body: {"children": [], "finalized": done.is_set() and not body["children"][
        "ConfigMap.v1"]}
    store.create(widget("w1"))
    with running(store, [composite("cc", server.url, finalize=True)]) as mc:
        mc.wait_for(lambda s: get(s, "ConfigMap", "w1-0"))
        first_sync = server.calls("/sync")[0]
        assert first_sync["parent"]["metadata"]["finalizers"] == ["metacontroller.io/compositecontroller-cc"]
        store.delete(API, "Widget", "w1", "default")
        mc.wait_for(lambda s: server.calls("/finalize") and get(s, "ConfigMap", "w1-0") is None,
                    message="finalize called; children it left out deleted")
        assert server.calls("/finalize")[0]["finalizing"] is True
        mc.wait_idle()
        assert get(store, "Widget", "w1")["metadata"]["deletionTimestamp"]
        done.set()
        parent = get(store, "Widget", "w1")
        parent["metadata"]["labels"]["poke"] = "1"  # any event makes it sync again
        store.update(parent)
        mc.wait_for(lambda s: get(s, "Widget", "w1") is None, message="finalized: true removes the finalizer")


def test_parent_that_stops_matching_is_finalized_and_released(store: Store, server: HookServer) -> None:
    server.handlers["/sync"] = lambda body: {"children": []}
    server.handlers["/finalize"] = lambda body: {"children": [], "finalized": True}
    store.create(widget("w1", labels={"app": "w1", "managed": "yes"}))
    cc = composite("cc", server.url, finalize=True)
    cc["spec"]["parentResource"]["labelSelector"] = {"matchLabels": {"managed": "yes"}}
    with running(store, [cc]) as mc:
        mc.wait_for(lambda s: get(s, "Widget", "w1")["metadata"].get("finalizers"))
        parent = get(store, "Widget", "w1")
        parent["metadata"]["labels"]["managed"] = "no"
        store.update(parent)
        mc.wait_for(lambda s: not get(s, "Widget", "w1")["metadata"].get("finalizers"))
        assert server.calls("/finalize")[-1]["finalizing"] is True


def test_resync_after_seconds(store: Store, server: HookServer) -> None:
    server.handlers["/sync"] = lambda body: {"children": [], "resyncAfterSeconds": 0.05}
    store.create(widget("w1"))
    with running(store, [composite("cc", server.url)]) as mc:
        mc.wait_for(lambda s: len(server.calls("/sync")) >= 4, message="resynced without any change")


def test_resync_period_seconds(store: Store, server: HookServer) -> None:
    server.handlers["/sync"] = lambda body: {"children": []}
    store.create(widget("w1"))
    with running(store, [composite("cc", server.url, resyncPeriodSeconds=1)], min_resync_period=0.05) as mc:
        mc.wait_for(lambda s: len(server.calls("/sync")) >= 3, message="periodic resync")


def test_calls_are_serial_per_parent_and_concurrent_across_parents(store: Store, server: HookServer) -> None:
    lock = threading.Lock()
    in_flight: dict[str, int] = {}
    peaks = {"per_parent": 0, "overall": 0}

    def slow(body: Obj) -> Obj:
        name = body["parent"]["metadata"]["name"]
        with lock:
            in_flight[name] = in_flight.get(name, 0) + 1
            peaks["per_parent"] = max(peaks["per_parent"], in_flight[name])
            peaks["overall"] = max(peaks["overall"], sum(in_flight.values()))
        time.sleep(0.05)
        with lock:
            in_flight[name] -= 1
        return {"children": [], "status": {"count": int(body["parent"]["metadata"]["labels"].get("n", "0"))}}

    server.handlers["/sync"] = slow
    for i in range(3):
        store.create(widget(f"w{i}"))
    with running(store, [composite("cc", server.url)]) as mc:
        for n in range(1, 6):
            for i in range(3):
                parent = get(store, "Widget", f"w{i}")
                parent["metadata"]["labels"]["n"] = str(n)
                store.update(parent)
        mc.wait_for(lambda s: all((get(s, "Widget", f"w{i}").get("status") or {}).get("count") == 5
                                  for i in range(3)))
    assert peaks["per_parent"] == 1
    assert peaks["overall"] >= 2


def test_parent_without_status_subresource_is_ignored(server: HookServer) -> None:
    s = Store()
    s.register_crd(widget_crd(status_subresource=False))
    s.create(widget("w1"))
    server.handlers["/sync"] = lambda body: {"children": []}
    with running(s, [composite("cc", server.url)]) as mc:
        assert any(e["outcome"] == "ignored" and "subresource 'Status'" in e["error"] for e in mc.events)
        mc.wait_idle()
        assert server.calls("/sync") == []


# ---------------------------------------------------------------- decorator


def test_decorator_label_and_annotation_merge_with_null_delete(store: Store, server: HookServer) -> None:
    server.handlers["/sync"] = lambda body: {"labels": {"added": "1", "drop": None},
                                             "annotations": {"note": "hello", "gone": None}}
    w = widget("w1", labels={"app": "w1", "drop": "me"})
    w["metadata"]["annotations"] = {"gone": "x", "kept": "y"}
    store.create(w)
    with running(store, [decorator("dc", server.url)]) as mc:
        mc.wait_for(lambda s: get(s, "Widget", "w1")["metadata"]["labels"] == {"app": "w1", "added": "1"})
        assert get(store, "Widget", "w1")["metadata"]["annotations"] == {"kept": "y", "note": "hello"}
        mc.wait_idle()
        assert len(server.calls("/sync")) == 2  # the emulator's own label write triggers one more sync, no loop


def test_decorator_status_null_means_unchanged(store: Store, server: HookServer) -> None:
    reply: dict[str, Any] = {"status": None, "labels": {"seen": "1"}}
    server.handlers["/sync"] = lambda body: reply
    obj = store.create(widget("w1"))
    store.update_status(dict(obj, status={"phase": "Manual", "count": 7}))
    with running(store, [decorator("dc", server.url)]) as mc:
        mc.wait_for(lambda s: get(s, "Widget", "w1")["metadata"]["labels"].get("seen") == "1")
        assert get(store, "Widget", "w1")["status"] == {"phase": "Manual", "count": 7}
        reply.update(status={"phase": "Hooked"}, labels={"seen": "2"})
        mc.wait_for(lambda s: get(s, "Widget", "w1")["metadata"]["labels"].get("seen") == "2")
        assert get(store, "Widget", "w1")["status"] == {"phase": "Hooked"}  # replaced whole, no observedGeneration


def test_decorator_attachments_are_annotated_owned_and_observed(store: Store, server: HookServer) -> None:
    server.handlers["/sync"] = lambda body: {"attachments": [configmap("w1-info", namespace="", data={"a": "b"})]}
    store.create(widget("w1"))
    store.create(configmap("foreign"))
    with running(store, [decorator("dc", server.url)]) as mc:
        mc.wait_for(lambda s: get(s, "ConfigMap", "w1-info"))
        info = get(store, "ConfigMap", "w1-info")
        assert info["metadata"]["annotations"][DECORATOR_ANNOTATION] == "dc"
        assert info["metadata"]["ownerReferences"][0]["uid"] == get(store, "Widget", "w1")["metadata"]["uid"]
        mc.wait_for(lambda s: any(c["attachments"]["ConfigMap.v1"] for c in server.calls("/sync")))
        observed = next(c for c in server.calls("/sync") if c["attachments"]["ConfigMap.v1"])
        assert list(observed["attachments"]["ConfigMap.v1"]) == ["default/w1-info"]


def test_decorator_selectors_and_conflicts_dropped_silently(store: Store, server: HookServer) -> None:
    server.handlers["/sync"] = lambda body: {"status": {"phase": "Decorated"}}
    store.create(widget("w1", labels={"app": "w1", "pick": "me"}))
    store.create(widget("w2"))
    resource = {"apiVersion": API, "resource": "widgets", "labelSelector": {"matchLabels": {"pick": "me"}}}
    with running(store, [decorator("dc", server.url, resource=resource)], conflict_rate=1.0) as mc:
        mc.wait_for(lambda s: len([e for e in mc.events if e["outcome"] == "conflict-dropped"]) >= 3,
                    message="each conflict dropped; the concurrent writer's event brings the next sync")
        assert {c["object"]["metadata"]["name"] for c in server.calls("/sync")} == {"w1"}
        assert "status" not in get(store, "Widget", "w1")
        assert not [e for e in mc.events if e["outcome"] == "sync-error"]
        dropped = len([e for e in mc.events if e["outcome"] == "conflict-dropped"])
        assert mc.injected_conflicts >= dropped >= 3  # every injected conflict is counted for fault reports
        mc.conflict_rate = 0.0
        mc.wait_for(lambda s: (get(s, "Widget", "w1").get("status") or {}).get("phase") == "Decorated")
        mc.wait_idle()


def test_decorator_finalizer_and_finalize(store: Store, server: HookServer) -> None:
    server.handlers["/sync"] = lambda body: {"labels": {"synced": "yes"}}
    server.handlers["/finalize"] = lambda body: {"finalized": True}
    store.create(widget("w1"))
    with running(store, [decorator("dc", server.url, finalize=True)]) as mc:
        mc.wait_for(lambda s: get(s, "Widget", "w1")["metadata"]["labels"].get("synced"))
        assert get(store, "Widget", "w1")["metadata"]["finalizers"] == ["metacontroller.io/decoratorcontroller-dc"]
        store.delete(API, "Widget", "w1", "default")
        mc.wait_for(lambda s: get(s, "Widget", "w1") is None)
        assert server.calls("/finalize")[-1]["finalizing"] is True


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_decorator_requests_say_object_and_attachments_in_both_versions(store: Store, server: HookServer,
                                                                        version: str) -> None:
    """Metacontroller's Go types: v1 and v2 DecoratorHookRequest both carry JSON keys object/attachments."""
    server.handlers["/sync"] = lambda body: {"attachments": [configmap("w1-info", namespace="")]}
    server.handlers["/finalize"] = lambda body: {"finalized": True}
    server.handlers["/customize"] = lambda body: {"relatedResources": []}
    store.create(widget("w1"))
    with running(store, [decorator("dc", server.url, version=version, finalize=True, customize=True)]) as mc:
        mc.wait_for(lambda s: any(c["attachments"]["ConfigMap.v1"] for c in server.calls("/sync")))
        store.delete(API, "Widget", "w1", "default")
        mc.wait_for(lambda s: get(s, "Widget", "w1") is None)
    for call in server.calls("/sync") + server.calls("/finalize"):
        assert set(call) == {"controller", "object", "attachments", "related", "finalizing"}
        assert call["object"]["metadata"]["name"] == "w1"
    observed = next(c for c in server.calls("/sync") if c["attachments"]["ConfigMap.v1"])
    assert list(observed["attachments"]["ConfigMap.v1"]) == ["default/w1-info" if version == "v2" else "w1-info"]
    assert server.calls("/finalize")[-1]["finalizing"] is True
    assert {tuple(sorted(c)) for c in server.calls("/customize")} == {("controller", "parent")}  # same in v1 and v2


# ---------------------------------------------------------------- customize and related


def _customize_handler(rules: list[Obj]) -> Any:
    return lambda body: {"relatedResources": rules}


def test_customize_is_cached_per_uid_and_generation(store: Store, server: HookServer) -> None:
    server.handlers["/customize"] = _customize_handler([])
    server.handlers["/sync"] = lambda body: {"labels": {"gen": str(body["object"]["metadata"]["generation"])}}
    store.create(widget("w1"))
    with running(store, [decorator("dc", server.url, customize=True)]) as mc:
        mc.wait_for(lambda s: get(s, "Widget", "w1")["metadata"]["labels"].get("gen") == "1")
        parent = get(store, "Widget", "w1")
        parent["metadata"]["labels"]["touched"] = "yes"
        store.update(parent)
        mc.wait_for(lambda s: any(c["object"]["metadata"]["labels"].get("touched") for c in server.calls("/sync")))
        assert len(server.calls("/customize")) == 1
        parent = get(store, "Widget", "w1")
        parent["spec"]["size"] = 5
        store.update(parent)
        mc.wait_for(lambda s: get(s, "Widget", "w1")["metadata"]["labels"].get("gen") == "2")
        assert len(server.calls("/customize")) == 2
        assert server.calls("/customize")[0]["parent"]["metadata"]["name"] == "w1"
        mc.restart()
        mc.wait_for(lambda s: len(server.calls("/customize")) == 3, message="restart drops the customize cache")


RELATED_RULES = [
    {"apiVersion": "v1", "resource": "configmaps", "labelSelector": {"matchLabels": {"rel": "yes"}}},
    {"apiVersion": "v1", "resource": "namespaces", "names": ["other"]},
]


def _related_setup(store: Store) -> None:
    store.create(configmap("a", labels={"rel": "yes"}))
    store.create(configmap("b", "other", labels={"rel": "yes"}))
    store.create(configmap("c", labels={"rel": "no"}))
    store.create(widget("w1"))


def test_v2_keys_and_no_filtering(store: Store, server: HookServer) -> None:
    _related_setup(store)
    server.handlers["/customize"] = _customize_handler(RELATED_RULES)
    server.handlers["/sync"] = lambda body: {}
    with running(store, [decorator("dc", server.url, customize=True)]) as mc:
        mc.wait_for(lambda s: server.calls("/sync"))
        related = server.calls("/sync")[0]["related"]
        assert sorted(related) == ["ConfigMap.v1", "Namespace.v1"]
        assert sorted(related["ConfigMap.v1"]) == ["default/a", "other/b"]
        assert list(related["Namespace.v1"]) == ["other"]
        assert server.calls("/sync")[0]["attachments"] == {"ConfigMap.v1": {}}


def test_v1_sync_keys_relative_names_and_drops_foreign_objects(store: Store, server: HookServer) -> None:
    _related_setup(store)
    server.handlers["/customize"] = _customize_handler(RELATED_RULES)
    server.handlers["/sync"] = lambda body: {}
    dc = decorator("dc", server.url, customize=True)
    dc["spec"]["hooks"]["sync"]["version"] = "v1"  # customize stays v2: selection is cluster-wide
    with running(store, [dc]) as mc:
        mc.wait_for(lambda s: server.calls("/sync"))
        related = server.calls("/sync")[0]["related"]
        assert related == {"ConfigMap.v1": {"a": related["ConfigMap.v1"]["a"]}, "Namespace.v1": {}}


def test_related_change_triggers_a_sync(store: Store, server: HookServer) -> None:
    _related_setup(store)
    server.handlers["/customize"] = _customize_handler(RELATED_RULES)
    server.handlers["/sync"] = lambda body: {}
    with running(store, [decorator("dc", server.url, customize=True)]) as mc:
        mc.wait_for(lambda s: server.calls("/sync"))
        mc.wait_idle()
        before = len(server.calls("/sync"))
        store.create(configmap("d", labels={"rel": "yes"}))
        mc.wait_for(lambda s: len(server.calls("/sync")) > before
                    and "default/d" in server.calls("/sync")[-1]["related"]["ConfigMap.v1"])


@pytest.mark.parametrize(("rule", "message"), [
    ({"apiVersion": "v1", "resource": "configmaps", "names": ["a"], "labelSelector": {}},
     "cannot have both names and labelSelector/namespaceSelector"),
    ({"apiVersion": "v1", "resource": "configmaps", "namespace": "x", "namespaceSelector": {"matchLabels": {}}},
     "cannot have both namespace and namespaceSelector"),
    ({"apiVersion": "v1", "resource": "configmaps", "namespace": "other"},
     "requested related object namespace other differs from parent object namespace default"),
])
def test_invalid_related_rules_fail_the_sync(store: Store, server: HookServer, rule: Obj, message: str) -> None:
    store.create(widget("w1"))
    server.handlers["/customize"] = _customize_handler([rule])
    server.handlers["/sync"] = lambda body: {}
    with running(store, [decorator("dc", server.url, customize=True, version="v1")]) as mc:
        mc.wait_for(lambda s: any(message in e["error"] for e in mc.events if e["outcome"] == "sync-error"))
        assert server.calls("/sync") == []


def test_first_sync_with_a_new_related_kind_waits_for_its_informer(store: Store, server: HookServer) -> None:
    _related_setup(store)
    server.handlers["/customize"] = _customize_handler(RELATED_RULES)
    server.handlers["/sync"] = lambda body: {}
    with running(store, [decorator("dc", server.url, customize=True)]) as mc:
        mc.wait_for(lambda s: server.calls("/sync"))
        errors_seen = [e["error"] for e in mc.events if e["outcome"] == "sync-error"]
        assert errors_seen == ["Sync error: related informer not synced yet"] * 2  # ConfigMaps, then Namespaces
        mc.restart()
        mc.wait_for(lambda s: len([e for e in mc.events if e["outcome"] == "sync-error"]) == 4)


def test_namespace_selector_in_v2(store: Store, server: HookServer) -> None:
    _related_setup(store)
    server.handlers["/customize"] = _customize_handler(
        [{"apiVersion": "v1", "resource": "configmaps", "namespaceSelector": {"matchLabels": {"team": "a"}}}])
    server.handlers["/sync"] = lambda body: {}
    with running(store, [decorator("dc", server.url, customize=True)]) as mc:
        mc.wait_for(lambda s: server.calls("/sync"))
        assert list(server.calls("/sync")[0]["related"]["ConfigMap.v1"]) == ["other/b"]


# ---------------------------------------------------------------- wiring


def test_service_url_mapping_and_bearer_authorization(store: Store, server: HookServer) -> None:
    store.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hook-auth", "namespace": "default"},
                  "data": {"token": base64.b64encode(b"s3cret\n").decode()}})
    server.handlers["/hooks/sync"] = lambda body: {"labels": {"ok": "yes"}}
    dc = decorator("dc", server.url)
    dc["spec"]["hooks"]["sync"] = {"version": "v2", "webhook": {
        "service": {"name": "hooks", "namespace": "hooks-ns", "port": 80}, "path": "/hooks/sync",
        "authorization": {"secretRef": {"name": "hook-auth", "namespace": "default", "key": "token"}}}}
    store.create(widget("w1"))
    with running(store, [dc], service_urls={"hooks.hooks-ns": server.url}) as mc:
        mc.wait_for(lambda s: get(s, "Widget", "w1")["metadata"]["labels"].get("ok") == "yes")
        assert server.headers("/hooks/sync")[0]["Authorization"] == "Bearer s3cret"


def test_load_controllers_reads_only_controller_kinds(tmp_path: Path) -> None:
    (tmp_path / "all.yaml").write_text(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: x}\n---\n"
        "apiVersion: metacontroller.k8s.io/v1alpha1\nkind: DecoratorController\nmetadata: {name: d}\n"
        "spec: {resources: [{apiVersion: v1, resource: configmaps}]}\n"
    )
    assert [c["metadata"]["name"] for c in load_controllers(tmp_path)] == ["d"]
    ours = load_controllers(REPO / "metacontroller")
    assert all(c["kind"] in ("CompositeController", "DecoratorController") for c in ours)



def test_load_controllers_prunes_what_the_api_server_would(tmp_path: Path) -> None:
    crds = REPO.parent / "shared" / "reference" / "metacontroller" / "metacontroller-crds-v1.yaml"
    if not crds.exists():
        pytest.skip("Metacontroller reference CRDs not available")
    (tmp_path / "dc.yaml").write_text(
        "apiVersion: metacontroller.k8s.io/v1alpha1\nkind: DecoratorController\nmetadata: {name: d}\n"
        "spec:\n  resources: [{apiVersion: v1, resource: configmaps}]\n  resyncPeriodSecond: 5\n"
        "  hooks: {sync: {version: v2, webhook: {url: 'http://x/sync', timout: 1s}}}\n"
    )
    (controller,) = load_controllers(tmp_path, crds=crds)
    assert "resyncPeriodSecond" not in controller["spec"]  # the typo is silently dropped, as kubectl apply would
    assert controller["spec"]["hooks"]["sync"]["webhook"] == {"url": "http://x/sync"}


def test_ignore_status_changes(store: Store, server: HookServer) -> None:
    server.handlers["/sync"] = lambda body: {}
    resource = {"apiVersion": API, "resource": "widgets", "ignoreStatusChanges": True}
    obj = store.create(widget("w1"))
    with running(store, [decorator("dc", server.url, resource=resource)]) as mc:
        mc.wait_for(lambda s: server.calls("/sync"))
        mc.wait_idle()
        store.update_status(dict(obj, status={"phase": "Changed elsewhere"}))
        mc.wait_idle()
        assert len(server.calls("/sync")) == 1
        parent = get(store, "Widget", "w1")
        parent["metadata"]["labels"]["x"] = "y"
        store.update(parent)
        mc.wait_for(lambda s: len(server.calls("/sync")) == 2)


def test_customize_cache_expires_after_its_ttl(store: Store, server: HookServer) -> None:
    server.handlers["/customize"] = _customize_handler([])
    server.handlers["/sync"] = lambda body: {}
    store.create(widget("w1"))
    with running(store, [decorator("dc", server.url, customize=True)], customize_ttl=0.0) as mc:
        mc.wait_for(lambda s: server.calls("/sync"))
        parent = get(store, "Widget", "w1")
        parent["metadata"]["labels"]["x"] = "y"
        store.update(parent)
        mc.wait_for(lambda s: len(server.calls("/customize")) >= 2, message="expired entry re-fetched")


def test_composite_status_conflicts_are_retried_with_a_live_read(store: Store, server: HookServer) -> None:
    server.handlers["/sync"] = lambda body: {"status": {"phase": "Ready"}, "children": []}
    store.create(widget("w1"))
    store.create(widget("w2"))
    with running(store, [composite("cc", server.url)], conflict_rate=0.5, seed=3) as mc:
        mc.wait_for(lambda s: all((get(s, "Widget", n).get("status") or {}).get("phase") == "Ready"
                                  for n in ("w1", "w2")))
        assert not [e for e in mc.events if e["outcome"] == "sync-error"]


def test_decorator_without_sync_hook_errors_on_every_normal_sync(store: Store, server: HookServer) -> None:
    dc = decorator("dc", server.url, finalize=True)
    del dc["spec"]["hooks"]["sync"]
    server.handlers["/finalize"] = lambda body: {"finalized": True}
    store.create(widget("w1"))
    with running(store, [dc]) as mc:
        mc.wait_for(lambda s: any(e["error"] == "Sync error: no enabled hooks found" for e in mc.events
                                  if e["outcome"] == "sync-error"))


def test_finalized_decorator_hands_leftover_attachments_to_gc(store: Store, server: HookServer) -> None:
    server.handlers["/sync"] = lambda body: {"attachments": [configmap("w1-info", namespace="")]}
    server.handlers["/finalize"] = lambda body: {"attachments": [configmap("w1-info", namespace="")],
                                                 "finalized": True}
    store.create(widget("w1"))
    with running(store, [decorator("dc", server.url, finalize=True)]) as mc:
        mc.wait_for(lambda s: get(s, "ConfigMap", "w1-info"))
        store.delete(API, "Widget", "w1", "default")
        mc.wait_for(lambda s: get(s, "Widget", "w1") is None and get(s, "ConfigMap", "w1-info") is None)


def test_cluster_scoped_parent_keys_namespaced_objects_by_namespace_in_v1(store: Store, server: HookServer) -> None:
    server.handlers["/sync"] = lambda body: {"attachments": [
        configmap(f"{body['object']['metadata']['name']}-marker", namespace="default")]}
    dc = decorator("dc", server.url, version="v1", resource={"apiVersion": "v1", "resource": "namespaces",
                                                             "labelSelector": {"matchLabels": {"team": "a"}}})
    with running(store, [dc]) as mc:
        mc.wait_for(lambda s: get(s, "ConfigMap", "other-marker"))
        mc.wait_for(lambda s: any(c["attachments"]["ConfigMap.v1"] for c in server.calls("/sync")))
        observed = next(c for c in server.calls("/sync") if c["attachments"]["ConfigMap.v1"])
        assert list(observed["attachments"]["ConfigMap.v1"]) == ["default/other-marker"]


def test_rotated_hook_credentials_need_a_restart(store: Store, server: HookServer) -> None:
    def secret(token: bytes) -> Obj:
        return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hook-auth", "namespace": "default"},
                "data": {"token": base64.b64encode(token).decode()}}

    store.create(secret(b"first"))
    server.handlers["/sync"] = lambda body: {}
    dc = decorator("dc", server.url)
    dc["spec"]["hooks"]["sync"]["webhook"]["authorization"] = {
        "type": "Bearer", "secretRef": {"name": "hook-auth", "namespace": "default", "key": "token"}}
    store.create(widget("w1"))
    with running(store, [dc]) as mc:
        mc.wait_for(lambda s: server.headers("/sync"))
        store.apply(secret(b"second"))
        parent = get(store, "Widget", "w1")
        parent["metadata"]["labels"]["x"] = "y"
        store.update(parent)
        mc.wait_for(lambda s: len(server.headers("/sync")) >= 2)
        assert {h["Authorization"] for h in server.headers("/sync")} == {"Bearer first"}
        mc.restart()
        mc.wait_for(lambda s: server.headers("/sync")[-1]["Authorization"] == "Bearer second")


def test_etag_304_reuses_the_cached_answer(store: Store, server: HookServer) -> None:
    def sync(body: Obj) -> Any:
        headers = server.headers("/sync")[-1]
        if headers.get("If-None-Match") == '"a1"':
            return 304, ""
        return 200, {"labels": {"answered": "yes"}}, {"ETag": '"a1"'}

    server.handlers["/sync"] = sync
    dc = decorator("dc", server.url)
    dc["spec"]["hooks"]["sync"]["webhook"]["etag"] = {"enabled": True}
    store.create(widget("w1"))
    with running(store, [dc]) as mc:
        mc.wait_for(lambda s: get(s, "Widget", "w1")["metadata"]["labels"].get("answered") == "yes")
        parent = get(store, "Widget", "w1")
        parent["metadata"]["labels"]["answered"] = "tampered"
        store.update(parent)
        mc.wait_for(lambda s: get(s, "Widget", "w1")["metadata"]["labels"].get("answered") == "yes",
                    message="the cached body applied again after a 304")
        assert [h.get("If-None-Match") for h in server.headers("/sync")][-1] == '"a1"'
        assert errors(mc) == []


def test_etag_timeout_without_cleanup_stops_the_controller(store: Store, server: HookServer) -> None:
    dc = decorator("dc", server.url)
    dc["spec"]["hooks"]["sync"]["webhook"]["etag"] = {"enabled": True, "cacheTimeoutSeconds": 60}
    store.create(widget("w1"))
    with running(store, [dc]) as mc:
        assert any(e["outcome"] == "ignored" and "nil pointer" in e["error"] for e in mc.events)
        mc.wait_idle()
        assert server.calls("/sync") == []


def test_cache_flush_interval_resyncs_every_parent(store: Store, server: HookServer) -> None:
    server.handlers["/sync"] = lambda body: {}
    store.create(widget("w1"))
    store.create(widget("w2"))
    with running(store, [decorator("dc", server.url)], cache_flush_interval=0.05) as mc:
        mc.wait_for(lambda s: all(len([c for c in server.calls("/sync") if c["object"]["metadata"]["name"] == n]) >= 3
                                  for n in ("w1", "w2")), message="periodic informer resync")


def test_endpoint_configs_and_basic_auth(store: Store, server: HookServer) -> None:
    store.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "basic", "namespace": "default"},
                  "stringData": {"username": "mc", "password": "pw"}})
    server.handlers["/sync"] = lambda body: {}
    dc = decorator("dc", server.url)
    dc["spec"]["hooks"]["sync"] = {"version": "v2", "webhook": {
        "service": {"name": "hooks", "namespace": "hooks-ns"}, "path": "/sync"}}
    dc["spec"]["endpointConfigs"] = [{"host": "hooks.hooks-ns", "basicAuth": {
        "secretRef": {"name": "basic", "namespace": "default"}}}]
    store.create(widget("w1"))
    with running(store, [dc], service_urls={"hooks.hooks-ns:80": server.url}) as mc:
        mc.wait_for(lambda s: server.headers("/sync"))
        assert server.headers("/sync")[0]["Authorization"] == "Basic " + base64.b64encode(b"mc:pw").decode()


@pytest.mark.parametrize("build", [composite, decorator])
def test_finalize_is_called_again_while_another_finalizer_holds_the_parent(
    store: Store, server: HookServer, build: Any
) -> None:
    server.handlers["/sync"] = lambda body: {}
    server.handlers["/finalize"] = lambda body: {"finalized": True}
    w = widget("w1")
    w["metadata"]["finalizers"] = ["example.com/hold"]
    store.create(w)
    with running(store, [build("ctl", server.url, finalize=True)]) as mc:
        mc.wait_for(lambda s: len(get(s, "Widget", "w1")["metadata"]["finalizers"]) == 2)
        store.delete(API, "Widget", "w1", "default")
        mc.wait_for(lambda s: get(s, "Widget", "w1")["metadata"]["finalizers"] == ["example.com/hold"])
        calls = len(server.calls("/finalize"))
        parent = get(store, "Widget", "w1")
        parent["metadata"]["labels"]["poke"] = "1"
        store.update(parent)
        mc.wait_for(lambda s: len(server.calls("/finalize")) > calls, message="finalize called again")
        assert server.calls("/sync") and all(c["finalizing"] for c in server.calls("/finalize"))
