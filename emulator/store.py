"""In-memory stand-in for the Kubernetes API server, faithful where our hooks can notice the difference.

Why it exists: tests and `make demo` run the hooks under an emulated Metacontroller, and the hooks' mistakes
that only a real API server would reveal must show up here too. So the store enforces what the API server
enforces on writes: optimistic concurrency (a stale `resourceVersion` is a Conflict), status subresource
rules (`update` never changes status, `update_status` changes nothing else), CRD structural-schema pruning of
unknown fields and schema validation, label syntax, finalizers (delete only sets `deletionTimestamp` while any
remain; no new finalizer on a deleting object), `generation` bumps on spec changes, no-op writes that do not
bump `resourceVersion` (so they emit no watch event), and background garbage collection through
`ownerReferences` (inside the delete call, or with `gc_delay` > 0 in later passes, one level of dependents per
pass, as the real garbage collector works after the delete has returned).

API (every object in and out is a plain JSON-like dict; every returned dict is a private deep copy):

    store = Store(clock=lambda: datetime.now(UTC), auto_namespaces=False, gc_delay=0.0)
    store.load_yaml("kubernetes/crds/")           # files, directories or YAML text; CRDs register kinds
    store.register_crd(crd_dict) -> ResourceType
    store.resource_for(api_version, kind=... | resource=...) -> ResourceType   (NotFound if unknown)
    store.create(obj) / store.apply(obj) / store.update(obj) / store.update_status(obj) -> dict
    store.get(api_version, kind, name, namespace="") -> dict     (NotFound)
    store.try_get(...) -> dict | None;  store.get_by_uid(uid) -> dict | None
    store.list(api_version, kind, namespace=None, label_selector=None) -> list[dict]
    store.delete(api_version, kind, name, namespace="", uid=None)   (uid = precondition)
    store.delete_gracefully(api_version, kind, name, namespace="", uid=None, grace_seconds=30) -> dict
    store.resource_version() -> str           (the newest resourceVersion, for list answers)
    store.watch(callback) -> unsubscribe;   callback(WatchEvent(type, object, old))
    store.snapshot() -> list[dict]          (every object, for debugging and demo output)

Errors are `ApiError` subclasses carrying the HTTP status the real server would answer: NotFound (404),
AlreadyExists / Conflict (409), Invalid (422).
"""

from __future__ import annotations

import base64
import binascii
import builtins  # Store.list shadows `list` in the class body
import copy
import functools
import itertools
import re
import secrets
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from emulator import selectors

Obj = dict[str, Any]
Clock = Callable[[], datetime]

STATUS_SUBRESOURCE_BUILTINS = {"Node", "Namespace", "Pod", "Job"}


class ApiError(Exception):
    """An error the API server would return; `code` is its HTTP status."""

    code = 500
    reason = "InternalError"


class NotFound(ApiError):
    code = 404
    reason = "NotFound"


class AlreadyExists(ApiError):
    code = 409
    reason = "AlreadyExists"


class Conflict(ApiError):
    code = 409
    reason = "Conflict"


class Invalid(ApiError):
    code = 422
    reason = "Invalid"


