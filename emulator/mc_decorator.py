"""DecoratorController sync: attachments, hook call, the parent's labels/annotations/status writes."""

from __future__ import annotations

import copy

from emulator.hookcall import HookError
from emulator.mc_children import ChildrenMixin
from emulator.mc_common import (
    DECORATOR_ANNOTATION,
    Obj,
    ParentKey,
    SyncError,
    controller_ref,
    meta_of,
)
from emulator.mc_related import RelatedMixin
from emulator.store import Conflict, NotFound, ResourceType


class DecoratorMixin(RelatedMixin, ChildrenMixin):
    """The decorated object's sync: observed attachments, sync or finalize, then the writes."""

    def observed_attachments(self, parent: Obj) -> list[Obj]:
        meta = meta_of(parent)
        namespace = meta.get("namespace") or None
        out = []
        for _, rt in self.child_rules:
            for obj in self.store.list(rt.api_version, rt.kind, namespace=namespace):
                ref = controller_ref(obj)
                if ref and ref.get("uid") == meta["uid"] and (
                    (meta_of(obj).get("annotations") or {}).get(DECORATOR_ANNOTATION) == self.name
                ):
                    out.append(obj)
        return out

    def sync_decorator(self, parent: Obj, rt: ResourceType, key: ParentKey) -> None:
        parent = self.sync_finalizer(parent, key)
        if not self.selected(parent) and self.finalizer not in (meta_of(parent).get("finalizers") or []):
            return  # we just removed our finalizer from an object that no longer matches
        observed = self.observed_attachments(parent)
        related = self.related_objects(parent, self.related_rules(parent))
        hook, finalizing = self._sync_hook(parent, "no enabled hooks found")
        # Both hook versions send `object` and `attachments` (the Go DecoratorHookRequest types in
        # pkg/controller/decorator/api/v1 and v2 name the fields Parent/Children but tag them object/attachments).
        request = {
            "controller": self.controller_object(),
            "object": parent,
            "attachments": self.object_map(parent, self.group_children(observed), hook.version),
            "related": self.object_map(parent, related, hook.version),
            "finalizing": finalizing,
        }
        try:
            response = self.call(hook, request, "decorator", key)
        except HookError as exc:
            raise SyncError(str(exc)) from exc
        self._resync_after(key, response)
        updated = copy.deepcopy(parent)
        meta = updated["metadata"]
        for field in ("labels", "annotations"):
            values = dict(meta.get(field) or {})
            for name, value in (response.get(field) or {}).items():
                if value is None:
                    values.pop(name, None)
                else:
                    values[name] = value
            meta[field] = values
        labels_changed = (meta.get("labels") or {}) != (meta_of(parent).get("labels") or {})
        annotations_changed = (meta.get("annotations") or {}) != (meta_of(parent).get("annotations") or {})
        status = response.get("status")
        status_changed = status is not None and status != parent.get("status")
        if status_changed:
            updated["status"] = copy.deepcopy(status)
        remove_finalizer = bool(response.get("finalized")) and self.finalizer in (meta.get("finalizers") or [])
        if status_changed or labels_changed or annotations_changed or remove_finalizer:
            if status_changed and rt.status_subresource:
                try:
                    self.mc.maybe_conflict(self, key)
                    written = self.store.update_status(updated)
                except (Conflict, NotFound) as exc:
                    self.mc.record(self.name, str(key), None, "conflict-dropped", f"status update: {exc}")
                    return
                meta["resourceVersion"] = written["metadata"]["resourceVersion"]
            if remove_finalizer:
                meta["finalizers"] = [f for f in meta.get("finalizers") or [] if f != self.finalizer]
            try:
                if status_changed and rt.status_subresource:
                    self.mc.maybe_conflict(self, key, metadata=True)  # the second write of a split update
                self.store.update(updated)
            except (Conflict, NotFound) as exc:
                self.mc.record(self.name, str(key), None, "conflict-dropped", f"update: {exc}")
                return
            if remove_finalizer:
                self.mc.record(self.name, str(key), None, "finalizer-removed", None)
        desired = []
        for attachment in response.get("attachments") or []:
            attachment = copy.deepcopy(attachment)
            attachment.setdefault("metadata", {}).setdefault("annotations", {})[DECORATOR_ANNOTATION] = self.name
            desired.append(attachment)
        if self._may_manage(parent):  # the parent as read before this sync's update, as Metacontroller does
            self.manage_children(parent, observed, desired, key)
