"""The emulator's hook requests have exactly the keys and map layout of Metacontroller v4.17.2's request types.

The types are data in tests/metacontroller_types.py, written from Metacontroller's Go source. Every request the
emulator sends in these runs (customize, sync, finalize; composite and decorator; hook versions v1 and v2;
namespaced and cluster-scoped parents) is checked against them, so an emulator that sent `parent` where
Metacontroller sends `object`, or keyed a v2 map by bare names, fails here.
"""

from __future__ import annotations

from typing import Any

import pytest

from emulator.store import Store
from tests import metacontroller_types as mt
from tests.emulator_support import (
    API,
    HookServer,
    composite,
    configmap,
    decorator,
    get,
    running,
    widget,
    widget_store,
)

Obj = dict[str, Any]

RELATED_RULES = [
    {"apiVersion": "v1", "resource": "configmaps", "labelSelector": {"matchLabels": {"rel": "yes"}}},
    {"apiVersion": "v1", "resource": "namespaces", "names": ["other"]},
]


@pytest.fixture
def store() -> Store:
    return widget_store(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other", "labels": {"team": "a"}}},
        configmap("a", labels={"rel": "yes"}), configmap("b", "other", labels={"rel": "yes"}),
        configmap("c", labels={"rel": "no"}))


def layout_problems(call: Obj, kind: str, version: str, store: Store) -> list[str]:
    """Every way `call`'s maps differ from what Metacontroller would send for the same cluster state."""
    problems: list[str] = []
    parent_ns = call[mt.ROOT_KEY[kind]]["metadata"].get("namespace", "")
    for field in mt.MAP_KEYS[kind]:
        for outer, inner in call[field].items():
            if not mt.OUTER_KEY.match(outer):
                problems.append(f"{field}: outer key {outer!r} is not Kind.group/version")
            for key, obj in inner.items():
                meta = obj["metadata"]
                if outer != mt.outer_key(obj["apiVersion"], obj["kind"]):
                    problems.append(f"{field}: {obj['kind']} {meta['name']} under {outer!r}")
                want = mt.inner_key(version, parent_ns, meta.get("namespace", ""), meta["name"])
                if key != want:
                    problems.append(f"{field}[{outer}]: key {key!r}, Metacontroller sends {want!r}")
    related = call["related"]
    candidates = [o for o in store.list("v1", "ConfigMap") if (o["metadata"].get("labels") or {}).get("rel") == "yes"]
    if parent_ns and version == "v1":  # a v1 customize hook of a namespaced parent selects in its namespace only
        candidates = [o for o in candidates if o["metadata"]["namespace"] == parent_ns]
    expected = {mt.inner_key(version, parent_ns, o["metadata"]["namespace"], o["metadata"]["name"]) for o in candidates}
    if set(related.get("ConfigMap.v1", {})) != expected - {None}:
        problems.append(f"related ConfigMaps {sorted(related.get('ConfigMap.v1', {}))}, expected {expected - {None}}")
    namespaces = set(related.get("Namespace.v1", {}))
    want_ns = {"other"} if mt.inner_key(version, parent_ns, "", "other") else set()
    if namespaces != want_ns:
        problems.append(f"related Namespaces {sorted(namespaces)}, expected {sorted(want_ns)}")
    return problems


def check(server: HookServer, kind: str, version: str, store: Store) -> None:
    seen = set()
    for hook in ("customize", "sync", "finalize"):
        for call in server.calls(f"/{hook}"):
            seen.add(hook)
            assert set(call) == mt.REQUEST_KEYS[(kind, version, hook)], (hook, sorted(call))
            if hook != "customize":
                assert isinstance(call["finalizing"], bool) and call["finalizing"] == (hook == "finalize")
                assert layout_problems(call, kind, version, store) == []
    assert seen == {"customize", "sync", "finalize"}