@dataclass(frozen=True)
class ResourceType:
    """One kind the store serves: what discovery plus the CRD would tell a client."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    status_subresource: bool = False
    schema: Obj | None = None  # openAPIV3Schema of the storage version (CRDs only)
    crd: bool = False
    versions: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def serves(self, api_version: str) -> bool:
        group, _, version = api_version.rpartition("/")
        return group == self.group and (version == self.version or version in self.versions)


@dataclass(frozen=True)
class WatchEvent:
    """What an informer handler sees: `old` is the previous state for MODIFIED, None otherwise."""

    type: str  # "ADDED" | "MODIFIED" | "DELETED"
    object: Obj
    old: Obj | None = None


BUILTINS = (
    ResourceType("", "v1", "Secret", "secrets", True),
    ResourceType("", "v1", "ConfigMap", "configmaps", True),
    ResourceType("", "v1", "ServiceAccount", "serviceaccounts", True),
    ResourceType("", "v1", "Pod", "pods", True, status_subresource=True),
    ResourceType("", "v1", "Node", "nodes", False, status_subresource=True),
    ResourceType("", "v1", "Namespace", "namespaces", False, status_subresource=True),
    ResourceType("batch", "v1", "Job", "jobs", True, status_subresource=True),
    ResourceType("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", True, status_subresource=True),
    ResourceType("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", False),
)

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_SYSTEM_METADATA = ("uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp",
                    "deletionGracePeriodSeconds", "managedFields")


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    """RFC3339 with a Z, seconds precision: how the API server renders metav1.Time."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def object_key(obj: Obj) -> str:
    """`Kind ns/name` (or `Kind name`) for messages and event logs."""
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{obj.get('kind')} {ns + '/' if ns else ''}{meta.get('name')}"


@functools.lru_cache(maxsize=128)
def _parsed_file(path: str, mtime_ns: int, size: int) -> tuple[Any, ...]:
    """A YAML file's documents, parsed once per version of the file: tests build many stores from the same CRDs."""
    return tuple(yaml.safe_load_all(Path(path).read_text()))


Key = tuple[str, str, str, str]  # group, kind, namespace, name


class _Objects(dict[Key, "Obj"]):
    """The store's objects with an index by (group, kind), kept by the only mutations the store uses."""

    def __init__(self) -> None:
        super().__init__()
        self._kinds: dict[tuple[str, str], dict[Key, Obj]] = {}

    def __setitem__(self, key: Key, obj: Obj) -> None:
        super().__setitem__(key, obj)
        self._kinds.setdefault((key[0], key[1]), {})[key] = obj

    def pop(self, key: Key, default: Any = None) -> Any:
        self._kinds.get((key[0], key[1]), {}).pop(key, None)
        return super().pop(key, default)

    def __delitem__(self, key: Key) -> None:
        self._kinds.get((key[0], key[1]), {}).pop(key, None)
        super().__delitem__(key)

    def of_kind(self, group: str, kind: str) -> dict[Key, Obj]:
        return self._kinds.get((group, kind), {})


