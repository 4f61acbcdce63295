"""How Metacontroller reconciles desired children with observed ones (create, delete, InPlace/Recreate)."""

from __future__ import annotations

import contextlib
import copy
import json
from typing import Any

from emulator.mc_common import (
    LAST_APPLIED,
    Obj,
    ParentKey,
    SyncError,
    meta_of,
    owner_ref,
)
from emulator.mc_core import RuntimeCore
from emulator.store import ApiError, Conflict, NotFound, ResourceType


def merge3(observed: Any, last: Any, desired: Any) -> Any:
    """kubectl-apply style 3-way merge: desired wins, fields we applied before and dropped now are removed."""
    if not isinstance(desired, dict) or not isinstance(observed, dict):
        return copy.deepcopy(desired)
    last = last if isinstance(last, dict) else {}
    out = copy.deepcopy(observed)
    for key in last:
        if key not in desired:
            out.pop(key, None)
    for key, value in desired.items():
        out[key] = merge3(observed[key], last.get(key), value) if key in observed else copy.deepcopy(value)
    return out


class ChildrenMixin(RuntimeCore):
    """Children/attachments: create with a controller ownerRef, delete when left out, update per strategy."""

    def manage_children(self, parent: Obj, observed: list[Obj], desired: list[Obj], key: ParentKey) -> None:
        """Delete observed-but-not-desired, create missing, update existing per the rule's updateStrategy."""
        parent_ns = meta_of(parent).get("namespace", "")
        errors: list[str] = []
        desired_map: dict[tuple[str, str, str, str], tuple[Obj, ResourceType]] = {}
        for obj in desired:
            meta = obj.get("metadata") or {}
            if not obj.get("apiVersion") or not obj.get("kind") or not meta.get("name"):
                errors.append(f"desired object without apiVersion/kind/metadata.name: {json.dumps(obj)[:200]}")
                continue
            try:
                rt = self.store.resource_for(obj["apiVersion"], kind=obj["kind"])
            except NotFound as exc:
                errors.append(str(exc))
                continue
            if rt.namespaced and not meta.get("namespace"):
                meta["namespace"] = parent_ns
            desired_map[(obj["apiVersion"], obj["kind"], meta.get("namespace", "") if rt.namespaced else "",
                         meta["name"])] = (obj, rt)
        observed_map = {(o["apiVersion"], o["kind"], meta_of(o).get("namespace", ""), meta_of(o)["name"]): o
                        for o in observed}
        for okey, obj in observed_map.items():
            if okey in desired_map or meta_of(obj).get("deletionTimestamp"):
                continue
            try:
                self.store.delete(obj["apiVersion"], obj["kind"], okey[3], okey[2], uid=meta_of(obj)["uid"])
                self.mc.record(self.name, str(key), None, "delete", None, object=f"{obj['kind']} {okey[3]}")
            except NotFound:
                pass
            except ApiError as exc:
                errors.append(f"can't delete {obj['kind']} {okey[3]}: {exc}")
        for dkey, (obj, rt) in desired_map.items():
            current = observed_map.get(dkey)
            try:
                if current is None:
                    self._create_child(parent, obj, rt, key)
                elif not meta_of(current).get("deletionTimestamp"):
                    self._update_child(current, obj, rt, key)
            except ApiError as exc:
                errors.append(f"{obj['kind']} {meta_of(obj)['name']}: {exc}")
        if errors:
            raise SyncError("can't reconcile children: " + "; ".join(errors))

    def _method(self, rt: ResourceType) -> str:
        for rule, crt in self.child_rules:
            if (crt.group, crt.kind) == (rt.group, rt.kind):
                method = ((rule.get("updateStrategy") or {}).get("method")) or "OnDelete"
                return {"RollingRecreate": "Recreate", "RollingInPlace": "InPlace"}.get(method, method)
        return "OnDelete"

    def _create_child(self, parent: Obj, obj: Obj, rt: ResourceType, key: ParentKey) -> None:
        new = copy.deepcopy(obj)
        meta = new["metadata"]
        annotations = dict(meta.get("annotations") or {})
        annotations.pop(LAST_APPLIED, None)
        applied = copy.deepcopy(obj)
        applied["metadata"]["annotations"] = dict(annotations)
        if not applied["metadata"]["annotations"]:
            del applied["metadata"]["annotations"]
        annotations[LAST_APPLIED] = json.dumps(applied, sort_keys=True)
        meta["annotations"] = annotations
        meta["ownerReferences"] = [*[r for r in meta.get("ownerReferences") or [] if not r.get("controller")],
                                   owner_ref(parent)]
        try:
            self.store.create(new)
        except ApiError as exc:
            if exc.reason == "AlreadyExists":
                return  # swallowed: the object is not adopted and never observed
            raise
        self.mc.record(self.name, str(key), None, "create", None, object=f"{obj['kind']} {meta['name']}")

    def _update_child(self, current: Obj, obj: Obj, rt: ResourceType, key: ParentKey) -> None:
        method = self._method(rt)
        if method == "OnDelete":
            return
        last_text = (meta_of(current).get("annotations") or {}).get(LAST_APPLIED)
        try:
            last = json.loads(last_text) if last_text else {}
        except ValueError:
            last = {}
        applied = copy.deepcopy(obj)
        applied_annotations = dict(meta_of(applied).get("annotations") or {})
        applied_annotations.pop(LAST_APPLIED, None)
        if applied_annotations:
            applied["metadata"]["annotations"] = applied_annotations
        else:
            applied["metadata"].pop("annotations", None)
        merged = merge3({k: v for k, v in current.items() if k != "status"}, last, applied)
        merged["apiVersion"], merged["kind"] = current["apiVersion"], current["kind"]
        for field in ("uid", "resourceVersion", "generation", "creationTimestamp", "ownerReferences", "namespace",
                      "name", "finalizers", "deletionTimestamp"):
            if field in meta_of(current):
                merged["metadata"][field] = copy.deepcopy(meta_of(current)[field])
        merged["metadata"].setdefault("annotations", {})[LAST_APPLIED] = json.dumps(applied, sort_keys=True)
        if "status" in current:
            merged["status"] = copy.deepcopy(current["status"])
        if merged == current:
            return
        if method == "Recreate":
            with contextlib.suppress(NotFound):
                self.store.delete(current["apiVersion"], current["kind"], meta_of(current)["name"],
                                  meta_of(current).get("namespace", ""), uid=meta_of(current)["uid"])
                self.mc.record(self.name, str(key), None, "delete", "recreate",
                               object=f"{obj['kind']} {meta_of(current)['name']}")
            return
        try:
            self.store.update(merged)
        except (Conflict, NotFound):
            return
        self.mc.record(self.name, str(key), None, "update", None, object=f"{obj['kind']} {meta_of(current)['name']}")
