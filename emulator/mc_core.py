"""One controller's configuration and the steps every sync shares: selection, hook calls, finalizers."""

from __future__ import annotations

import copy
import threading
import time
from typing import TYPE_CHECKING

from emulator import selectors
from emulator.hookauth import ResolveError, resolve_auth_header, webhook_url
from emulator.hookcall import EtagCache, Hook, HookError, RetryAfter, decode_response, parse_hook
from emulator.mc_common import (
    GC_FINALIZERS,
    Obj,
    ParentKey,
    SyncError,
    group_of,
    meta_of,
)
from emulator.store import Conflict, NotFound, ResourceType
from emulator.workqueue import WorkQueue

if TYPE_CHECKING:
    from emulator.metacontroller import Metacontroller


class RuntimeCore:
    """Configuration of one controller: its parent and child types, selection, hook calls and finalizer."""

    def __init__(self, mc: Metacontroller, obj: Obj) -> None:
        self.mc = mc
        self.store = mc.cache  # the informer cache: lags the store by mc.informer_lag; writes go through
        self.live = mc.store  # for the reads Metacontroller makes with a live GET
        self.obj = obj
        self.kind = obj["kind"]
        self.composite = self.kind == "CompositeController"
        self.name = meta_of(obj)["name"]
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
        self.auth_headers: dict[str, str] = {}
        self.create_error = ""  # why the controller could not be created (retried with backoff), or ""
        self.create_attempts = 0
        self.next_create = 0.0
        self._etags: dict[str, EtagCache] = {}
        self._next_resync = 0.0

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
        gk = (group_of(obj.get("apiVersion", "")), obj.get("kind"))
        if self.composite:
            rt = self.parent_rt
            return (self.spec.get("parentResource") or {}, rt) if rt and (rt.group, rt.kind) == gk else None
        return next(((r, rt) for r, rt in self.resource_rules if (rt.group, rt.kind) == gk), None)

    def selected(self, obj: Obj) -> bool:
        found = self.rule_for(obj)
        if found is None:
            return False
        rule, _ = found
        meta = meta_of(obj)
        if not selectors.matches(rule.get("labelSelector"), meta.get("labels")):
            return False
        return self.composite or selectors.matches(
            rule.get("annotationSelector"), meta.get("annotations"), match_key="matchAnnotations"
        )

    def tracked(self, obj: Obj) -> bool:
        """Enqueued at all: matches the selectors, or still carries our finalizer."""
        try:
            return self.selected(obj) or self.finalizer in (meta_of(obj).get("finalizers") or [])
        except selectors.SelectorError:
            return False

    def key_of(self, obj: Obj) -> ParentKey:
        meta = meta_of(obj)
        return ParentKey(group_of(obj["apiVersion"]), obj["kind"], meta.get("namespace", ""), meta["name"])

    def parents(self, *, copies: bool = True) -> list[Obj]:
        """Every tracked parent (`copies=False`: read-only views of the cache, for matching events)."""
        rts = [self.parent_rt] if self.composite and self.parent_rt else [rt for _, rt in self.resource_rules]
        out: list[Obj] = []
        for rt in rts:
            out.extend(o for o in self.store.list(rt.api_version, rt.kind, copies=copies) if self.tracked(o))
        return out

    @property
    def active(self) -> bool:
        """Created and running: not refused at start (disabled) and not waiting for a creation retry."""
        return not self.disabled and not self.create_error

    def resolve_hooks(self) -> str:
        """newDecoratorController/newCompositeController's hook setup: "" or why the controller can't be created.

        Webhook URLs are checked and credentials read from their Secrets here, once; a later Secret change needs
        a controller restart, a missing Secret means no controller until a retry finds it.
        """
        for name, hook in self.hooks.items():
            if hook is None:
                continue
            try:
                webhook_url(hook.webhook)
            except ResolveError as exc:
                return str(exc)
            try:
                self.auth_headers[name] = resolve_auth_header(hook.webhook, self.endpoint_configs,
                                                              self.mc.read_object)
            except ResolveError as exc:
                return f"can't resolve endpoint config for {name} hook: {exc}"
        return ""

    def call(self, hook: Hook, body: Obj, response_type: str, key: ParentKey) -> Obj:
        client = self.mc.hook_client
        started = time.monotonic()
        try:
            url = client.url_for(hook)
            headers = {"Content-Type": "application/json"}
            if self.auth_headers.get(hook.name):  # resolved when the controller was created
                headers["Authorization"] = self.auth_headers[hook.name]
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

    def sync_finalizer(self, parent: Obj, key: ParentKey) -> Obj:
        """Add our finalizer before the first hook call when a finalize hook exists; drop it when it no longer does."""
        finalizers = meta_of(parent).get("finalizers") or []
        want = self.hooks["finalize"] is not None
        if want and self.finalizer not in finalizers and not meta_of(parent).get("deletionTimestamp"):
            return self._edit_finalizer(parent, key, add=True)
        if not want and self.finalizer in finalizers:
            return self._edit_finalizer(parent, key, add=False)
        return parent

    def _edit_finalizer(self, parent: Obj, key: ParentKey, *, add: bool) -> Obj:
        """Live GET + update, retried on conflict (client-go RetryOnConflict)."""
        for _ in range(5):
            live = self.live.try_get(parent["apiVersion"], parent["kind"], key.name, key.namespace)
            if live is None:
                raise SyncError(f"{key} disappeared while editing finalizers")
            finalizers = list(meta_of(live).get("finalizers") or [])
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

    def _finalizing(self, parent: Obj) -> bool:
        if self.hooks["finalize"] is None:
            return False
        return bool(meta_of(parent).get("deletionTimestamp")) or not self.selected(parent)

    def _sync_hook(self, parent: Obj, missing: str) -> tuple[Hook, bool]:
        """The hook this sync calls (finalize while finalizing, else sync) and whether it is finalizing; `missing`
        is Metacontroller's error text, which differs between controller kinds, when there is none."""
        finalizing = self._finalizing(parent)
        hook = self.hooks["finalize"] if finalizing else self.hooks["sync"]
        if hook is None:
            raise SyncError(missing)
        return hook, finalizing

    def _resync_after(self, key: ParentKey, response: Obj) -> None:
        seconds = response.get("resyncAfterSeconds") or 0
        if seconds > 0:
            self.queue.add_after(key, float(seconds))

    def _may_manage(self, parent: Obj) -> bool:
        meta = meta_of(parent)
        if not meta.get("deletionTimestamp"):
            return True
        finalizers = meta.get("finalizers") or []
        return self.finalizer in finalizers and not any(f in finalizers for f in GC_FINALIZERS)
