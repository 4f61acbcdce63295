"""The opt-in device listing cache: bounded staleness, single flight, never a create decision, invalidation.

Unit tests drive DeviceCache with a fake clock; the rest run the real Machine hook with the real client against
the Metal simulator and count the API calls a user would pay for.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from bench.fleet import Fleet, apply, device_id, machine_request, phase
from hooks.config import ConfigError, Settings
from hooks.context import HookContext
from hooks.equinix.client import MetalClient
from hooks.equinix.device_cache import CachedClient, CacheKey, DeviceCache, token_hash
from hooks.equinix.driver import EquinixDriver
from hooks.equinix.errors import RateLimited
from hooks.mcm import machine
from tests.clocks import ManualClock

KEY = CacheKey("http://api", token_hash("t"), "p1")


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.001)


def listing_of(*ids: str) -> Callable[[], list[dict[str, Any]]]:
    return lambda: [{"id": i, "state": "active"} for i in ids]


# ---------------------------------------------------------------------------------------------------- unit


def test_listing_is_served_for_at_most_max_age_seconds() -> None:
    clock = ManualClock()
    cache = DeviceCache(30.0, monotonic=clock)
    fetches: list[float] = []

    def fetch() -> list[dict[str, Any]]:
        fetches.append(clock.now)
        return [{"id": "d1", "state": "active"}]

    assert set(cache.listing(KEY, fetch)) == {"d1"}
    clock.now += 29.9
    cache.listing(KEY, fetch)
    assert len(fetches) == 1
    clock.now += 0.1  # exactly max_age after the fetch started: too old
    cache.listing(KEY, fetch)
    assert fetches == [1000.0, 1030.0]


def test_age_counts_from_the_start_of_a_slow_fetch() -> None:
    clock = ManualClock()
    cache = DeviceCache(10.0, monotonic=clock)

    def slow() -> list[dict[str, Any]]:
        clock.now += 8.0  # the listing took 8 s: its data is as old as its start
        return [{"id": "d1"}]

    cache.listing(KEY, slow)
    clock.now += 2.0
    calls = []
    cache.listing(KEY, lambda: calls.append(1) or [])
    assert calls == [1]


def test_keys_do_not_share_listings() -> None:
    cache = DeviceCache(30.0)
    other_token = CacheKey("http://api", token_hash("other"), "p1")
    other_url = CacheKey("http://elsewhere", token_hash("t"), "p1")
    assert set(cache.listing(KEY, listing_of("a"))) == {"a"}
    assert set(cache.listing(other_token, listing_of("b"))) == {"b"}
    assert set(cache.listing(other_url, listing_of("c"))) == {"c"}
    assert set(cache.listing(KEY, listing_of("zzz"))) == {"a"}


def test_many_threads_missing_at_once_cause_one_listing() -> None:
    cache = DeviceCache(30.0)
    release = threading.Event()
    calls = []

    def fetch() -> list[dict[str, Any]]:
        calls.append(1)
        release.wait(5)
        return [{"id": "d1"}]

    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(cache.listing(KEY, fetch))) for _ in range(16)]
    for t in threads:
        t.start()
    wait_for(lambda: cache.stats.waits == 15)  # every other thread is now waiting for the first one's listing
    release.set()
    for t in threads:
        t.join(5)
    assert calls == [1]
    assert len(results) == 16 and all(set(r) == {"d1"} for r in results)


def test_waiters_get_the_leaders_error_and_errors_are_not_cached() -> None:
    cache = DeviceCache(30.0)
    release = threading.Event()

    def failing() -> list[dict[str, Any]]:
        release.wait(5)
        raise RateLimited("rate limit exceeded", status=429, operation="list_devices")

    errors: list[BaseException] = []

    def look() -> None:
        try:
            cache.listing(KEY, failing)
        except RateLimited as exc:
            errors.append(exc)

    threads = [threading.Thread(target=look) for _ in range(4)]
    for t in threads:
        t.start()
    wait_for(lambda: cache.stats.waits == 3)
    release.set()
    for t in threads:
        t.join(5)
    assert len(errors) == 4 and cache.stats.fetches == 1
    assert set(cache.listing(KEY, listing_of("d1"))) == {"d1"}  # the next look lists again


def test_invalidation_drops_the_listing_and_any_listing_in_flight() -> None:
    cache = DeviceCache(30.0)
    cache.listing(KEY, listing_of("old"))
    cache.invalidate_project(KEY.api_url, KEY.token_hash, KEY.project_id)
    assert set(cache.listing(KEY, listing_of("new"))) == {"new"}

    # A listing that started before a mutation is handed to its caller but not kept.
    def racing() -> list[dict[str, Any]]:
        cache.invalidate_token(KEY.api_url, KEY.token_hash)  # another thread deletes a device meanwhile
        return [{"id": "stale"}]

    cache.invalidate_token(KEY.api_url, KEY.token_hash)
    assert set(cache.listing(KEY, racing)) == {"stale"}
    assert set(cache.listing(KEY, listing_of("fresh"))) == {"fresh"}


def test_settings_read_the_cache_age_from_the_environment() -> None:
    assert Settings.from_env({}).device_cache_seconds == 0.0
    assert Settings.from_env({"METAL_DEVICE_CACHE_SECONDS": "45"}).device_cache_seconds == 45.0
    with pytest.raises(ConfigError, match="METAL_DEVICE_CACHE_SECONDS"):
        Settings.from_env({"METAL_DEVICE_CACHE_SECONDS": "-1"})


def test_cache_off_leaves_the_client_unwrapped(metal_sim) -> None:
    off = EquinixDriver(Settings(metal_api_url=metal_sim.url), lambda t: MetalClient(t))
    assert isinstance(off.client_for("t"), MetalClient)
    on = EquinixDriver(Settings(metal_api_url=metal_sim.url, device_cache_seconds=5), lambda t: MetalClient(t))
    secret = "tok-4c1e9a-secret"
    wrapped = on.client_for(secret)
    assert isinstance(wrapped, CachedClient)
    assert secret not in repr(wrapped) and secret not in repr(vars(wrapped))  # only the token's hash is kept


# ----------------------------------------------------------------------------------- hooks against the simulator


def calls(metal_sim) -> dict[str, int]:
    return {k: v for k, v in metal_sim.sim.calls.items() if v}


@pytest.fixture
def cache() -> DeviceCache:
    return DeviceCache(30.0)


def context(metal_sim, cache: DeviceCache | None) -> HookContext:
    def build(token: str) -> MetalClient:
        return MetalClient(token, base_url=metal_sim.url, sleep=lambda _: None, retry_budget=1.0)

    settings = Settings(metal_api_url=metal_sim.url)
    return HookContext(settings=settings, metal=build, driver=EquinixDriver(settings, build, cache=cache))


def running_fleet(metal_sim, ctx: HookContext, n: int) -> Fleet:
    def active(ids: set[str]) -> set[str]:
        return {d["id"] for d in metal_sim.sim.devices() if d["id"] in ids and d["state"] == "active"}

    fleet = Fleet([machine_request(i, metal_sim.project, metal_sim.token) for i in range(n)],
                  lambda body: machine.sync(body, ctx), active)
    fleet.converge()
    return fleet


def test_a_steady_fleet_costs_one_listing_instead_of_a_get_per_machine(metal_sim, cache) -> None:
    fleet = running_fleet(metal_sim, context(metal_sim, None), 12)
    before = [b["object"]["status"] for b in fleet.bodies]
    cached = context(metal_sim, cache)
    fleet.sync = lambda body: machine.sync(body, cached)
    metal_sim.sim.calls.clear()
    fleet.round(only_unready=False)
    fleet.round(only_unready=False)
    assert calls(metal_sim) == {"GET /projects/{id}/devices": 1}  # two resyncs of 12 Machines, one listing
    assert [b["object"]["status"] for b in fleet.bodies] == before  # same answers as without the cache

    uncached = context(metal_sim, None)
    fleet.sync = lambda body: machine.sync(body, uncached)
    metal_sim.sim.calls.clear()
    fleet.round(only_unready=False)
    assert calls(metal_sim) == {"GET /devices/{id}": 12}
    assert [b["object"]["status"] for b in fleet.bodies] == before


def test_a_state_change_shows_within_max_age(metal_sim) -> None:
    clock = ManualClock()
    cache = DeviceCache(30.0, monotonic=clock)
    ctx = context(metal_sim, cache)
    fleet = running_fleet(metal_sim, ctx, 2)
    fleet.round(only_unready=False)  # fills the cache
    metal_sim.sim.set_device_state(device_id(fleet.bodies[0]), "failed")
    clock.now += 29.0
    fleet.round(only_unready=False)
    assert phase(fleet.bodies[0]) == "Running"  # still within the bound: the listing is 29 s old
    clock.now += 1.0
    fleet.round(only_unready=False)
    assert phase(fleet.bodies[0]) == "Failed"
    assert phase(fleet.bodies[1]) == "Running"


def test_a_stale_listing_never_leads_to_a_create(metal_sim, cache) -> None:
    """A listing taken before a device existed must not make the hooks think the device is missing."""
    ctx = context(metal_sim, cache)
    fleet = running_fleet(metal_sim, ctx, 1)
    fleet.round(only_unready=False)  # cache now holds a listing with one device

    # Another worker creates the device of a second Machine; this worker's listing does not show it.
    other_worker = context(metal_sim, None)
    second = machine_request(1, metal_sim.project, metal_sim.token)
    second = apply(second, machine.sync(second, other_worker))
    recorded = device_id(second)
    assert recorded and recorded not in cache.listing(
        CacheKey(metal_sim.url, token_hash(metal_sim.token), metal_sim.project), list)

    # Its next sync on this worker: the cache misses, a fresh GET confirms the device, nothing is created.
    metal_sim.sim.calls.clear()
    second = apply(second, machine.sync(second, ctx))
    assert device_id(second) == recorded
    assert "POST /projects/{id}/devices" not in calls(metal_sim)
    assert calls(metal_sim)["GET /devices/{id}"] == 1

    # The same Machine after a lost create answer (no id recorded): the fresh tag lookup finds the device.
    lost = machine_request(1, metal_sim.project, metal_sim.token)
    metal_sim.sim.calls.clear()
    lost = apply(lost, machine.sync(lost, ctx))
    assert device_id(lost) == recorded
    assert calls(metal_sim).get("POST /projects/{id}/devices") is None
    assert calls(metal_sim)["GET /projects/{id}/devices"] == 1  # the tag lookup, not served from the cache
    assert len([d for d in metal_sim.sim.devices() if d["hostname"] == "bench-00001"]) == 1


def test_a_device_deleted_behind_our_back_is_reported_gone_not_recreated(metal_sim) -> None:
    clock = ManualClock()
    cache = DeviceCache(30.0, monotonic=clock)
    fleet = running_fleet(metal_sim, context(metal_sim, cache), 1)
    fleet.round(only_unready=False)
    gone = device_id(fleet.bodies[0])
    metal_sim.sim.set_device_state(gone, "deleted")
    clock.now += 30.0
    metal_sim.sim.calls.clear()
    fleet.round(only_unready=False)
    assert phase(fleet.bodies[0]) == "Failed"
    assert "POST /projects/{id}/devices" not in calls(metal_sim)


def test_our_own_create_and_delete_invalidate_the_listing(metal_sim, cache) -> None:
    ctx = context(metal_sim, cache)
    fleet = running_fleet(metal_sim, ctx, 1)
    fleet.round(only_unready=False)
    key = CacheKey(metal_sim.url, token_hash(metal_sim.token), metal_sim.project)
    api = MetalClient(metal_sim.token, base_url=metal_sim.url)
    refetched: list[int] = []

    def fetch() -> list[dict[str, Any]]:
        refetched.append(1)
        return api.list_devices(metal_sim.project, per_page=1000)

    new = machine_request(7, metal_sim.project, metal_sim.token)
    new = apply(new, machine.sync(new, ctx))  # creates a device through the worker's cached client
    assert device_id(new) in cache.listing(key, fetch)
    assert refetched == [1]

    assert isinstance(ctx.driver, EquinixDriver)
    ctx.driver.client_for(metal_sim.token).delete_device(device_id(new))
    after = cache.listing(key, fetch)
    assert refetched == [1, 1]
    assert device_id(new) not in after or after[device_id(new)]["state"] != "active"
