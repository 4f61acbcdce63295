"""The shared informer cache the emulated controllers read from, lagging the store by `informer_lag` seconds.

Why: Metacontroller's controllers list parents, children and related objects from informer caches that trail
the API server. A hook answered from a stale view can re-create a child the garbage collector is about to
remove, or write over a status it never saw; the emulator shows that only if its controllers read stale data
too. With no lag the view is the live store (reads pass through), which is what the tests ran on before.

The cache is fed by the Metacontroller's informer thread: each watch event is applied `informer_lag` seconds
after the write, in write order, and only then handed to the controllers' event handlers. Writes, and the
reads Metacontroller makes with a live GET (finalizer edits, composite status, adoption checks), go to the
store itself.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

from emulator import selectors
from emulator.store import ResourceType, Store, WatchEvent

Obj = dict[str, Any]
Key = tuple[str, str, str, str]  # group, kind, namespace, name


def _key(obj: Obj) -> Key:
    meta = obj.get("metadata") or {}
    group = str(obj.get("apiVersion", "")).rpartition("/")[0]
    return group, str(obj.get("kind", "")), meta.get("namespace", "") or "", meta.get("name", "")


def _rv(obj: Obj) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


class CachedStore:
    """The store as the controllers see it: cached reads (when lagging), writes straight through."""

    def __init__(self, store: Store, *, lagging: bool) -> None:
        self.live = store
        self.lagging = lagging
        self._lock = threading.Lock()
        self._objects: dict[Key, Obj] = {}
        if lagging:
            for obj in store.snapshot():
                self._objects[_key(obj)] = obj

    def apply(self, event: WatchEvent) -> None:
        """Make the cache show the write this event reports (events older than the cached state are ignored)."""
        if not self.lagging:
            return
        key = _key(event.object)
        with self._lock:
            cached = self._objects.get(key)
            if event.type == "DELETED":
                if cached is not None and cached["metadata"].get("uid") == event.object["metadata"].get("uid"):
                    del self._objects[key]
                return
            if cached is None or _rv(event.object) >= _rv(cached):
                self._objects[key] = copy.deepcopy(event.object)

    # ------------------------------------------------------------ reads (cache when lagging)

    def try_get(self, api_version: str, kind: str, name: str, namespace: str = "") -> Obj | None:
        if not self.lagging:
            return self.live.try_get(api_version, kind, name, namespace)
        rt = self.live.resource_for(api_version, kind=kind)
        with self._lock:
            obj = self._objects.get((rt.group, rt.kind, namespace if rt.namespaced else "", name))
            return copy.deepcopy(obj) if obj is not None else None

    def list(self, api_version: str, kind: str, namespace: str | None = None,
             label_selector: Obj | None = None, *, copies: bool = True) -> list[Obj]:
        """As Store.list (`copies=False`: read-only views), from the lagging cache when there is one."""
        if not self.lagging:
            return self.live.list(api_version, kind, namespace=namespace, label_selector=label_selector, copies=copies)
        rt = self.live.resource_for(api_version, kind=kind)
        with self._lock:
            mine = sorted((key, obj) for key, obj in self._objects.items() if key[0] == rt.group and key[1] == rt.kind
                          and (namespace is None or not rt.namespaced or key[2] == namespace))
            found = [obj for _, obj in mine if selectors.matches(label_selector, obj["metadata"].get("labels"))]
            return copy.deepcopy(found) if copies else found

    # ------------------------------------------------------------ discovery and writes (live)

    def resource_for(self, api_version: str, *, kind: str | None = None, resource: str | None = None) -> ResourceType:
        return self.live.resource_for(api_version, kind=kind, resource=resource)

    def create(self, obj: Obj) -> Obj:
        return self.live.create(obj)

    def update(self, obj: Obj) -> Obj:
        return self.live.update(obj)

    def update_status(self, obj: Obj) -> Obj:
        return self.live.update_status(obj)

    def delete(self, api_version: str, kind: str, name: str, namespace: str = "", *, uid: str | None = None) -> None:
        self.live.delete(api_version, kind, name, namespace, uid=uid)

