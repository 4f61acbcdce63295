"""How Metacontroller reconciles desired children with observed ones (create, delete, InPlace/Recreate)."""

from __future__ import annotations

import contextlib
import json

from emulator import mc_apply
from emulator.mc_common import (
    Obj,
    ParentKey,
    SyncError,
    group_of,
    gvk_key,
    meta_of,
    owner_ref,
)
from emulator.mc_core import RuntimeCore
from emulator.store import ApiError, Conflict, NotFound, ResourceType


class ChildrenMixin(RuntimeCore):
    """Children/attachments: create with a controller ownerRef, delete when left out, update per strategy."""

    def group_children(self, observed: list[Obj]) -> dict[str, list[Obj]]:
        """Observed children (or attachments) under the key a hook request files them by, each one given the
        apiVersion its child rule names (an object is read in the store's version, the hook sees the rule's)."""
        groups: dict[str, list[Obj]] = {gvk_key(r["apiVersion"], rt.kind): [] for r, rt in self.child_rules}
        for child in observed:
            rule_api = next(r["apiVersion"] for r, rt in self.child_rules
                            if (rt.group, rt.kind) == (group_of(child["apiVersion"]), child["kind"]))
            child["apiVersion"] = rule_api
            groups[gvk_key(rule_api, child["kind"])].append(child)
        return groups

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
                else:
                    self._update_child(current, obj, rt, key)
            except ApiError as exc:
                errors.append(f"{obj['kind']} {meta_of(obj)['name']}: {exc}")
            except SyncError as exc:
                errors.append(str(exc))
        if errors:
            raise SyncError("can't reconcile children: " + "; ".join(errors))

    def _method(self, rt: ResourceType) -> str:
        for rule, crt in self.child_rules:
            if (crt.group, crt.kind) == (rt.group, rt.kind):
                method = ((rule.get("updateStrategy") or {}).get("method")) or "OnDelete"
                return {"RollingRecreate": "Recreate", "RollingInPlace": "InPlace"}.get(method, method)
        return "OnDelete"

    def _create_child(self, parent: Obj, obj: Obj, rt: ResourceType, key: ParentKey) -> None:
        new = mc_apply.object_to_create(obj, owner_ref(parent))
        try:
            self.store.create(new)
        except ApiError as exc:
            if exc.reason == "AlreadyExists":
                return  # swallowed: the object is not adopted and never observed
            raise
        self.mc.record(self.name, str(key), None, "create", None, object=f"{obj['kind']} {meta_of(new)['name']}")

    def _update_child(self, current: Obj, obj: Obj, rt: ResourceType, key: ParentKey) -> None:
        """DynamicApply.Apply for an observed child: merge, compare, then OnDelete / Recreate / InPlace."""
        try:
            merged = mc_apply.apply_update(current, obj)
        except mc_apply.ApplyError as exc:
            raise SyncError(f"{obj['kind']} {meta_of(current)['name']}: {exc}") from exc
        if merged == current or meta_of(current).get("deletionTimestamp"):
            return
        method = self._method(rt)
        if method == "OnDelete":
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
        except (Conflict, NotFound) as exc:  # swallowed: "will reconcile again" (the next event brings a sync)
            self.mc.record(self.name, str(key), None, "conflict-dropped",
                           f"update {obj['kind']} {meta_of(current)['name']}: {exc}")
            return
        self.mc.record(self.name, str(key), None, "update", None, object=f"{obj['kind']} {meta_of(current)['name']}")