class Store:
    """Thread-safe object store; every public method is atomic with respect to the others."""

    def __init__(self, *, clock: Clock = utc_now, auto_namespaces: bool = False, gc_delay: float = 0.0) -> None:
        self._clock = clock
        self.gc_delay = gc_delay  # > 0: dependents go in a background pass this long after their owner, per level
        self._gc_timer: threading.Timer | None = None
        self._auto_namespaces = auto_namespaces
        self._lock = threading.RLock()
        self._dispatch_lock = threading.RLock()
        # Replaced, never mutated, so readers need no lock; the lookup cache is dropped with each replacement.
        self._types: list[ResourceType] = list(BUILTINS)
        self._type_cache: dict[tuple[str, str | None, str | None], ResourceType] = {}
        self._objects = _Objects()
        self._uids: dict[str, tuple[str, str, str, str]] = {}
        self._rv = itertools.count(1)
        self._last_rv = 0
        self._watchers: list[Callable[[WatchEvent], None]] = []
        self._pending: deque[WatchEvent] = deque()
        self._validators: dict[str, jsonschema.protocols.Validator] = {}
        for name in ("default", "kube-system"):
            self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    # ---------------------------------------------------------------- kinds

    def register_crd(self, crd: Obj) -> ResourceType:
        """Serve the CRD's kind (storage version); also stores the CRD object itself."""
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        versions = spec.get("versions") or []
        if not spec.get("group") or not names.get("kind") or not names.get("plural") or not versions:
            name = (crd.get("metadata") or {}).get("name")
            raise Invalid(f"CustomResourceDefinition {name!r} lacks group/names/versions")
        storage = next((v for v in versions if v.get("storage")), versions[0])
        rt = ResourceType(
            group=spec["group"],
            version=storage["name"],
            kind=names["kind"],
            plural=names["plural"],
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            status_subresource="status" in (storage.get("subresources") or {}),
            schema=(storage.get("schema") or {}).get("openAPIV3Schema"),
            crd=True,
            versions=tuple(v["name"] for v in versions if v.get("served", True)),
        )
        with self._lock:
            self._types = [t for t in self._types if (t.group, t.kind) != (rt.group, rt.kind)] + [rt]
            self._type_cache = {}
            self._validators.pop(rt.kind + "." + rt.group, None)
        self.apply(crd)
        return rt

    def resource_for(self, api_version: str, *, kind: str | None = None, resource: str | None = None) -> ResourceType:
        """The served type; without the store's lock (the informer matches every related rule of every parent with
        it, and waiting behind a large list for each match left a 200-Machine emulator's informer minutes behind)."""
        key = (api_version, kind, resource)
        cache = self._type_cache
        found = cache.get(key)
        if found is not None:
            return found
        for rt in self._types:
            if rt.serves(api_version) and (kind is None or rt.kind == kind) and (
                resource is None or rt.plural == resource
            ):
                cache[key] = rt
                return rt
        what = kind or resource
        raise NotFound(f"the server doesn't have a resource type {what!r} in apiVersion {api_version!r}")

    def resource_types(self) -> list[ResourceType]:
        with self._lock:
            return list(self._types)

    # ---------------------------------------------------------------- reads

    def get(self, api_version: str, kind: str, name: str, namespace: str = "") -> Obj:
        found = self.try_get(api_version, kind, name, namespace)
        if found is None:
            rt = self.resource_for(api_version, kind=kind)
            raise NotFound(f'{rt.plural}.{rt.group or "core"} "{name}" not found')
        return found

    def try_get(self, api_version: str, kind: str, name: str, namespace: str = "") -> Obj | None:
        rt = self.resource_for(api_version, kind=kind)
        with self._lock:
            obj = self._objects.get(self._key(rt, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def get_by_uid(self, uid: str) -> Obj | None:
        with self._lock:
            key = self._uids.get(uid)
            return copy.deepcopy(self._objects[key]) if key else None

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        label_selector: Obj | None = None,
        *,
        copies: bool = True,
    ) -> list[Obj]:
        """Objects of one kind, optionally in one namespace and matching a LabelSelector (None = all).

        `copies=False` hands out the stored objects themselves, without taking the lock, for callers that only read
        them (the emulator's informer matching every event against every parent): never modify what it returns.
        Stored objects are replaced, never changed in place, and copying a dict's items is one step under the GIL,
        so such a view is a consistent snapshot of each object."""
        rt = self.resource_for(api_version, kind=kind)
        if not copies:
            return self._select(list(self._objects.of_kind(rt.group, rt.kind).items()), rt, namespace, label_selector)
        with self._lock:
            found = self._select(list(self._objects.of_kind(rt.group, rt.kind).items()), rt, namespace, label_selector)
            return [copy.deepcopy(obj) for obj in found]

    @staticmethod
    def _select(items: builtins.list[tuple[Key, Obj]], rt: ResourceType, namespace: str | None,
                label_selector: Obj | None) -> builtins.list[Obj]:
        mine = sorted((key, obj) for key, obj in items if namespace is None or not rt.namespaced or key[2] == namespace)
        return [obj for _, obj in mine if selectors.matches(label_selector, obj["metadata"].get("labels"))]

    def snapshot(self) -> builtins.list[Obj]:
        with self._lock:
            return [copy.deepcopy(o) for _, o in sorted(self._objects.items())]

    # ---------------------------------------------------------------- watch

    def watch(self, callback: Callable[[WatchEvent], None]) -> Callable[[], None]:
        """Call `callback` for every later change, in resourceVersion order, outside the store lock."""
        with self._lock:
            self._watchers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._watchers:
                    self._watchers.remove(callback)

        return unsubscribe

    def _dispatch(self) -> None:
        with self._dispatch_lock:
            while True:
                with self._lock:
                    if not self._pending:
                        return
                    event = self._pending.popleft()
                    watchers = list(self._watchers)
                for callback in watchers:
                    callback(event)

    # ---------------------------------------------------------------- writes

    def create(self, obj: Obj) -> Obj:
        try:
            with self._lock:
                return self._create(obj)
        finally:
            self._dispatch()

    def update(self, obj: Obj) -> Obj:
        """PUT: everything but status (for kinds with a status subresource) and system metadata."""
        try:
            with self._lock:
                return self._update(obj, status_only=False)
        finally:
            self._dispatch()

    def update_status(self, obj: Obj) -> Obj:
        """PUT on /status: only `.status` changes; 404 when the kind has no status subresource."""
        try:
            with self._lock:
                return self._update(obj, status_only=True)
        finally:
            self._dispatch()

    def apply(self, obj: Obj) -> Obj:
        """Create, or replace what a manifest sets (like `kubectl apply` without the 3-way merge)."""
        try:
            with self._lock:
                rt = self.resource_for(obj.get("apiVersion", ""), kind=obj.get("kind"))
                meta = obj.get("metadata") or {}
                current = self._objects.get(self._key(rt, meta.get("namespace", ""), meta.get("name", "")))
                if current is None:
                    return self._create(obj)
                merged = copy.deepcopy(obj)
                merged_meta = merged.setdefault("metadata", {})
                merged_meta["resourceVersion"] = current["metadata"]["resourceVersion"]
                for field in ("finalizers", "ownerReferences"):
                    if field not in merged_meta and field in current["metadata"]:
                        merged_meta[field] = copy.deepcopy(current["metadata"][field])
                if "status" not in merged and "status" in current:
                    merged["status"] = copy.deepcopy(current["status"])
                return self._update(merged, status_only=False)
        finally:
            self._dispatch()

    def delete(self, api_version: str, kind: str, name: str, namespace: str = "", *, uid: str | None = None) -> None:
        """Background-propagation delete; with finalizers present it only marks the object as deleting."""
        try:
            with self._lock:
                rt = self.resource_for(api_version, kind=kind)
                key = self._key(rt, namespace, name)
                current = self._objects.get(key)
                if current is None:
                    raise NotFound(f'{rt.plural}.{rt.group or "core"} "{name}" not found')
                if uid is not None and current["metadata"]["uid"] != uid:
                    actual = current["metadata"]["uid"]
                    raise Conflict(f"Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}")
                self._delete_key(key)
                self._garbage_due()
        finally:
            self._dispatch()

    def resource_version(self) -> str:
        """The newest resourceVersion handed out: what a list answer reports as its own `metadata.resourceVersion`."""
        with self._lock:
            return str(self._last_rv)

    def delete_gracefully(
        self, api_version: str, kind: str, name: str, namespace: str = "", *, uid: str | None = None,
        grace_seconds: int = 30,
    ) -> Obj:
        """Mark an object as deleting without removing it, as the API server does for a pod bound to a Node.

        The kubelet removes such a pod once its containers stopped (the emulator's REST API plays that part and
        then calls `delete`). `deletionTimestamp` is when the grace period ends. Already deleting: unchanged.
        As for any deleting object without finalizers, a later update removes it at once.
        """
        try:
            with self._lock:
                rt = self.resource_for(api_version, kind=kind)
                key = self._key(rt, namespace, name)
                current = self._objects.get(key)
                if current is None:
                    raise NotFound(f'{rt.plural}.{rt.group or "core"} "{name}" not found')
                if uid is not None and current["metadata"]["uid"] != uid:
                    actual = current["metadata"]["uid"]
                    raise Conflict(f"Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}")
                if current["metadata"].get("deletionTimestamp"):
                    return copy.deepcopy(current)
                new = copy.deepcopy(current)
                ends = self._clock() + timedelta(seconds=grace_seconds)
                new["metadata"]["deletionTimestamp"] = format_time(ends)
                new["metadata"]["deletionGracePeriodSeconds"] = grace_seconds
                new["metadata"]["resourceVersion"] = self._next_rv()
                self._objects[key] = new
                self._emit("MODIFIED", new, current)
                return copy.deepcopy(new)
        finally:
            self._dispatch()

    def load_yaml(self, source: str | Path | Iterable[str | Path]) -> builtins.list[Obj]:
        """Apply every document of YAML files, directories (*.yaml, *.yml) or a YAML string; CRDs first.

        Kustomization documents are skipped, so `load_yaml("kubernetes/examples/")` works as `kubectl apply -k`
        would for a plain resource list (no patches or generators are evaluated).
        """
        # A kustomization.yaml is build input for kustomize, never sent to the API server: skip it.
        docs = [d for d in self._read_docs(source) if isinstance(d, dict) and d.get("kind") != "Kustomization"]
        first = [d for d in docs if d.get("kind") in ("CustomResourceDefinition", "Namespace")]
        out = []
        for doc in first:
            if doc["kind"] == "CustomResourceDefinition":
                self.register_crd(doc)
                out.append(self.get(doc["apiVersion"], doc["kind"], doc["metadata"]["name"]))
            else:
                out.append(self.apply(doc))
        out.extend(self.apply(doc) for doc in docs if doc not in first)
        return out

    @staticmethod
    def _read_docs(source: str | Path | Iterable[str | Path]) -> Iterator[Any]:
        if isinstance(source, str) and ("\n" in source or ":" in source) and not Path(source).exists():
            yield from yaml.safe_load_all(source)
            return
        paths: Iterable[str | Path] = [source] if isinstance(source, str | Path) else source
        for entry in paths:
            path = Path(entry)
            files = sorted([*path.glob("*.yaml"), *path.glob("*.yml")]) if path.is_dir() else [path]
            for file in files:
                stat = file.stat()
                yield from copy.deepcopy(_parsed_file(str(file), stat.st_mtime_ns, stat.st_size))

    # ---------------------------------------------------------------- internals (lock held)

    def _key(self, rt: ResourceType, namespace: str | None, name: str) -> tuple[str, str, str, str]:
        return (rt.group, rt.kind, (namespace or "default") if rt.namespaced else "", name)

    def _next_rv(self) -> str:
        self._last_rv = next(self._rv)
        return str(self._last_rv)

    def _emit(self, kind: str, obj: Obj, old: Obj | None = None) -> None:
        self._pending.append(WatchEvent(kind, copy.deepcopy(obj), copy.deepcopy(old) if old is not None else None))

    def _create(self, obj: Obj) -> Obj:
        rt = self.resource_for(obj.get("apiVersion", ""), kind=obj.get("kind"))
        new = copy.deepcopy(obj)
        new["apiVersion"] = rt.api_version
        meta = new.setdefault("metadata", {}) or {}
        new["metadata"] = meta
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        name = meta.get("name") or ""
        if rt.namespaced:
            meta["namespace"] = meta.get("namespace") or "default"
            self._require_namespace(meta["namespace"])
        else:
            meta.pop("namespace", None)
        key = self._key(rt, meta.get("namespace"), name)
        if key in self._objects:
            raise AlreadyExists(f'{rt.plural}.{rt.group or "core"} "{name}" already exists')
        for field in _SYSTEM_METADATA:
            meta.pop(field, None)
        if rt.crd and rt.status_subresource:
            new.pop("status", None)  # the API server ignores status on create when /status exists
        self._normalise(rt, new, None)
        meta["uid"] = str(uuid.uuid4())
        meta["resourceVersion"] = self._next_rv()
        if rt.crd:
            meta["generation"] = 1
        meta["creationTimestamp"] = format_time(self._clock())
        self._objects[key] = new
        self._uids[meta["uid"]] = key
        self._emit("ADDED", new)
        if meta.get("ownerReferences"):
            self._garbage_due()
        return copy.deepcopy(new)

    def _require_namespace(self, namespace: str) -> None:
        if ("", "Namespace", "", namespace) in self._objects:
            return
        if not self._auto_namespaces:
            raise NotFound(f'namespaces "{namespace}" not found')
        self._create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})

    def _update(self, obj: Obj, *, status_only: bool) -> Obj:
        rt = self.resource_for(obj.get("apiVersion", ""), kind=obj.get("kind"))
        meta_in = obj.get("metadata") or {}
        name = meta_in.get("name") or ""
        key = self._key(rt, meta_in.get("namespace"), name)
        current = self._objects.get(key)
        if current is None:
            raise NotFound(f'{rt.plural}.{rt.group or "core"} "{name}" not found')
        if status_only and not rt.status_subresource:
            raise NotFound(f"the server could not find the requested resource ({rt.plural}/status)")
        rv = meta_in.get("resourceVersion")
        if not rv and rt.crd:
            raise Invalid(
                f'{rt.kind}.{rt.group} "{name}" is invalid: metadata.resourceVersion: must be specified for an update'
            )
        if rv and rv != current["metadata"]["resourceVersion"]:
            raise Conflict(
                f'Operation cannot be fulfilled on {rt.plural}.{rt.group or "core"} "{name}": the object has been '
                "modified; please apply your changes to the latest version and try again"
            )
        if meta_in.get("uid") and meta_in["uid"] != current["metadata"]["uid"]:
            raise Conflict(f'Precondition failed: UID in object meta: {meta_in["uid"]}')
        if status_only:
            new = copy.deepcopy(current)
            if "status" in obj:
                new["status"] = copy.deepcopy(obj["status"])
            else:
                new.pop("status", None)
        else:
            new = copy.deepcopy(obj)
            new["apiVersion"] = rt.api_version
            new["metadata"] = copy.deepcopy(meta_in)
            if rt.status_subresource:
                new.pop("status", None)
                if "status" in current:
                    new["status"] = copy.deepcopy(current["status"])
        meta = new["metadata"]
        for field in _SYSTEM_METADATA:
            meta.pop(field, None)
            if field in current["metadata"]:
                meta[field] = copy.deepcopy(current["metadata"][field])
        if rt.namespaced:
            meta["namespace"] = current["metadata"]["namespace"]
        else:
            meta.pop("namespace", None)
        if current["metadata"].get("deletionTimestamp"):
            added = set(meta.get("finalizers") or []) - set(current["metadata"].get("finalizers") or [])
            if added:
                raise Invalid(
                    f'{rt.kind} "{name}" is invalid: metadata.finalizers: Forbidden: no new finalizers can be added '
                    "if the object is being deleted"
                )
        self._normalise(rt, new, current)
        if rt.crd and _spec_part(new, rt) != _spec_part(current, rt):
            meta["generation"] = int(current["metadata"].get("generation", 1)) + 1
        if new == current:
            return copy.deepcopy(current)  # a no-op write: no new resourceVersion, no watch event
        meta["resourceVersion"] = self._next_rv()
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            meta.pop("finalizers", None)
            self._remove(key, new)
            self._garbage_due()
            return copy.deepcopy(new)
        self._objects[key] = new
        self._emit("MODIFIED", new, current)
        if meta.get("ownerReferences") != current["metadata"].get("ownerReferences"):
            self._garbage_due()
        return copy.deepcopy(new)

    def _normalise(self, rt: ResourceType, obj: Obj, current: Obj | None) -> None:
        """Apply server-side rules every write passes through: field pruning, defaulting, validation."""
        meta = obj["metadata"]
        name = meta.get("name") or ""
        problems: list[str] = []
        if not name:
            problems.append("metadata.name: Required value: name or generateName is required")
        elif len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
            problems.append(f"metadata.name: Invalid value: {name!r}: a lowercase RFC 1123 subdomain must consist of "
                            "lower case alphanumeric characters, '-' or '.', and must start and end with an "
                            "alphanumeric character")
        problems.extend(_label_problems(meta.get("labels")))
        for akey, value in (meta.get("annotations") or {}).items():
            if not isinstance(value, str):
                problems.append(f"metadata.annotations[{akey}]: Invalid value: must be a string")
        for ref in meta.get("ownerReferences") or []:
            missing = [f for f in ("apiVersion", "kind", "name", "uid") if not ref.get(f)]
            if missing:
                problems.append(f"metadata.ownerReferences: Invalid value: missing {', '.join(missing)}")
        if sum(1 for ref in meta.get("ownerReferences") or [] if ref.get("controller")) > 1:
            problems.append("metadata.ownerReferences: Invalid value: only one reference can have Controller=true")
        for field in ("labels", "annotations", "finalizers", "ownerReferences"):
            if field in meta and not meta[field]:
                del meta[field]
        if rt.kind == "Secret":
            problems.extend(_normalise_secret(obj))
        if rt.crd and rt.schema:
            pruned = _prune(obj, rt.schema, root=True)
            obj.clear()
            obj.update(pruned)
            problems.extend(self._schema_problems(rt, obj))
        if problems:
            raise Invalid(f'{rt.kind} "{name}" is invalid: ' + "; ".join(problems))

    def _schema_problems(self, rt: ResourceType, obj: Obj) -> builtins.list[str]:
        cache_key = rt.kind + "." + rt.group
        validator = self._validators.get(cache_key)
        if validator is None:
            schema = _to_json_schema(rt.schema or {})
            schema.get("properties", {}).pop("metadata", None)
            validator = jsonschema.Draft4Validator(schema)
            self._validators[cache_key] = validator
        out = []
        for error in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path)):
            path = ".".join(str(p) for p in error.absolute_path) or "<root>"
            out.append(f"{path}: Invalid value: {error.message}")
        return out

    def _delete_key(self, key: tuple[str, str, str, str]) -> None:
        current = self._objects[key]
        meta = current["metadata"]
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return
            new = copy.deepcopy(current)
            new["metadata"]["deletionTimestamp"] = format_time(self._clock())
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            new["metadata"]["resourceVersion"] = self._next_rv()
            self._objects[key] = new
            self._emit("MODIFIED", new, current)
            return
        self._remove(key, current)

    def _remove(self, key: tuple[str, str, str, str], final: Obj) -> None:
        old = self._objects.pop(key, None)
        if old is not None:
            self._uids.pop(old["metadata"]["uid"], None)
        self._emit("DELETED", final)

    def _garbage_due(self) -> None:
        """Collect now (gc_delay 0: inside the write), or schedule a pass gc_delay seconds later, as the real
        garbage collector removes dependents after their owner's delete call has returned."""
        if self.gc_delay <= 0:
            while self._collect_pass():
                pass
        elif self._gc_timer is None:
            self._gc_timer = threading.Timer(self.gc_delay, self._delayed_pass)
            self._gc_timer.daemon = True
            self._gc_timer.start()

    def _delayed_pass(self) -> None:
        """One level of dependents per pass; the next level waits another gc_delay."""
        try:
            with self._lock:
                self._gc_timer = None
                if self._collect_pass():
                    self._garbage_due()
        finally:
            self._dispatch()

    def _collect_pass(self) -> bool:
        """Background propagation: dependents with no live owner go; dangling refs next to a live owner are dropped.

        One level: owners are judged as they were when the pass started, so a dependent's own dependents wait for
        the next pass.
        """
        decisions = []
        for key, obj in list(self._objects.items()):
            refs = obj["metadata"].get("ownerReferences") or []
            if refs:
                decisions.append((key, obj, [r for r in refs if self._owner_alive(r, key)]))
        changed = False
        for key, obj, live in decisions:
            if self._objects.get(key) is not obj:
                continue
            refs = obj["metadata"]["ownerReferences"]
            if not live:
                if not obj["metadata"].get("deletionTimestamp"):
                    self._delete_key(key)
                    changed = True
            elif len(live) != len(refs):
                new = copy.deepcopy(obj)
                new["metadata"]["ownerReferences"] = live
                new["metadata"]["resourceVersion"] = self._next_rv()
                self._objects[key] = new
                self._emit("MODIFIED", new, obj)
                changed = True
        return changed

    def _owner_alive(self, ref: Obj, dependent_key: tuple[str, str, str, str]) -> bool:
        owner_key = self._uids.get(ref.get("uid", ""))
        if owner_key is None:
            return False
        owner_ns = owner_key[2]
        # A namespaced owner only counts for dependents in its own namespace (cluster-scoped dependents: never).
        return not owner_ns or owner_ns == dependent_key[2]


