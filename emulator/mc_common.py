"""Names every part of the Metacontroller emulator shares: keys, errors, annotations and object accessors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]

DECORATOR_ANNOTATION = "metacontroller.k8s.io/decorator-controller"
LAST_APPLIED = "metacontroller.k8s.io/last-applied-configuration"
CONTROLLER_KINDS = ("CompositeController", "DecoratorController")
GC_FINALIZERS = ("foregroundDeletion", "orphan")


class SyncError(Exception):
    """A sync failed; logged as a SyncError event and retried with backoff."""


@dataclass(frozen=True, order=True)
class ParentKey:
    group: str
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace + '/' if self.namespace else ''}{self.name}"



def gvk_key(api_version: str, kind: str) -> str:
    """Outer map key of children/attachments/related: `Kind.version` (core) or `Kind.group/version`."""
    group, _, version = api_version.rpartition("/")
    return f"{kind}.{version}" if not group else f"{kind}.{group}/{version}"


def group_of(api_version: str) -> str:
    return api_version.rpartition("/")[0]


def meta_of(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def controller_ref(obj: Obj) -> Obj | None:
    return next((r for r in meta_of(obj).get("ownerReferences") or [] if r.get("controller")), None)


def owner_ref(parent: Obj) -> Obj:
    meta = meta_of(parent)
    return {"apiVersion": parent["apiVersion"], "kind": parent["kind"], "name": meta["name"], "uid": meta["uid"],
            "controller": True, "blockOwnerDeletion": True}


def only_status_changed(old: Obj | None, new: Obj) -> bool:
    if old is None:
        return False

    def strip(obj: Obj) -> Obj:
        out = {k: v for k, v in obj.items() if k != "status"}
        out["metadata"] = {k: v for k, v in meta_of(obj).items() if k not in ("resourceVersion", "managedFields")}
        return out

    return strip(old) == strip(new)
