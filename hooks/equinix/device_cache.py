"""Opt-in, bounded-staleness cache of a project's device listing, shared by the Machines of one worker process.

Why: Metacontroller resyncs every Machine every `resyncPeriodSeconds`, and a steady Machine costs one
`GET /devices/{id}` per sync. The API rate-limits per token, so a fleet of N Machines spends N calls per period
just to learn that nothing changed. With this cache on, one listing of the project (every page, `per_page=1000`)
answers the steady-state look of every Machine of the worker for up to `max_age` seconds: about ceil(N/1000)
calls per period per worker instead of N.

Setting: `METAL_DEVICE_CACHE_SECONDS` (Settings.device_cache_seconds); 0, the default, turns it off.

The rule that keeps it safe (a stale or incomplete listing must never cost a duplicate, billed device):

    The cache may only CONFIRM a device that a Machine already recorded. It never decides that a device is absent.

* It is consulted only when the Machine records a device id, and its answer is used only when that device is in
  the listing, carries the Machine's ownership tag and is not being deleted. That is a steady-state observation:
  its state and addresses may be up to `max_age` seconds old, which only delays a status change by that much.
* Anything else (id not in the listing, not ours, gone, listing failed) falls through to the uncached path: a fresh
  GET and, when that finds nothing, a fresh tag lookup. Only that fresh tag lookup may lead to a create. So a miss,
  a listing taken before our device existed, or one truncated by a bug can only cost an extra GET, never a device.
* Every create, delete or tag update through a cached client invalidates the listings of that token (creates: of
  that project), whether or not the call succeeded (a lost answer may still have changed something). A listing
  whose fetch started before an invalidation is handed to the callers that waited for it but never stored, so a
  mutation is never hidden by a listing that was in flight when it happened.
* Age counts from the moment the fetch started, so nothing older than `max_age` seconds is ever served.
* Single flight: when many threads miss at once, one lists and the others wait for its answer (or its error).
  Errors are not cached: the next look after a failure lists again.

Scope: per worker process (gunicorn workers do not share memory), keyed by (API base URL, sha256 of the token,
project id); the token itself is never stored here.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# The most devices the API hands out per page (the client and the spec both cap per_page at 1000).
PAGE_SIZE = 1000
# A waiter gives up on another thread's listing after this long and lists itself (the client's own timeouts and
# retry budget end a listing much sooner; this only guards against a thread that never reports back).
WAIT_LIMIT = 60.0


@dataclass(frozen=True)
class CacheKey:
    api_url: str
    token_hash: str
    project_id: str


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class _Flight:
    """One listing in progress; waiters block on `done` and read `devices` or `error`."""

    generation: int
    done: threading.Event = field(default_factory=threading.Event)
    devices: dict[str, dict[str, Any]] | None = None
    error: BaseException | None = None


@dataclass
class _Entry:
    fetched_at: float  # monotonic time the fetch STARTED
    devices: dict[str, dict[str, Any]]


@dataclass
class CacheStats:
    hits: int = 0
    fetches: int = 0
    waits: int = 0
    invalidations: int = 0


class DeviceCache:
    """Project listings by CacheKey, each served for at most `max_age` seconds. Thread-safe."""

    def __init__(self, max_age: float, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        if max_age <= 0:
            raise ValueError("max_age must be positive; a cache that is off is no DeviceCache at all")
        self.max_age = max_age
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._entries: dict[CacheKey, _Entry] = {}
        self._flights: dict[CacheKey, _Flight] = {}
        self._generations: dict[CacheKey, int] = {}
        self.stats = CacheStats()

    def listing(self, key: CacheKey, fetch: Callable[[], list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
        """Devices by id, at most `max_age` seconds old; `fetch` lists the whole project when needed.

        Raises whatever `fetch` raised (to every thread that waited for that fetch).
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and self._monotonic() - entry.fetched_at < self.max_age:
                self.stats.hits += 1
                return entry.devices
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = _Flight(generation=self._generations.get(key, 0))
                self._flights[key] = flight
                self.stats.fetches += 1
            else:
                self.stats.waits += 1
        if not leader:
            if flight.done.wait(WAIT_LIMIT):
                if flight.error is not None:
                    raise flight.error
                assert flight.devices is not None
                return flight.devices
            return self._by_id(fetch())
        started = self._monotonic()
        try:
            devices = self._by_id(fetch())
        except BaseException as exc:
            flight.error = exc
            with self._lock:
                self._flights.pop(key, None)
            flight.done.set()
            raise
        flight.devices = devices
        with self._lock:
            self._flights.pop(key, None)
            if self._generations.get(key, 0) == flight.generation:
                self._entries[key] = _Entry(fetched_at=started, devices=devices)
        flight.done.set()
        return devices

    def invalidate(self, match: Callable[[CacheKey], bool]) -> None:
        """Forget the listings whose key matches, and make listings in flight for them unstorable."""
        with self._lock:
            self.stats.invalidations += 1
            keys = {k for k in (*self._entries, *self._flights, *self._generations) if match(k)}
            for key in keys:
                self._entries.pop(key, None)
                self._generations[key] = self._generations.get(key, 0) + 1
            # A flight that starts after this point reads the new generation; one already running keeps its old one.

    def invalidate_project(self, api_url: str, token_digest: str, project_id: str) -> None:
        target = CacheKey(api_url, token_digest, project_id)
        with self._lock:
            # Record the bump even when nothing is cached yet: a flight for this key may be running right now.
            self._generations.setdefault(target, 0)
        self.invalidate(lambda k: k == target)

    def invalidate_token(self, api_url: str, token_digest: str) -> None:
        self.invalidate(lambda k: k.api_url == api_url and k.token_hash == token_digest)

    @staticmethod
    def _by_id(devices: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {d["id"]: d for d in devices if isinstance(d, dict) and isinstance(d.get("id"), str)}


class CachedClient:
    """A MetalClient whose mutations invalidate the worker's listings and that can answer `observed_device`.

    Every other attribute is the wrapped client's, uncached (tag lookups, GETs, reservations).
    """

    def __init__(self, client: Any, cache: DeviceCache, api_url: str, token: str) -> None:
        self._client = client
        self._cache = cache
        self._api_url = api_url
        self._token_hash = token_hash(token)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def __repr__(self) -> str:
        return f"CachedClient({self._client!r})"

    def observed_device(self, project_id: str, device_id: str) -> dict[str, Any] | None:
        """The device as the (possibly `max_age`-old) project listing shows it; None when it is not listed.

        Only for confirming a device a Machine already recorded: None must never be read as "no device exists".
        """
        key = CacheKey(self._api_url, self._token_hash, project_id)
        devices = self._cache.listing(key, lambda: self._client.list_devices(project_id, per_page=PAGE_SIZE))
        device = devices.get(device_id)
        return dict(device) if device is not None else None

    def create_device(self, project_id: str, request: Any) -> Any:
        try:
            return self._client.create_device(project_id, request)
        finally:
            self._cache.invalidate_project(self._api_url, self._token_hash, project_id)

    def delete_device(self, device_id: str, **kwargs: Any) -> Any:
        try:
            return self._client.delete_device(device_id, **kwargs)
        finally:
            self._cache.invalidate_token(self._api_url, self._token_hash)

    def update_tags(self, device_id: str, tags: list[str]) -> Any:
        try:
            return self._client.update_tags(device_id, tags)
        finally:
            self._cache.invalidate_token(self._api_url, self._token_hash)


# -- one cache per worker process ------------------------------------------------------------------------------

_shared: dict[float, DeviceCache] = {}
_shared_lock = threading.Lock()


def shared_cache(max_age: float) -> DeviceCache:
    """The worker's cache for this max_age (one per process: gunicorn imports the app after forking)."""
    with _shared_lock:
        cache = _shared.get(max_age)
        if cache is None:
            cache = _shared[max_age] = DeviceCache(max_age)
        return cache


def _forget_after_fork() -> None:
    """A forked child must not serve its parent's listings or wait on its parent's flights."""
    global _shared_lock
    _shared.clear()
    _shared_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def client_for(ctx: Any, token: str) -> Any:
    """The context's client for this token, wrapped in the worker's cache when the setting turns it on.

    A test or the bench may put its own DeviceCache in `ctx.runtime.device_cache`.
    """
    client = ctx.metal(token)
    cache = ctx.runtime.device_cache
    max_age = getattr(ctx.settings, "device_cache_seconds", 0.0)
    if cache is None and max_age > 0:
        cache = shared_cache(max_age)
    if cache is None:
        return client
    return CachedClient(client, cache, ctx.settings.metal_api_url, token)