def _spec_part(obj: Obj, rt: ResourceType) -> Obj:
    """What bumps `generation`: everything outside metadata (and status, when /status exists)."""
    skip = {"metadata", "status"} if rt.status_subresource else {"metadata"}
    return {k: v for k, v in obj.items() if k not in skip}


def _label_problems(labels: Any) -> list[str]:
    if labels is None:
        return []
    if not isinstance(labels, dict):
        return ["metadata.labels: Invalid value: must be a map of strings"]
    out = []
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if not name or len(name) > 63 or not _LABEL_NAME.match(name) or (
            prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix))
        ):
            out.append(f"metadata.labels: Invalid value: {key!r}: not a valid label key")
        if not isinstance(value, str):
            out.append(f"metadata.labels: Invalid value: {value!r}: label values must be strings")
        elif value and (len(value) > 63 or not _LABEL_NAME.match(value)):
            out.append(f"metadata.labels: Invalid value: {value!r}: a valid label must be an empty string or consist "
                       "of at most 63 alphanumeric characters, '-', '_' or '.', starting and ending with an "
                       "alphanumeric character")
    return out


def _normalise_secret(obj: Obj) -> list[str]:
    """`stringData` is write-only: merged into base64 `data`, never stored (as the API server does)."""
    problems = []
    data = obj.get("data") or {}
    for key, value in (obj.pop("stringData", None) or {}).items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    for key, value in data.items():
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, TypeError, ValueError):
            problems.append(f"data[{key}]: Invalid value: <hidden>: not valid base64")
    if data:
        obj["data"] = data
    obj.setdefault("type", "Opaque")
    return problems