@pytest.mark.parametrize("version", mt.VERSIONS)
@pytest.mark.parametrize("kind", [mt.DECORATOR, mt.COMPOSITE])
def test_requests_for_a_namespaced_parent_match_metacontroller(store: Store, server: HookServer, kind: str,
                                                               version: str) -> None:
    server.handlers["/customize"] = lambda body: {"relatedResources": RELATED_RULES}
    child = configmap("w1-0", labels={"app": "w1"})
    if kind == mt.DECORATOR:
        server.handlers["/sync"] = lambda body: {"attachments": [child]}
        controller = decorator("c", server.url, version=version, customize=True, finalize=True)
        field = "attachments"
    else:
        server.handlers["/sync"] = lambda body: {"children": [child]}
        controller = composite("c", server.url, version=version, customize=True, finalize=True)
        field = "children"
    server.handlers["/finalize"] = lambda body: {"finalized": True}
    store.create(widget("w1"))
    with running(store, [controller]) as mc:
        mc.wait_for(lambda s: any(c[field]["ConfigMap.v1"] for c in server.calls("/sync")), message="child observed")
        store.delete(API, "Widget", "w1", "default")
        mc.wait_for(lambda s: get(s, "Widget", "w1") is None, message="finalized")
    check(server, kind, version, store)
    observed = next(c for c in server.calls("/sync") if c[field]["ConfigMap.v1"])
    assert list(observed[field]["ConfigMap.v1"]) == ["default/w1-0" if version == "v2" else "w1-0"]


@pytest.mark.parametrize("version", mt.VERSIONS)
def test_requests_for_a_cluster_scoped_parent_match_metacontroller(store: Store, server: HookServer,
                                                                   version: str) -> None:
    server.handlers["/customize"] = lambda body: {"relatedResources": RELATED_RULES}
    server.handlers["/sync"] = lambda body: {"attachments": [configmap("other-marker")]}
    server.handlers["/finalize"] = lambda body: {"finalized": True}
    resource = {"apiVersion": "v1", "resource": "namespaces", "labelSelector": {"matchLabels": {"team": "a"}}}
    controller = decorator("c", server.url, version=version, customize=True, finalize=True, resource=resource)
    with running(store, [controller]) as mc:
        mc.wait_for(lambda s: any(c["attachments"]["ConfigMap.v1"] for c in server.calls("/sync")))
        namespace = store.get("v1", "Namespace", "other")
        namespace["metadata"]["labels"] = {}  # stops matching: Metacontroller finalizes it
        store.update(namespace)
        mc.wait_for(lambda s: server.calls("/finalize") and not (
            s.get("v1", "Namespace", "other")["metadata"].get("finalizers")), message="finalized")
    check(server, mt.DECORATOR, version, store)
    observed = next(c for c in server.calls("/sync") if c["attachments"]["ConfigMap.v1"])
    assert list(observed["attachments"]["ConfigMap.v1"]) == ["default/other-marker"]


def test_the_layout_check_catches_a_wrong_shape(store: Store) -> None:
    """The checker itself: a v2 map keyed by bare names, or a v1 map keeping another namespace's object, fails."""
    parent = widget("w1")
    good = {"controller": {}, "object": parent, "attachments": {}, "finalizing": False,
            "related": {"ConfigMap.v1": {"default/a": store.get("v1", "ConfigMap", "a", "default"),
                                         "other/b": store.get("v1", "ConfigMap", "b", "other")},
                        "Namespace.v1": {"other": store.get("v1", "Namespace", "other")}}}
    assert layout_problems(good, mt.DECORATOR, "v2", store) == []
    bare = {**good, "related": {**good["related"], "ConfigMap.v1": {"a": good["related"]["ConfigMap.v1"]["default/a"],
                                                                    "b": good["related"]["ConfigMap.v1"]["other/b"]}}}
    assert layout_problems(bare, mt.DECORATOR, "v2", store)
    assert layout_problems(good, mt.DECORATOR, "v1", store)  # v1 keeps neither other/b nor the Namespace
