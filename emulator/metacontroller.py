"""An emulator of Metacontroller v4.17 that runs our hooks against `emulator.store.Store` over real HTTP.

Test and demo tooling only: users run the hooks under the real Metacontroller. What it reproduces, because the
hooks can observe it: request shapes (v1 relative / v2 `ns/name` map keys, v1 dropping cluster-scoped and
other-namespace objects for namespaced parents, `Kind.group/version` outer keys), customize caching per
(uid, generation) with a TTL, related-object selection and its invalid combinations, sync versus finalize,
finalizer handling, how decorator and composite responses are applied (label/annotation merge with null delete,
decorator status null = unchanged, composite status replaced with observedGeneration, children created with a
controller ownerRef, deleted when left out, updated per updateStrategy, adoption/release, selector checks),
strict v2 decoding, HTTP 200-only success, 429 Retry-After, exponential per-key backoff, resyncAfterSeconds and
resyncPeriodSeconds, concurrency (a worker pool per controller, never one key in two workers), and the triggers
(parent, owned child, orphan, related object, own status/label writes).

API:

    controllers = load_controllers("metacontroller/")        # CompositeController/DecoratorController dicts
    mc = Metacontroller(store, controllers,
                        service_urls={"metal-machine-hooks.metal-machine-hooks": "http://127.0.0.1:PORT"},
                        workers=5, backoff_base=0.005, backoff_cap=1000.0, customize_ttl=1200.0,
                        conflict_rate=0.0, seed=0, min_resync_period=1.0, keep_bodies=False,
                        lazy_related_informers=True, cache_flush_interval=1800.0,
                        clock=time.time)          # clock: event-log timestamps only; timers use real time
    mc.start(); ...; mc.stop()        # background threads; also a context manager
    mc.restart()                      # lose queues, timers, backoff and customize cache; keep the store
    mc.wait_for(lambda store: ..., timeout=10.0, message="...")  # re-evaluated on every change, returns the value
    mc.wait_idle(timeout=10.0)        # no key queued or in a worker (delayed resyncs do not count)
    mc.events                         # list of dicts: time, controller, key, hook, outcome, error (+ details)
    mc.hook_calls(controller=None, key=None, hook=None) -> list[dict]
    mc.runtime("metal-machines").queue.pending_delays()   # per-controller queue: delayed keys, failures(key)
    mc.conflict_rate = 0.2            # a fraction of status writes answered with Conflict (plus the watch
                                      # event of the concurrent writer that caused it)

Event log entries of successful hook calls carry `request`/`response` only with keep_bodies=True (memory).
Event log outcomes: hook calls have `hook` in {"customize", "sync", "finalize"} and outcome "ok", "error" or
"retry-after"; sync-level entries have hook None and outcome "sync-error", "conflict-dropped", "create",
"update", "delete", "adopt", "release", "finalizer-added", "finalizer-removed", "ignored" (controller not
started, e.g. parent without /status) or "handler-error" (an informer handler raised). Keys read "Kind ns/name".
With lazy_related_informers (the default, as in v4.15+), the first sync that needs a related kind fails once
with "related informer not synced yet" and is retried after the first backoff step (5 ms).
webhook.etag is honoured (If-None-Match; 304/412 reuse the cached body; the cache lives until restart()).
Known simplifications: no Rolling* updates or ControllerRevisions (treated as Recreate/InPlace), no
server-side apply, no event rate limiting or overall queue qps limit, informer cache = live store (no lag).
"""

from __future__ import annotations

import contextlib
import copy
import json
import queue
import random
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from emulator import selectors
from emulator.hookcall import EtagCache, Hook, HookClient, HookError, RetryAfter, decode_response, parse_hook
from emulator.store import ApiError, Conflict, NotFound, ResourceType, Store, WatchEvent
from emulator.workqueue import WorkQueue

Obj = dict[str, Any]
T = TypeVar("T")

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


def load_controllers(path: str | Path | Iterable[str | Path], *, crds: str | Path | None = None) -> list[Obj]:
    """CompositeController and DecoratorController objects from YAML files or directories (other kinds skipped).

    With `crds` (Metacontroller's CRD file), each controller goes through a store that serves those CRDs, so
    fields the real API server would prune (typos, wrong nesting) are pruned here too.
    """
    paths = [path] if isinstance(path, str | Path) else list(path)
    docs: list[Obj] = []
    for entry in paths:
        entry = Path(entry)
        files = sorted([*entry.glob("*.yaml"), *entry.glob("*.yml")]) if entry.is_dir() else [entry]
        for file in files:
            docs.extend(d for d in yaml.safe_load_all(file.read_text()) if isinstance(d, dict))
    controllers = [d for d in docs if d.get("kind") in CONTROLLER_KINDS
                   and str(d.get("apiVersion", "")).startswith("metacontroller.k8s.io/")]
    if crds is None:
        return controllers
    scratch = Store()
    scratch.load_yaml(crds)
    return [scratch.create(c) for c in controllers]


