"""CompositeController sync: selector, claiming (adopt/release), hook call, children and status."""

from __future__ import annotations

import copy

from emulator import selectors
from emulator.hookcall import HookError
from emulator.mc_children import ChildrenMixin
from emulator.mc_common import (
    Obj,
    ParentKey,
    SyncError,
    controller_ref,
    meta_of,
    owner_ref,
)
from emulator.mc_related import RelatedMixin
from emulator.store import Conflict, NotFound


class CompositeMixin(RelatedMixin, ChildrenMixin):
    """The composite parent's sync: claim children, call sync or finalize, apply children and status."""

    def child_selector(self, parent: Obj) -> Obj:
        if self.spec.get("generateSelector"):
            return {"matchLabels": {"controller-uid": meta_of(parent)["uid"]}}
        selector = (parent.get("spec") or {}).get("selector")
        if selectors.is_empty(selector):
            raise SyncError(".spec.selector must have either matchLabels, matchExpressions, or both")
        assert isinstance(selector, dict)
        return selector

    def claim_children(self, parent: Obj, selector: Obj, key: ParentKey) -> list[Obj]:
        """Owned children that match, plus adopted orphans; owned ones that stopped matching are released."""
        parent_meta = meta_of(parent)
        deleting = bool(parent_meta.get("deletionTimestamp"))
        namespace = parent_meta.get("namespace") if self.parent_rt and self.parent_rt.namespaced else None
        claimed = []
        for _, rt in self.child_rules:
            for child in self.store.list(rt.api_version, rt.kind, namespace=namespace):
                ref = controller_ref(child)
                matched = selectors.matches(selector, meta_of(child).get("labels"), none_matches=False)
                if ref is not None:
                    if ref.get("uid") != parent_meta["uid"]:
                        continue
                    if matched or deleting:
                        claimed.append(child)
                        continue
                    self._set_owner(child, None, parent_meta["uid"], key, "release")
                    continue
                if not matched or deleting or meta_of(child).get("deletionTimestamp"):
                    continue
                fresh = self.live.try_get(parent["apiVersion"], parent["kind"], key.name, key.namespace)
                fresh_meta = meta_of(fresh) if fresh is not None else {}
                if fresh is None or fresh_meta["uid"] != parent_meta["uid"] or fresh_meta.get("deletionTimestamp"):
                    continue
                adopted = self._set_owner(child, owner_ref(parent), None, key, "adopt")
                if adopted is not None:
                    claimed.append(adopted)
        return claimed

    def _set_owner(self, child: Obj, add: Obj | None, remove_uid: str | None, key: ParentKey, what: str) -> Obj | None:
        refs = [r for r in meta_of(child).get("ownerReferences") or [] if r.get("uid") != remove_uid]
        if add is not None:
            refs.append(add)
        child["metadata"]["ownerReferences"] = refs
        try:
            updated = self.store.update(child)
        except (Conflict, NotFound) as exc:
            raise SyncError(f"can't {what} {meta_of(child).get('name')}: {exc}") from exc
        self.mc.record(self.name, str(key), None, what, None, object=f"{child['kind']} {meta_of(child)['name']}")
        return updated

    def sync_composite(self, parent: Obj, key: ParentKey) -> None:
        # A parent pending deletion without our finalizer is still synced (children are left to the GC), and
        # finalize is called again after finalized: true while other finalizers keep the object around.
        parent = self.sync_finalizer(parent, key)
        selector = self.child_selector(parent)
        observed = self.claim_children(parent, selector, key)
        related = self.related_objects(parent, self.related_rules(parent))
        hook, finalizing = self._sync_hook(parent, "sync hook nil//not defined")
        request = {
            "controller": self.controller_object(),
            "parent": parent,
            "children": self.object_map(parent, self.group_children(observed), hook.version),
            "related": self.object_map(parent, related, hook.version),
            "finalizing": finalizing,
        }
        try:
            response = self.call(hook, request, "composite", key)
        except HookError as exc:
            raise SyncError(f"sync hook failed for {parent['kind']} {key.namespace}/{key.name}: {exc}") from exc
        self._resync_after(key, response)
        if response.get("finalized"):
            parent = self._edit_finalizer(parent, key, add=False)
        desired = [copy.deepcopy(c) for c in response.get("children") or []]
        if self.spec.get("generateSelector"):
            for child in desired:
                child.setdefault("metadata", {}).setdefault("labels", {})["controller-uid"] = meta_of(parent)["uid"]
        for child in desired:
            labels = meta_of(child).get("labels") or {}
            if not selectors.matches(selector, labels, none_matches=False):
                raise SyncError(f"labels on desired child {child.get('kind')} "
                                f"{meta_of(child).get('namespace', key.namespace)}/{meta_of(child).get('name')} "
                                "don't match parent selector")
        manage_error: Exception | None = None
        if self._may_manage(parent):
            try:
                self.manage_children(parent, observed, desired, key)
            except SyncError as exc:
                manage_error = exc
        status = copy.deepcopy(response.get("status")) or {}
        status["observedGeneration"] = meta_of(parent).get("generation")
        self._composite_status(parent, status, key)
        if manage_error is not None:
            raise manage_error

    def _composite_status(self, parent: Obj, status: Obj, key: ParentKey) -> None:
        """AtomicStatusUpdate: live GET, write only if different, retry on conflict; NotFound/Conflict swallowed."""
        for _ in range(5):
            live = self.live.try_get(parent["apiVersion"], parent["kind"], key.name, key.namespace)
            if live is None or live.get("status") == status:
                return
            live["status"] = status
            try:
                self.mc.maybe_conflict(self, key)
                self.store.update_status(live)
                return
            except Conflict:
                continue
            except NotFound:
                return
        self.mc.record(self.name, str(key), None, "conflict-dropped", "status update kept conflicting")
