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
                        informer_lag=0.0, metadata_conflict_rate=0.0,
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
    mc.metadata_conflict_rate = 0.2   # a fraction of a decorator's labels/annotations writes that follow a
                                      # successful status write answered so (Metacontroller swallows it)
    informer_lag=0.3                  # controllers see each write late (0.15-0.45 s, fixed per kind): they list,
                                      # get and are woken from a cache that trails the store (emulator.mc_cache)

Event log entries of successful hook calls carry `request`/`response` only with keep_bodies=True (memory).
Event log outcomes: hook calls have `hook` in {"customize", "sync", "finalize"} and outcome "ok", "error" or
"retry-after"; sync-level entries have hook None and outcome "sync-error", "conflict-dropped", "create",
"update", "delete", "adopt", "release", "finalizer-added", "finalizer-removed", "ignored" (controller not
started, e.g. parent without /status) or "handler-error" (an informer handler raised). Keys read "Kind ns/name".
With lazy_related_informers (the default, as in v4.15+), the first sync that needs a related kind fails once
with "related informer not synced yet" and is retried after the first backoff step (5 ms).
webhook.etag is honoured (If-None-Match; 304/412 reuse the cached body; the cache lives until restart()).
Known simplifications: no Rolling* updates or ControllerRevisions (treated as Recreate/InPlace), no
server-side apply, no event rate limiting or overall queue qps limit; the informer cache is the live store
unless informer_lag > 0.