def gvk_key(api_version: str, kind: str) -> str:
    """Outer map key of children/attachments/related: `Kind.version` (core) or `Kind.group/version`."""
    group, _, version = api_version.rpartition("/")
    return f"{kind}.{version}" if not group else f"{kind}.{group}/{version}"


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0]


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def _controller_ref(obj: Obj) -> Obj | None:
    return next((r for r in _meta(obj).get("ownerReferences") or [] if r.get("controller")), None)


def _owner_ref(parent: Obj) -> Obj:
    meta = _meta(parent)
    return {"apiVersion": parent["apiVersion"], "kind": parent["kind"], "name": meta["name"], "uid": meta["uid"],
            "controller": True, "blockOwnerDeletion": True}


def _only_status_changed(old: Obj | None, new: Obj) -> bool:
    if old is None:
        return False

    def strip(obj: Obj) -> Obj:
        out = {k: v for k, v in obj.items() if k != "status"}
        out["metadata"] = {k: v for k, v in _meta(obj).items() if k not in ("resourceVersion", "managedFields")}
        return out

    return strip(old) == strip(new)


def _merge3(observed: Any, last: Any, desired: Any) -> Any:
    """kubectl-apply style 3-way merge: desired wins, fields we applied before and dropped now are removed."""
    if not isinstance(desired, dict) or not isinstance(observed, dict):
        return copy.deepcopy(desired)
    last = last if isinstance(last, dict) else {}
    out = copy.deepcopy(observed)
    for key in last:
        if key not in desired:
            out.pop(key, None)
    for key, value in desired.items():
        out[key] = _merge3(observed[key], last.get(key), value) if key in observed else copy.deepcopy(value)
    return out