def _prune(value: Any, schema: Obj, *, root: bool = False) -> Any:
    """Drop fields the structural schema does not declare, and nulls where it does not allow them."""
    if isinstance(value, dict):
        props = schema.get("properties")
        additional = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields", False)
        embedded = root or schema.get("x-kubernetes-embedded-resource", False)
        out = {}
        for key, item in value.items():
            if embedded and key in ("apiVersion", "kind", "metadata"):
                out[key] = item
                continue
            if props and key in props:
                sub = props[key]
            elif isinstance(additional, dict):
                sub = additional
            elif additional is True or preserve:
                out[key] = item
                continue
            else:
                continue
            if item is None and not sub.get("nullable", False):
                continue
            out[key] = _prune(item, sub)
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_prune(item, schema["items"]) for item in value]
    return value


def _to_json_schema(schema: Any) -> Any:
    """OpenAPI v3 (Kubernetes flavour) → JSON Schema draft 4: `nullable` becomes a null type, formats ignored."""
    if isinstance(schema, list):
        return [_to_json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: Obj = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {k: _to_json_schema(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not", "allOf", "anyOf", "oneOf"):
            out[key] = _to_json_schema(value)
        elif key in ("format", "description", "default", "example") or key.startswith("x-kubernetes-"):
            continue
        else:
            out[key] = value
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    out.pop("nullable", None)
    return out