Layout: this module holds the Metacontroller (informer thread, resync timers, fault knobs, test helpers); each
controller is an `mc_runtime.Runtime` made of mc_core (configuration, selection, hook calls, finalizers),
mc_related (customize, related objects, request maps), mc_children (child create/update/delete),
mc_composite, mc_decorator and mc_events (which watch events enqueue which parents); mc_common has the shared
names; mc_cache is the informer cache the controllers read (the live store unless informer_lag > 0). Children are
applied by mc_apply (Metacontroller's apply.go three-way merge and ApplyUpdate rules) and hook
credentials are resolved by hookauth when a controller is created (a missing Secret: event "create-error", the
creation retried with backoff, no hook call meanwhile).
"""

from __future__ import annotations

import copy
import heapq
import itertools
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from emulator.hookcall import HookClient
from emulator.mc_cache import CachedStore
from emulator.mc_common import (
    CONTROLLER_KINDS,
    DECORATOR_ANNOTATION,
    LAST_APPLIED,
    Obj,
    ParentKey,
    SyncError,
    gvk_key,
)
from emulator.mc_runtime import Runtime
from emulator.store import Conflict, Store, WatchEvent

__all__ = ["DECORATOR_ANNOTATION", "LAST_APPLIED", "Metacontroller", "ParentKey", "Runtime", "SyncError", "gvk_key",
           "load_controllers"]

T = TypeVar("T")


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
        informer_lag: float = 0.0,
        metadata_conflict_rate: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.controller_specs = [copy.deepcopy(c) for c in controllers]
        self.workers = workers
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.customize_ttl = customize_ttl
        self.conflict_rate = conflict_rate
        self.metadata_conflict_rate = metadata_conflict_rate
        self.informer_lag = informer_lag
        self.cache = CachedStore(store, lagging=False)
        self.min_resync_period = min_resync_period
        self.keep_bodies = keep_bodies
        self.lazy_related_informers = lazy_related_informers
        self.cache_flush_interval = cache_flush_interval
        self.clock = clock
        self.events: list[Obj] = []
        self.injected_conflicts = 0  # status writes answered with an injected Conflict (conflict_rate)
        self.injected_metadata_conflicts = 0  # second writes of a decorator answered so (metadata_conflict_rate)
        self.hook_client = HookClient(service_urls=service_urls)
        self._rng = random.Random(seed)
        self._seed = seed
        self._kind_lags: dict[str, float] = {}
        self._rng_lock = threading.Lock()
        self._events_lock = threading.Lock()
        self._changed = threading.Condition()
        self._tick = 0
        self._controller_uids: dict[str, str] = {}
        self._inbox: queue.Queue[tuple[float, WatchEvent] | None] = queue.Queue()
        self._runtimes: list[Runtime] = []
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
        self._unwatch = self.store.watch(self._on_store_event)  # before the cache's first list: nothing missed
        self.cache = CachedStore(self.store, lagging=self.informer_lag > 0)
        self._runtimes = [Runtime(self, c) for c in self.controller_specs]
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
        self._inbox.put((time.monotonic(), event))
        self.notify()

    def _dispatch(self) -> None:
        """The informers: each write reaches the cache, then the handlers, its kind's lag after it was made.

        Every kind has its own informer, trailing the store by a fixed delay between 0.5 and 1.5 times
        informer_lag (drawn per kind from the seed): events of one kind stay in order, but a Machine's deletion
        may be seen before its MachineSet's, as with a real API server's separate watches.
        """
        pending: list[tuple[float, int, WatchEvent]] = []
        sequence = itertools.count()
        item: Any
        while True:
            wait = None if not pending else pending[0][0] - time.monotonic()
            if wait is None or wait > 0:
                try:
                    item = self._inbox.get(timeout=wait)
                except queue.Empty:
                    item = ()
                if item is None or self._stopping.is_set():
                    return
                if item:
                    written, event = item
                    heapq.heappush(pending, (written + self._lag_of(event), next(sequence), event))
                    continue
            _, _, event = heapq.heappop(pending)
            try:
                self._deliver(event)
            finally:
                self._inbox.task_done()
                self.notify()

    def _lag_of(self, event: WatchEvent) -> float:
        if self.informer_lag <= 0:
            return 0.0
        kind = f"{event.object.get('apiVersion', '').rpartition('/')[0]}/{event.object.get('kind')}"
        if kind not in self._kind_lags:
            self._kind_lags[kind] = self.informer_lag * random.Random(f"{self._seed}:{kind}").uniform(0.5, 1.5)
        return self._kind_lags[kind]

    def _deliver(self, event: WatchEvent) -> None:
        self.cache.apply(event)
        for runtime in self._runtimes:
            if not runtime.active:
                continue
            try:
                runtime.handle_event(event)
            except Exception as exc:  # an informer handler must never die
                self.record(runtime.name, "", None, "handler-error", repr(exc))

    def _resync_loop(self) -> None:
        next_flush = time.monotonic() + self.cache_flush_interval if self.cache_flush_interval else None
        while not self._stopping.is_set():
            now = time.monotonic()
            waits = [1.0]
            if next_flush is not None and now >= next_flush:
                # --cache-flush-interval: the informers re-deliver every parent, so every parent syncs again.
                for runtime in self._runtimes:
                    if runtime.active:
                        runtime.enqueue_all()
                next_flush = now + self.cache_flush_interval
            if next_flush is not None:
                waits.append(next_flush - now)
            for runtime in self._runtimes:
                if runtime.create_error and not runtime.disabled:
                    if now >= runtime.next_create:
                        runtime.start(self.workers)  # the controller-runtime reconcile retried with backoff
                    waits.append(runtime.next_create - now)
                    continue
                period = runtime.resync_period()
                if not period or not runtime.active:
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

    def maybe_conflict(self, runtime: Any, key: ParentKey, *, metadata: bool = False) -> None:
        """Fault knob: answer this status write (conflict_rate) or, with `metadata`, the labels/annotations write
        that follows a decorator's successful status write (metadata_conflict_rate) with a Conflict.

        A real conflict means someone else wrote the object first, and that write's watch event enqueues the
        parent again; the injected conflict brings that event along so recovery works as it would for real.
        """
        rate = self.metadata_conflict_rate if metadata else self.conflict_rate
        with self._rng_lock:
            hit = rate > 0 and self._rng.random() < rate
            if hit and metadata:
                self.injected_metadata_conflicts += 1
            elif hit:
                self.injected_conflicts += 1
        if hit:
            runtime.queue.add(key)
            raise Conflict("injected conflict (emulator conflict_rate)")

    def controller_uid(self, name: str) -> str:
        return self._controller_uids.setdefault(name, str(uuid.uuid5(uuid.NAMESPACE_URL, f"controller/{name}")))

    def read_object(self, kind: str, namespace: str, name: str) -> Obj | None:
        """A live GET of a Secret or ConfigMap (what Metacontroller's k8s client reads hook credentials with)."""
        return self.store.try_get("v1", kind, name, namespace)

    def runtime(self, name: str) -> Runtime:
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
        try:
            self.wait_for(lambda _: not self._inbox.unfinished_tasks and not any(r.queue.busy()
                                                                               for r in self._runtimes),
                          timeout, "emulator idle")
        except TimeoutError as exc:
            busy = {r.name: r.queue.describe() for r in self._runtimes if r.queue.busy()}
            raise TimeoutError(f"{exc}; informer inbox {self._inbox.unfinished_tasks}, busy queues {busy}, "
                               f"last hook calls {[(e['controller'], e['key']) for e in self.hook_calls()[-6:]]}") \
                from None