class _Runtime:
    """One CompositeController or DecoratorController: its queue, workers and customize cache."""

    def __init__(self, mc: Metacontroller, obj: Obj) -> None:
        self.mc = mc
        self.store = mc.store
        self.obj = obj
        self.kind = obj["kind"]
        self.composite = self.kind == "CompositeController"
        self.name = _meta(obj)["name"]
        spec = obj.get("spec") or {}
        self.spec = spec
        hooks = spec.get("hooks") or {}
        self.hooks: dict[str, Hook | None] = {n: parse_hook(n, hooks.get(n)) for n in ("customize", "sync", "finalize")}
        word = "compositecontroller" if self.composite else "decoratorcontroller"
        self.finalizer = f"metacontroller.io/{word}-{self.name}"
        self.endpoint_configs = spec.get("endpointConfigs") or []
        self.disabled = ""
        for hook in self.hooks.values():
            etag = (hook.webhook.get("etag") or {}) if hook else {}
            if etag.get("cacheTimeoutSeconds") is not None and etag.get("cacheCleanupSeconds") is None:
                # v4.17 dereferences the unset cleanup interval: the controller never starts.
                self.disabled = "panic: runtime error: invalid memory address or nil pointer dereference " \
                                "(webhook.etag.cacheTimeoutSeconds set without cacheCleanupSeconds)"
        self.parent_rt: ResourceType | None = None
        self.resource_rules: list[tuple[Obj, ResourceType]] = []
        self.child_rules: list[tuple[Obj, ResourceType]] = []
        self._resolve_types()
        self.queue = WorkQueue(backoff_base=mc.backoff_base, backoff_cap=mc.backoff_cap)
        self.threads: list[threading.Thread] = []
        self._customize_cache: dict[tuple[str, int], tuple[float, list[Obj]]] = {}
        self._customize_lock = threading.Lock()
        self._related_kinds: set[tuple[str, str]] = set()
        self._informers: set[tuple[str, str]] = set()
        self._headers: dict[str, dict[str, str]] = {}
        self._etags: dict[str, EtagCache] = {}
        self._next_resync = 0.0

    # ------------------------------------------------------------ configuration

    def _resolve_types(self) -> None:
        def resolve(rule: Obj) -> ResourceType:
            try:
                return self.store.resource_for(rule.get("apiVersion", ""), resource=rule.get("resource"))
            except NotFound as exc:
                raise ValueError(f"{self.kind} {self.name}: can't find resource {rule.get('resource')!r} in "
                                 f"apiVersion {rule.get('apiVersion')!r} (load the CRDs first)") from exc

        if self.composite:
            rule = self.spec.get("parentResource") or {}
            self.parent_rt = resolve(rule)
            if not self.parent_rt.crd or not self.parent_rt.status_subresource:
                self.disabled = (f"{self.parent_rt.plural}.{self.parent_rt.group} does not have subresource "
                                 "'Status' enabled")
            self.child_rules = [(r, resolve(r)) for r in self.spec.get("childResources") or []]
        else:
            self.resource_rules = [(r, resolve(r)) for r in self.spec.get("resources") or []]
            self.child_rules = [(r, resolve(r)) for r in self.spec.get("attachments") or []]

    def controller_object(self) -> Obj:
        obj = copy.deepcopy(self.obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", self.mc.controller_uid(self.name))
        meta.setdefault("generation", 1)
        obj.setdefault("status", {})
        return obj

    def rule_for(self, obj: Obj) -> tuple[Obj, ResourceType] | None:
        """The parent rule (composite parentResource or decorator resources[]) that covers obj's kind."""
        gk = (_group(obj.get("apiVersion", "")), obj.get("kind"))
        if self.composite:
            rt = self.parent_rt
            return (self.spec.get("parentResource") or {}, rt) if rt and (rt.group, rt.kind) == gk else None
        return next(((r, rt) for r, rt in self.resource_rules if (rt.group, rt.kind) == gk), None)

    def selected(self, obj: Obj) -> bool:
        found = self.rule_for(obj)
        if found is None:
            return False
        rule, _ = found
        meta = _meta(obj)
        if not selectors.matches(rule.get("labelSelector"), meta.get("labels")):
            return False
        return self.composite or selectors.matches(
            rule.get("annotationSelector"), meta.get("annotations"), match_key="matchAnnotations"
        )

    def tracked(self, obj: Obj) -> bool:
        """Enqueued at all: matches the selectors, or still carries our finalizer."""
        try:
            return self.selected(obj) or self.finalizer in (_meta(obj).get("finalizers") or [])
        except selectors.SelectorError:
            return False

    def key_of(self, obj: Obj) -> ParentKey:
        meta = _meta(obj)
        return ParentKey(_group(obj["apiVersion"]), obj["kind"], meta.get("namespace", ""), meta["name"])

    def parents(self) -> list[Obj]:
        rts = [self.parent_rt] if self.composite and self.parent_rt else [rt for _, rt in self.resource_rules]
        out: list[Obj] = []
        for rt in rts:
            out.extend(o for o in self.store.list(rt.api_version, rt.kind) if self.tracked(o))
        return out

    # ------------------------------------------------------------ informer handlers

    def enqueue_all(self) -> None:
        for parent in self.parents():
            self.queue.add(self.key_of(parent))

    def handle_event(self, event: WatchEvent) -> None:
        obj = event.object
        found = self.rule_for(obj)
        if found is not None:
            rule, _ = found
            ignore = rule.get("ignoreStatusChanges")
            if event.type == "MODIFIED" and ignore and _only_status_changed(event.old, obj):
                pass
            elif self.tracked(obj) or (event.old is not None and self.tracked(event.old)):
                self.queue.add(self.key_of(obj))
        gk = (_group(obj.get("apiVersion", "")), obj.get("kind"))
        if any((rt.group, rt.kind) == gk for _, rt in self.child_rules):
            self._child_event(event)
        if self.hooks["customize"] and gk in self._related_kinds:
            self._related_event(event)

    def _parent_gks(self) -> set[tuple[str, str]]:
        if self.composite:
            return {(self.parent_rt.group, self.parent_rt.kind)} if self.parent_rt else set()
        return {(rt.group, rt.kind) for _, rt in self.resource_rules}

    def _owner_key(self, child: Obj, ref: Obj) -> ParentKey | None:
        gk = (_group(ref.get("apiVersion", "")), ref.get("kind"))
        if gk not in self._parent_gks():
            return None
        rt = self.parent_rt if self.composite else next(rt for _, rt in self.resource_rules
                                                         if (rt.group, rt.kind) == gk)
        namespace = _meta(child).get("namespace", "") if rt and rt.namespaced else ""
        return ParentKey(gk[0], gk[1], namespace, ref.get("name", ""))

    def _child_event(self, event: WatchEvent) -> None:
        obj = event.object
        refs = [_controller_ref(obj)]
        if event.old is not None and _controller_ref(event.old) != refs[0]:
            refs.append(_controller_ref(event.old))
        owned = False
        for ref in refs:
            if ref is None:
                continue
            key = self._owner_key(obj, ref)
            if key is not None:
                owned = True
                self.queue.add(key)
        if owned or not self.composite or event.type == "DELETED" or _controller_ref(obj) is not None:
            return
        # An orphan: every parent whose selector matches it may adopt it.
        namespace = _meta(obj).get("namespace")
        for parent in self.parents():
            if self.parent_rt and self.parent_rt.namespaced and _meta(parent).get("namespace") != namespace:
                continue
            with contextlib.suppress(SyncError, selectors.SelectorError):
                if selectors.matches(self.child_selector(parent), _meta(obj).get("labels"), none_matches=False):
                    self.queue.add(self.key_of(parent))

    def _related_event(self, event: WatchEvent) -> None:
        for parent in self.parents():
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

    # ------------------------------------------------------------ workers

    def start(self, workers: int) -> None:
        if self.disabled:
            self.mc.record(self.name, "", None, "ignored", self.disabled)
            return
        for index in range(workers):
            thread = threading.Thread(target=self._work, name=f"mc-{self.name}-{index}", daemon=True)
            thread.start()
            self.threads.append(thread)
        self.enqueue_all()
        self._next_resync = time.monotonic() + self.resync_period()

    def resync_period(self) -> float:
        period = self.spec.get("resyncPeriodSeconds")
        return max(float(period), self.mc.min_resync_period) if period else 0.0

    def stop(self) -> None:
        self.queue.shut_down()
        for thread in self.threads:
            thread.join(timeout=15)
        self.threads = []

    def _work(self) -> None:
        while True:
            key = self.queue.get()
            if key is None:
                return
            try:
                self.sync(key)
            except RetryAfter as exc:
                self.queue.add_after(key, exc.seconds)
            except Exception as exc:  # every failure is retried with backoff, like the real controller
                message = f"Sync error: {exc}"
                self.mc.record(self.name, str(key), None, "sync-error", message)
                self.queue.add_rate_limited(key)
            else:
                self.queue.forget(key)
            finally:
                self.queue.done(key)
                self.mc.notify()

    # ------------------------------------------------------------ customize and related

    def related_rules(self, parent: Obj) -> list[Obj]:
        hook = self.hooks["customize"]
        if hook is None:
            return []
        meta = _meta(parent)
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
        parent_ns = _meta(parent).get("namespace", "")
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
            return selectors.matches(label_selector, _meta(obj).get("labels"))

        if has_ns_selector:
            ns_selector = rule["namespaceSelector"]

            def by_namespace_selector(obj: Obj) -> bool:
                if not labels_ok(obj):
                    return False
                ns = _meta(obj).get("namespace")
                if not ns:
                    return for_event  # events: cluster-scoped objects match; listing per namespace never sees them
                namespace_obj = self.store.try_get("v1", "Namespace", ns)
                labels = _meta(namespace_obj).get("labels") if namespace_obj else None
                return namespace_obj is not None and selectors.matches(ns_selector, labels)

            return by_namespace_selector
        if has_labels and namespace:
            return lambda obj: _meta(obj).get("namespace") == namespace and labels_ok(obj)
        if namespace or names:
            if v1_namespaced and rt.namespaced and namespace and namespace != parent_ns:
                raise SyncError(f"requested related object namespace {namespace} differs from parent object "
                                f"namespace {parent_ns}")

            def by_namespace_and_names(obj: Obj) -> bool:
                obj_ns = _meta(obj).get("namespace", "")
                if for_event and v1_namespaced:
                    if obj_ns and obj_ns != parent_ns:
                        return False
                elif namespace and obj_ns != namespace:
                    return False
                return not names or _meta(obj).get("name") in names

            return by_namespace_and_names
        if v1_namespaced and rt.namespaced:
            return lambda obj: _meta(obj).get("namespace") == parent_ns and labels_ok(obj)
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
            seen = {_meta(o)["uid"] for o in group}
            namespace = None
            if rt.namespaced and rule.get("namespace") and rule.get("namespaceSelector") is None:
                namespace = rule["namespace"]
            for obj in self.store.list(rt.api_version, rt.kind, namespace=namespace):
                if predicate(obj) and _meta(obj)["uid"] not in seen:
                    obj["apiVersion"] = rule["apiVersion"]
                    group.append(obj)
        return out

    # ------------------------------------------------------------ request maps

    def object_map(self, parent: Obj, groups: dict[str, list[Obj]], version: str) -> dict[str, dict[str, Obj]]:
        """v1: RelativeObjectMap (drops cluster-scoped/other-namespace objects for namespaced parents); v2: ns/name."""
        parent_ns = _meta(parent).get("namespace", "")
        out: dict[str, dict[str, Obj]] = {}
        for gvk, objs in groups.items():
            inner = out.setdefault(gvk, {})
            for obj in objs:
                ns, name = _meta(obj).get("namespace", ""), _meta(obj)["name"]
                if version == "v2":
                    inner[f"{ns}/{name}" if ns else name] = obj
                elif parent_ns:
                    if ns == parent_ns:
                        inner[name] = obj
                else:
                    inner[f"{ns}/{name}" if ns else name] = obj
        return out

    # ------------------------------------------------------------ hook calls

    def call(self, hook: Hook, body: Obj, response_type: str, key: ParentKey) -> Obj:
        client = self.mc.hook_client
        started = time.monotonic()
        try:
            url = client.url_for(hook)
            headers = self._headers.get(hook.name)
            if headers is None:
                # Credentials are resolved once per controller start (real: when the controller CR changes).
                headers = self._headers[hook.name] = client.headers_for(hook, url, self.endpoint_configs)
            enabled, ttl = hook.etag
            etags = self._etags.setdefault(hook.name, EtagCache(ttl)) if enabled else None
            text = client.post(hook, body, headers, url, etags, (key.kind, key.namespace, key.name))
            response = decode_response(text, response_type, strict=hook.strict)
        except RetryAfter as exc:
            self.mc.record(self.name, str(key), hook.name, "retry-after", None, retry_after=exc.seconds,
                           seconds=time.monotonic() - started)
            raise
        except HookError as exc:
            message = f"{hook.name} hook failed (version={hook.version}): {exc}"
            self.mc.record(self.name, str(key), hook.name, "error", message, seconds=time.monotonic() - started)
            raise HookError(message) from exc
        bodies = {"request": body, "response": response} if self.mc.keep_bodies else {}
        self.mc.record(self.name, str(key), hook.name, "ok", None, seconds=time.monotonic() - started, **bodies)
        return response

    # ------------------------------------------------------------ finalizer

    def sync_finalizer(self, parent: Obj, key: ParentKey) -> Obj:
        """Add our finalizer before the first hook call when a finalize hook exists; drop it when it no longer does."""
        finalizers = _meta(parent).get("finalizers") or []
        want = self.hooks["finalize"] is not None
        if want and self.finalizer not in finalizers and not _meta(parent).get("deletionTimestamp"):
            return self._edit_finalizer(parent, key, add=True)
        if not want and self.finalizer in finalizers:
            return self._edit_finalizer(parent, key, add=False)
        return parent

    def _edit_finalizer(self, parent: Obj, key: ParentKey, *, add: bool) -> Obj:
        """Live GET + update, retried on conflict (client-go RetryOnConflict)."""
        for _ in range(5):
            live = self.store.try_get(parent["apiVersion"], parent["kind"], key.name, key.namespace)
            if live is None:
                raise SyncError(f"{key} disappeared while editing finalizers")
            finalizers = list(_meta(live).get("finalizers") or [])
            if add == (self.finalizer in finalizers):
                return live
            finalizers = [*finalizers, self.finalizer] if add else [f for f in finalizers if f != self.finalizer]
            live["metadata"]["finalizers"] = finalizers
            try:
                updated = self.store.update(live)
            except Conflict:
                continue
            self.mc.record(self.name, str(key), None, "finalizer-added" if add else "finalizer-removed", None)
            return updated
        raise SyncError(f"can't {'add' if add else 'remove'} finalizer on {key}: conflicts")

    # ------------------------------------------------------------ sync entry

    def sync(self, key: Hashable) -> None:
        assert isinstance(key, ParentKey)
        rt = next((rt for rt in ([self.parent_rt] if self.composite else [r for _, r in self.resource_rules])
                   if rt and (rt.group, rt.kind) == (key.group, key.kind)), None)
        if rt is None:
            return
        parent = self.store.try_get(rt.api_version, rt.kind, key.name, key.namespace)
        if parent is None or not self.tracked(parent):
            return
        if self.composite:
            self.sync_composite(parent, key)
        else:
            self.sync_decorator(parent, rt, key)

    def _finalizing(self, parent: Obj) -> bool:
        if self.hooks["finalize"] is None:
            return False
        return bool(_meta(parent).get("deletionTimestamp")) or not self.selected(parent)

    def _resync_after(self, key: ParentKey, response: Obj) -> None:
        seconds = response.get("resyncAfterSeconds") or 0
        if seconds > 0:
            self.queue.add_after(key, float(seconds))

    # ------------------------------------------------------------ composite

    def child_selector(self, parent: Obj) -> Obj:
        if self.spec.get("generateSelector"):
            return {"matchLabels": {"controller-uid": _meta(parent)["uid"]}}
        selector: Obj = (parent.get("spec") or {}).get("selector") or {}
        if selectors.is_empty(selector):
            raise SyncError(".spec.selector must have either matchLabels, matchExpressions, or both")
        return selector

    def claim_children(self, parent: Obj, selector: Obj, key: ParentKey) -> list[Obj]:
        """Owned children that match, plus adopted orphans; owned ones that stopped matching are released."""
        parent_meta = _meta(parent)
        deleting = bool(parent_meta.get("deletionTimestamp"))
        namespace = parent_meta.get("namespace") if self.parent_rt and self.parent_rt.namespaced else None
        claimed = []
        for _, rt in self.child_rules:
            for child in self.store.list(rt.api_version, rt.kind, namespace=namespace):
                ref = _controller_ref(child)
                matched = selectors.matches(selector, _meta(child).get("labels"), none_matches=False)
                if ref is not None:
                    if ref.get("uid") != parent_meta["uid"]:
                        continue
                    if matched or deleting:
                        claimed.append(child)
                        continue
                    self._set_owner(child, None, parent_meta["uid"], key, "release")
                    continue
                if not matched or deleting or _meta(child).get("deletionTimestamp"):
                    continue
                fresh = self.store.try_get(parent["apiVersion"], parent["kind"], key.name, key.namespace)
                if fresh is None or _meta(fresh)["uid"] != parent_meta["uid"] or _meta(fresh).get("deletionTimestamp"):
                    continue
                adopted = self._set_owner(child, _owner_ref(parent), None, key, "adopt")
                if adopted is not None:
                    claimed.append(adopted)
        return claimed

    def _set_owner(self, child: Obj, add: Obj | None, remove_uid: str | None, key: ParentKey, what: str) -> Obj | None:
        refs = [r for r in _meta(child).get("ownerReferences") or [] if r.get("uid") != remove_uid]
        if add is not None:
            refs.append(add)
        child["metadata"]["ownerReferences"] = refs
        try:
            updated = self.store.update(child)
        except (Conflict, NotFound) as exc:
            raise SyncError(f"can't {what} {_meta(child).get('name')}: {exc}") from exc
        self.mc.record(self.name, str(key), None, what, None, object=f"{child['kind']} {_meta(child)['name']}")
        return updated

    def sync_composite(self, parent: Obj, key: ParentKey) -> None:
        # A parent pending deletion without our finalizer is still synced (children are left to the GC), and
        # finalize is called again after finalized: true while other finalizers keep the object around.
        parent = self.sync_finalizer(parent, key)
        selector = self.child_selector(parent)
        observed = self.claim_children(parent, selector, key)
        related = self.related_objects(parent, self.related_rules(parent))
        finalizing = self._finalizing(parent)
        hook = self.hooks["finalize"] if finalizing else self.hooks["sync"]
        if hook is None:
            raise SyncError("sync hook nil//not defined")
        children_groups: dict[str, list[Obj]] = {gvk_key(r["apiVersion"], rt.kind): [] for r, rt in self.child_rules}
        for child in observed:
            rule_api = next(r["apiVersion"] for r, rt in self.child_rules
                            if (rt.group, rt.kind) == (_group(child["apiVersion"]), child["kind"]))
            child["apiVersion"] = rule_api
            children_groups[gvk_key(rule_api, child["kind"])].append(child)
        request = {
            "controller": self.controller_object(),
            "parent": parent,
            "children": self.object_map(parent, children_groups, hook.version),
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
                child.setdefault("metadata", {}).setdefault("labels", {})["controller-uid"] = _meta(parent)["uid"]
        for child in desired:
            labels = _meta(child).get("labels") or {}
            if not selectors.matches(selector, labels, none_matches=False):
                raise SyncError(f"labels on desired child {child.get('kind')} "
                                f"{_meta(child).get('namespace', key.namespace)}/{_meta(child).get('name')} "
                                "don't match parent selector")
        manage_error: Exception | None = None
        if self._may_manage(parent):
            try:
                self.manage_children(parent, observed, desired, key)
            except SyncError as exc:
                manage_error = exc
        status = copy.deepcopy(response.get("status")) or {}
        status["observedGeneration"] = _meta(parent).get("generation")
        self._composite_status(parent, status, key)
        if manage_error is not None:
            raise manage_error

    def _may_manage(self, parent: Obj) -> bool:
        meta = _meta(parent)
        if not meta.get("deletionTimestamp"):
            return True
        finalizers = meta.get("finalizers") or []
        return self.finalizer in finalizers and not any(f in finalizers for f in GC_FINALIZERS)

    def _composite_status(self, parent: Obj, status: Obj, key: ParentKey) -> None:
        """AtomicStatusUpdate: live GET, write only if different, retry on conflict; NotFound/Conflict swallowed."""
        for _ in range(5):
            live = self.store.try_get(parent["apiVersion"], parent["kind"], key.name, key.namespace)
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

    # ------------------------------------------------------------ decorator

    def observed_attachments(self, parent: Obj) -> list[Obj]:
        meta = _meta(parent)
        namespace = meta.get("namespace") or None
        out = []
        for _, rt in self.child_rules:
            for obj in self.store.list(rt.api_version, rt.kind, namespace=namespace):
                ref = _controller_ref(obj)
                if ref and ref.get("uid") == meta["uid"] and (
                    (_meta(obj).get("annotations") or {}).get(DECORATOR_ANNOTATION) == self.name
                ):
                    out.append(obj)
        return out

    def sync_decorator(self, parent: Obj, rt: ResourceType, key: ParentKey) -> None:
        parent = self.sync_finalizer(parent, key)
        if not self.selected(parent) and self.finalizer not in (_meta(parent).get("finalizers") or []):
            return  # we just removed our finalizer from an object that no longer matches
        observed = self.observed_attachments(parent)
        related = self.related_objects(parent, self.related_rules(parent))
        finalizing = self._finalizing(parent)
        hook = self.hooks["finalize"] if finalizing else self.hooks["sync"]
        if hook is None:
            raise SyncError("no enabled hooks found")
        groups: dict[str, list[Obj]] = {gvk_key(r["apiVersion"], crt.kind): [] for r, crt in self.child_rules}
        for obj in observed:
            rule_api = next(r["apiVersion"] for r, crt in self.child_rules
                            if (crt.group, crt.kind) == (_group(obj["apiVersion"]), obj["kind"]))
            obj["apiVersion"] = rule_api
            groups[gvk_key(rule_api, obj["kind"])].append(obj)
        # The wire names differ by hook version (the Go DecoratorHookRequest types): v2 (api/v2/hooks.go) sends
        # `parent`/`children`, v1 `object`/`attachments`. Composite and customize requests are the same in both.
        object_key, attachments_key = ("parent", "children") if hook.version == "v2" else ("object", "attachments")
        request = {
            "controller": self.controller_object(),
            object_key: parent,
            attachments_key: self.object_map(parent, groups, hook.version),
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
        labels_changed = (meta.get("labels") or {}) != (_meta(parent).get("labels") or {})
        annotations_changed = (meta.get("annotations") or {}) != (_meta(parent).get("annotations") or {})
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

    # ------------------------------------------------------------ children / attachments

    def manage_children(self, parent: Obj, observed: list[Obj], desired: list[Obj], key: ParentKey) -> None:
        """Delete observed-but-not-desired, create missing, update existing per the rule's updateStrategy."""
        parent_ns = _meta(parent).get("namespace", "")
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
        observed_map = {(o["apiVersion"], o["kind"], _meta(o).get("namespace", ""), _meta(o)["name"]): o
                        for o in observed}
        for okey, obj in observed_map.items():
            if okey in desired_map or _meta(obj).get("deletionTimestamp"):
                continue
            try:
                self.store.delete(obj["apiVersion"], obj["kind"], okey[3], okey[2], uid=_meta(obj)["uid"])
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
                elif not _meta(current).get("deletionTimestamp"):
                    self._update_child(current, obj, rt, key)
            except ApiError as exc:
                errors.append(f"{obj['kind']} {_meta(obj)['name']}: {exc}")
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
                                   _owner_ref(parent)]
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
        last_text = (_meta(current).get("annotations") or {}).get(LAST_APPLIED)
        try:
            last = json.loads(last_text) if last_text else {}
        except ValueError:
            last = {}
        applied = copy.deepcopy(obj)
        applied_annotations = dict(_meta(applied).get("annotations") or {})
        applied_annotations.pop(LAST_APPLIED, None)
        if applied_annotations:
            applied["metadata"]["annotations"] = applied_annotations
        else:
            applied["metadata"].pop("annotations", None)
        merged = _merge3({k: v for k, v in current.items() if k != "status"}, last, applied)
        merged["apiVersion"], merged["kind"] = current["apiVersion"], current["kind"]
        for field in ("uid", "resourceVersion", "generation", "creationTimestamp", "ownerReferences", "namespace",
                      "name", "finalizers", "deletionTimestamp"):
            if field in _meta(current):
                merged["metadata"][field] = copy.deepcopy(_meta(current)[field])
        merged["metadata"].setdefault("annotations", {})[LAST_APPLIED] = json.dumps(applied, sort_keys=True)
        if "status" in current:
            merged["status"] = copy.deepcopy(current["status"])
        if merged == current:
            return
        if method == "Recreate":
            with contextlib.suppress(NotFound):
                self.store.delete(current["apiVersion"], current["kind"], _meta(current)["name"],
                                  _meta(current).get("namespace", ""), uid=_meta(current)["uid"])
                self.mc.record(self.name, str(key), None, "delete", "recreate",
                               object=f"{obj['kind']} {_meta(current)['name']}")
            return
        try:
            self.store.update(merged)
        except (Conflict, NotFound):
            return
        self.mc.record(self.name, str(key), None, "update", None, object=f"{obj['kind']} {_meta(current)['name']}")


class Metacontroller:
    """Runs every given controller against `store` until `stop()`."""

    def __init__(
        self,
        store: Store,
        controllers: Iterable[Obj],
        *,
        service_urls: dict[str, str] | None = None,
        workers: int = 5,
        backoff_base: float = 0.005,
        backoff_cap: float = 1000.0,
        customize_ttl: float = 1200.0,
        conflict_rate: float = 0.0,
        seed: int = 0,
        min_resync_period: float = 1.0,
        keep_bodies: bool = False,
        lazy_related_informers: bool = True,
        cache_flush_interval: float = 1800.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.controller_specs = [copy.deepcopy(c) for c in controllers]
        self.workers = workers
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.customize_ttl = customize_ttl
        self.conflict_rate = conflict_rate
        self.min_resync_period = min_resync_period
        self.keep_bodies = keep_bodies
        self.lazy_related_informers = lazy_related_informers
        self.cache_flush_interval = cache_flush_interval
        self.clock = clock
        self.events: list[Obj] = []
        self.injected_conflicts = 0  # status writes answered with an injected Conflict (conflict_rate)
        self.hook_client = HookClient(service_urls=service_urls, secret_reader=self._read_secret)
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._events_lock = threading.Lock()
        self._changed = threading.Condition()
        self._tick = 0
        self._controller_uids: dict[str, str] = {}
        self._inbox: queue.Queue[WatchEvent | None] = queue.Queue()
        self._runtimes: list[_Runtime] = []
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._unwatch: Callable[[], None] | None = None
        self._running = False

    # ------------------------------------------------------------ lifecycle

    def start(self) -> Metacontroller:
        if self._running:
            return self
        self._stopping.clear()
        self._inbox = queue.Queue()
        self._runtimes = [_Runtime(self, c) for c in self.controller_specs]
        self._unwatch = self.store.watch(self._on_store_event)
        self._threads = [threading.Thread(target=self._dispatch, name="mc-informers", daemon=True),
                         threading.Thread(target=self._resync_loop, name="mc-resync", daemon=True)]
        for thread in self._threads:
            thread.start()
        for runtime in self._runtimes:
            runtime.start(self.workers)
        self._running = True
        return self

    def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        if self._unwatch:
            self._unwatch()
        self._stopping.set()
        self._inbox.put(None)
        for runtime in self._runtimes:
            runtime.stop()
        for thread in self._threads:
            thread.join(timeout=15)
        self._threads = []
        self.notify()

    def restart(self) -> None:
        """A Metacontroller pod restart: queues, timers, backoff and the customize cache are gone."""
        self.stop()
        self.start()

    def __enter__(self) -> Metacontroller:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ plumbing

    def _on_store_event(self, event: WatchEvent) -> None:
        self._inbox.put(event)
        self.notify()

    def _dispatch(self) -> None:
        while True:
            event = self._inbox.get()
            try:
                if event is None or self._stopping.is_set():
                    return
                for runtime in self._runtimes:
                    if runtime.disabled:
                        continue
                    try:
                        runtime.handle_event(event)
                    except Exception as exc:  # an informer handler must never die
                        self.record(runtime.name, "", None, "handler-error", repr(exc))
            finally:
                self._inbox.task_done()
                self.notify()

    def _resync_loop(self) -> None:
        next_flush = time.monotonic() + self.cache_flush_interval if self.cache_flush_interval else None
        while not self._stopping.is_set():
            now = time.monotonic()
            waits = [1.0]
            if next_flush is not None and now >= next_flush:
                # --cache-flush-interval: the informers re-deliver every parent, so every parent syncs again.
                for runtime in self._runtimes:
                    if not runtime.disabled:
                        runtime.enqueue_all()
                next_flush = now + self.cache_flush_interval
            if next_flush is not None:
                waits.append(next_flush - now)
            for runtime in self._runtimes:
                period = runtime.resync_period()
                if not period or runtime.disabled:
                    continue
                if now >= runtime._next_resync:
                    runtime.enqueue_all()
                    runtime._next_resync = now + period
                waits.append(runtime._next_resync - now)
            self._stopping.wait(max(0.01, min(waits)))

    def notify(self) -> None:
        with self._changed:
            self._tick += 1
            self._changed.notify_all()

    def record(
        self, controller: str, key: str, hook: str | None, outcome: str, error: str | None, **extra: Any
    ) -> None:
        entry = {"time": self.clock(), "controller": controller, "key": key, "hook": hook, "outcome": outcome,
                 "error": error, **extra}
        with self._events_lock:
            self.events.append(entry)
        self.notify()

    def maybe_conflict(self, runtime: _Runtime, key: ParentKey) -> None:
        """Fault knob: answer this status write with a Conflict.

        A real conflict means someone else wrote the object first, and that write's watch event enqueues the
        parent again; the injected conflict brings that event along so recovery works as it would for real.
        """
        with self._rng_lock:
            hit = self.conflict_rate > 0 and self._rng.random() < self.conflict_rate
            if hit:
                self.injected_conflicts += 1
        if hit:
            runtime.queue.add(key)
            raise Conflict("injected conflict (emulator conflict_rate)")

    def controller_uid(self, name: str) -> str:
        import uuid

        return self._controller_uids.setdefault(name, str(uuid.uuid5(uuid.NAMESPACE_URL, f"controller/{name}")))

    def _read_secret(self, namespace: str, name: str) -> Obj | None:
        return self.store.try_get("v1", "Secret", name, namespace)

    # ------------------------------------------------------------ test helpers

    def runtime(self, name: str) -> _Runtime:
        """The running controller called `name` (its `.queue` shows pending delays and backoff counts)."""
        return next(r for r in self._runtimes if r.name == name)

    def hook_calls(self, controller: str | None = None, key: str | None = None, hook: str | None = None) -> list[Obj]:
        with self._events_lock:
            return [e for e in self.events if e["hook"] is not None
                    and (controller is None or e["controller"] == controller)
                    and (key is None or e["key"] == key) and (hook is None or e["hook"] == hook)]

    def wait_for(self, predicate: Callable[[Store], T], timeout: float = 10.0, message: str = "") -> T:
        """Re-evaluate `predicate(store)` after every change (and at least every 50 ms) until it is truthy."""
        deadline = time.monotonic() + timeout
        while True:
            with self._changed:
                tick = self._tick
            value = predicate(self.store)
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                recent = [e for e in self.events[-8:] if e["outcome"] not in ("ok",)]
                raise TimeoutError(f"condition not met within {timeout}s: {message or predicate!r}; "
                                   f"recent emulator events: {recent}")
            with self._changed:
                if self._tick == tick:
                    self._changed.wait(min(remaining, 0.05))

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until no key is queued or processed and the informer inbox is empty."""
        self.wait_for(lambda _: not self._inbox.unfinished_tasks and not any(r.queue.busy() for r in self._runtimes),
                      timeout, "emulator idle")
