"""Informer handlers: which parents a watch event enqueues (parent, owned child, orphan, related object)."""

from __future__ import annotations

import contextlib

from emulator import selectors
from emulator.hookcall import HookError, RetryAfter
from emulator.mc_common import (
    Obj,
    ParentKey,
    SyncError,
    controller_ref,
    group_of,
    meta_of,
    only_status_changed,
)
from emulator.mc_composite import CompositeMixin
from emulator.store import ApiError, WatchEvent


class EventsMixin(CompositeMixin):
    """Maps store watch events to parent keys on this controller's queue."""

    def enqueue_all(self) -> None:
        for parent in self.parents():
            self.queue.add(self.key_of(parent))

    def handle_event(self, event: WatchEvent) -> None:
        obj = event.object
        found = self.rule_for(obj)
        if found is not None:
            rule, _ = found
            ignore = rule.get("ignoreStatusChanges")
            if event.type == "MODIFIED" and ignore and only_status_changed(event.old, obj):
                pass
            elif self.tracked(obj) or (event.old is not None and self.tracked(event.old)):
                self.queue.add(self.key_of(obj))
        gk = (group_of(obj.get("apiVersion", "")), obj.get("kind"))
        if any((rt.group, rt.kind) == gk for _, rt in self.child_rules):
            self._child_event(event)
        if self.hooks["customize"] and gk in self._related_kinds:
            self._related_event(event)

    def _parent_gks(self) -> set[tuple[str, str]]:
        if self.composite:
            return {(self.parent_rt.group, self.parent_rt.kind)} if self.parent_rt else set()
        return {(rt.group, rt.kind) for _, rt in self.resource_rules}

    def _owner_key(self, child: Obj, ref: Obj) -> ParentKey | None:
        gk = (group_of(ref.get("apiVersion", "")), ref.get("kind"))
        if gk not in self._parent_gks():
            return None
        rt = self.parent_rt if self.composite else next(rt for _, rt in self.resource_rules
                                                         if (rt.group, rt.kind) == gk)
        namespace = meta_of(child).get("namespace", "") if rt and rt.namespaced else ""
        return ParentKey(gk[0], gk[1], namespace, ref.get("name", ""))

    def _child_event(self, event: WatchEvent) -> None:
        obj = event.object
        refs = [controller_ref(obj)]
        if event.old is not None and controller_ref(event.old) != refs[0]:
            refs.append(controller_ref(event.old))
        owned = False
        for ref in refs:
            if ref is None:
                continue
            key = self._owner_key(obj, ref)
            if key is not None:
                owned = True
                self.queue.add(key)
        if owned or not self.composite or event.type == "DELETED" or controller_ref(obj) is not None:
            return
        # An orphan: every parent whose selector matches it may adopt it.
        namespace = meta_of(obj).get("namespace")
        for parent in self.parents():
            if self.parent_rt and self.parent_rt.namespaced and meta_of(parent).get("namespace") != namespace:
                continue
            with contextlib.suppress(SyncError, selectors.SelectorError):
                if selectors.matches(self.child_selector(parent), meta_of(obj).get("labels"), none_matches=False):
                    self.queue.add(self.key_of(parent))

    def _related_event(self, event: WatchEvent) -> None:
        for parent in self.parents(copies=False):  # only read: one copy of every parent per event cost minutes
            try:
                rules = self.related_rules(parent)
            except (HookError, RetryAfter, SyncError):
                continue
            for rule in rules:
                for candidate in (event.object, event.old):
                    if candidate is None:
                        continue
                    try:
                        hit = self._related_match(rule, parent, candidate)
                    except (SyncError, ApiError, selectors.SelectorError):
                        hit = False
                    if hit:
                        self.queue.add(self.key_of(parent))
                        break
