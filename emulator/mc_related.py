"""Customize hook and related-object selection, and the request maps (v1 relative, v2 ns/name)."""

from __future__ import annotations

import time
from collections.abc import Callable

from emulator import selectors
from emulator.mc_common import (
    Obj,
    SyncError,
    gvk_key,
    meta_of,
)
from emulator.mc_core import RuntimeCore
from emulator.store import NotFound, ResourceType


class RelatedMixin(RuntimeCore):
    """customize calls (cached per uid and generation) and the related objects a parent's rules select."""

    def related_rules(self, parent: Obj) -> list[Obj]:
        hook = self.hooks["customize"]
        if hook is None:
            return []
        meta = meta_of(parent)
        cache_key = (meta["uid"], int(meta.get("generation", 0)))
        now = time.monotonic()
        with self._customize_lock:
            cached = self._customize_cache.get(cache_key)
            if cached and now - cached[0] < self.mc.customize_ttl:
                return cached[1]
        body = {"controller": self.controller_object(), "parent": parent}
        response = self.call(hook, body, "customize", self.key_of(parent))
        rules = response.get("relatedResources") or []
        with self._customize_lock:
            self._customize_cache[cache_key] = (now, rules)
            for rule in rules:
                try:
                    rt = self.store.resource_for(rule.get("apiVersion", ""), resource=rule.get("resource"))
                except NotFound:
                    continue
                self._related_kinds.add((rt.group, rt.kind))
        return rules

    def _related_match(self, rule: Obj, parent: Obj, obj: Obj) -> bool:
        """matchesRelatedRule: does a changed object concern this parent (exact apiVersion and kind)?"""
        rt = self.store.resource_for(rule.get("apiVersion", ""), resource=rule.get("resource"))
        if obj.get("apiVersion") != rule.get("apiVersion") or obj.get("kind") != rt.kind:
            return False
        return self._selection(rule, parent, rt, for_event=True)(obj)

    def _selection(self, rule: Obj, parent: Obj, rt: ResourceType, *, for_event: bool = False) -> Callable[[Obj], bool]:
        """The predicate of one related rule (listing, or event matching); SyncError for refused combinations.

        Follows the v4.15+ customize manager: the customize hook's version decides whether a namespaced parent
        may look outside its namespace.
        """
        version = self.hooks["customize"].version if self.hooks["customize"] else "v1"
        parent_ns = meta_of(parent).get("namespace", "")
        v1_namespaced = version == "v1" and bool(parent_ns)
        has_labels = rule.get("labelSelector") is not None
        has_ns_selector = rule.get("namespaceSelector") is not None
        namespace = rule.get("namespace") or ""
        names = rule.get("names") or []
        label_selector = rule.get("labelSelector")
        if names and (has_labels or has_ns_selector):
            raise SyncError(
                f"related rule cannot have both names and labelSelector/namespaceSelector specified: {rule}"
            )
        if namespace and has_ns_selector:
            raise SyncError(f"related rule cannot have both namespace and namespaceSelector specified: {rule}")

        def labels_ok(obj: Obj) -> bool:
            return selectors.matches(label_selector, meta_of(obj).get("labels"))

        if has_ns_selector:
            ns_selector = rule["namespaceSelector"]

            def by_namespace_selector(obj: Obj) -> bool:
                if not labels_ok(obj):
                    return False
                ns = meta_of(obj).get("namespace")
                if not ns:
                    return for_event  # events: cluster-scoped objects match; listing per namespace never sees them
                namespace_obj = self.store.try_get("v1", "Namespace", ns)
                labels = meta_of(namespace_obj).get("labels") if namespace_obj else None
                return namespace_obj is not None and selectors.matches(ns_selector, labels)

            return by_namespace_selector
        if has_labels and namespace:
            return lambda obj: meta_of(obj).get("namespace") == namespace and labels_ok(obj)
        if namespace or names:
            if v1_namespaced and rt.namespaced and namespace and namespace != parent_ns:
                raise SyncError(f"requested related object namespace {namespace} differs from parent object "
                                f"namespace {parent_ns}")

            def by_namespace_and_names(obj: Obj) -> bool:
                obj_ns = meta_of(obj).get("namespace", "")
                if for_event and v1_namespaced:
                    if obj_ns and obj_ns != parent_ns:
                        return False
                elif namespace and obj_ns != namespace:
                    return False
                return not names or meta_of(obj).get("name") in names

            return by_namespace_and_names
        if v1_namespaced and rt.namespaced:
            return lambda obj: meta_of(obj).get("namespace") == parent_ns and labels_ok(obj)
        return labels_ok

    def related_objects(self, parent: Obj, rules: list[Obj]) -> dict[str, list[Obj]]:
        """GetRelatedObjects: one group per rule (rule's apiVersion), filled from the cluster-wide 'informer'."""
        out: dict[str, list[Obj]] = {}
        for rule in rules:
            try:
                rt = self.store.resource_for(rule.get("apiVersion", ""), resource=rule.get("resource"))
            except NotFound as exc:
                raise SyncError(f"can't find resource {rule.get('resource')!r} in apiVersion "
                                f"{rule.get('apiVersion')!r}") from exc
            if self.mc.lazy_related_informers and (rt.group, rt.kind) not in self._informers:
                # Related informers start on first use; until their first list completes the sync fails.
                self._informers.add((rt.group, rt.kind))
                raise SyncError("related informer not synced yet")
            predicate = self._selection(rule, parent, rt)
            group = out.setdefault(gvk_key(rule["apiVersion"], rt.kind), [])
            seen = {meta_of(o)["uid"] for o in group}
            namespace = None
            if rt.namespaced and rule.get("namespace") and rule.get("namespaceSelector") is None:
                namespace = rule["namespace"]
            for obj in self.store.list(rt.api_version, rt.kind, namespace=namespace):
                if predicate(obj) and meta_of(obj)["uid"] not in seen:
                    obj["apiVersion"] = rule["apiVersion"]
                    group.append(obj)
        return out

    def object_map(self, parent: Obj, groups: dict[str, list[Obj]], version: str) -> dict[str, dict[str, Obj]]:
        """v1: RelativeObjectMap (drops cluster-scoped/other-namespace objects for namespaced parents); v2: ns/name."""
        parent_ns = meta_of(parent).get("namespace", "")
        out: dict[str, dict[str, Obj]] = {}
        for gvk, objs in groups.items():
            inner = out.setdefault(gvk, {})
            for obj in objs:
                ns, name = meta_of(obj).get("namespace", ""), meta_of(obj)["name"]
                if version == "v2":
                    inner[f"{ns}/{name}" if ns else name] = obj
                elif parent_ns:
                    if ns == parent_ns:
                        inner[name] = obj
                else:
                    inner[f"{ns}/{name}" if ns else name] = obj
        return out
