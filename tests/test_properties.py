"""Properties that must hold whatever the input and whatever the order of events.

1. Any JSON, and any mutation of the real fixture requests, sent to any hook route registered in
   `hooks.app._routes()` is answered 200 or 400 with a JSON body, never 500.
2. Random interleavings of Machine syncs and finalizes against the Equinix Metal simulator, with faults (429, 5xx,
   HTML 5xx, rate-limit 403s, dropped connections, creates whose answer is lost), with Metacontroller modelled in
   the test (a sync's answer is stored, or dropped to model a write conflict; annotations are merged; finalize is
   called only after a deletion was requested, until it answers `finalized: true`), keep these invariants:

   * "live" device of a Machine: listed by the simulator, carrying the Machine's ownership tags
     (`metal-machine-hooks:managed` and `metal-machine-hooks:uid:<uid>`), in a state other than deprovisioning or
     deleted. A deprovisioning device of ours is being deleted: it is not live, but it still counts as *remaining*.
   * no sync creates a device while the Machine already has a live one, and no call creates more than one;
   * a sync that looked the Machine's devices up by tag, without faults, leaves at most one live device;
   * finalize never creates a device;
   * when finalize answers `finalized: true`, no device of the Machine remains (not even a deprovisioning one);
   * devices that are not ours (untagged, another Machine's, our uid tag without our managed tag, another cluster's)
     are never deleted, even when a Machine's annotation points at one;
   * at the end, with faults off, every Machine can be deleted and none of their devices remains.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hooks.config import Settings
from hooks.context import HookContext
from hooks.equinix import tags
from hooks.equinix.client import MetalClient
from hooks.equinix.driver import EquinixDriver
from hooks.mcm import machine
from hooks.server import app as hook_app
from hooks.server.app import create_app
from tests.clocks import ManualClock
from tests.conftest import MetalSim
from tests.json_paths import json_paths
from tests.machine_support import (
    DECORATOR_KEYS,
    Clock,
    FakeMetal,
    apply,
    decorated,
    finalize_request,
    provider_spec,
    set_secret_value,
    sync_request,
)

pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).parent / "fixtures"
ROUTES = sorted(hook_app._routes())

# --------------------------------------------------------------------------------------- 1. any request → 200 or 400

SCALARS = (
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
ANY_JSON = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _fixture_for(route: str) -> dict[str, Any]:
    """The real request a route gets; routes without a fixture of their own get the Machine sync request."""
    kind, hook = route.strip("/").split("/", 1)
    candidates = [FIXTURES / kind / f"{hook}-request.json", FIXTURES / kind / "sync-request.json",
                  FIXTURES / "machine" / "sync-request.json"]
    if hook == "finalize" and kind == "machine":
        return finalize_request()
    path = next(p for p in candidates if p.is_file())
    return json.loads(path.read_text())


def _swap_type(value: Any) -> Any:
    """A value of another JSON type than `value`, as a careless edit or a broken client would send."""
    if isinstance(value, dict):
        return list(value.values())
    if isinstance(value, list):
        return {str(i): v for i, v in enumerate(value)}
    if isinstance(value, str):
        return len(value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return str(value)
    return {}


@st.composite
def mutated_fixture(draw: st.DrawFn) -> tuple[str, Any]:
    """A real fixture request with keys dropped, types swapped, nulls and random JSON inserted."""
    route = draw(st.sampled_from(ROUTES))
    body = copy.deepcopy(_fixture_for(route))
    paths = [p for p in json_paths(body) if p[0] != "controller"] or [("object",)]
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(paths))
        parent: Any = body
        try:
            for step in path[:-1]:
                parent = parent[step]
            leaf = path[-1]
            how = draw(st.sampled_from(("drop", "swap", "null", "random")))
            if how == "drop" and isinstance(parent, dict):
                parent.pop(leaf, None)
            elif how == "drop" and isinstance(parent, list) and leaf < len(parent):
                parent.pop(leaf)
            elif how == "swap":
                parent[leaf] = _swap_type(parent[leaf])
            elif how == "null":
                parent[leaf] = None
            else:
                parent[leaf] = draw(ANY_JSON)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or reshaped this path
    return route, body


@pytest.fixture(scope="module")
def hook_client() -> Any:
    fake = FakeMetal()
    fake.add(id="d-1", state="active")
    return create_app(Settings(), metal=fake.factory, clock=Clock()).test_client()


def _answer_is_200_or_400_json(hook_client: Any, route: str, body: Any) -> None:
    response = hook_client.post(route, data=json.dumps(body), content_type="application/json")
    assert response.status_code in (200, 400), (route, response.status_code, response.get_data(as_text=True)[:300])
    assert response.is_json
    payload = response.get_json()
    assert isinstance(payload, dict)
    if response.status_code == 400:
        assert isinstance(payload.get("error"), str) and payload["error"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(ROUTES), body=ANY_JSON)
def test_any_json_to_any_route_is_200_or_400(hook_client: Any, route: str, body: Any) -> None:
    _answer_is_200_or_400_json(hook_client, route, body)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=mutated_fixture())
def test_mutated_fixture_requests_are_200_or_400(hook_client: Any, case: tuple[str, Any]) -> None:
    _answer_is_200_or_400_json(hook_client, *case)


def test_every_route_has_a_fixture_to_mutate() -> None:
    assert "/machine/sync" in ROUTES and "/machine/finalize" in ROUTES
    for route in ROUTES:
        assert isinstance(_fixture_for(route), dict)


# ------------------------------------------------------------------------------ 2. interleavings against the simulator

MACHINES = {
    "worker-a-7f9c2": "5c1f4d2e-8a3b-4c7d-9e0f-1a2b3c4d5e6f",
    "worker-b-3d1e8": "a7e9c2b4-1f3d-4e5a-8b6c-7d9e0f1a2b3c",
}
OTHER_UID = "0d0e0f10-1112-4314-9516-171819202122"
GONE = ("deprovisioning", "deleted")
FAULT_MIXES: list[dict[str, float]] = [
    {"rate_429": 0.4, "retry_after": 0.0},
    {"rate_5xx": 0.4, "html_fraction": 0.5},
    {"rate_lost_create": 1.0},
    {"rate_drop": 0.3},
    {"rate_403_ratelimit": 0.3},
    {"rate_5xx": 0.2, "rate_drop": 0.2, "rate_lost_create": 0.5, "rate_429": 0.2, "retry_after": 0.0},
]


@dataclass
class Model:
    """Metacontroller's side: each Machine's stored object, whether its deletion was requested, what was deleted."""

    bodies: dict[str, dict[str, Any]]
    deleting: set[str] = field(default_factory=set)
    finalized: set[str] = field(default_factory=set)


def ownership(uid: str) -> list[str]:
    return tags.ownership_tags(uid)


def _request(name: str, uid: str, metal_sim: MetalSim) -> dict[str, Any]:
    body = sync_request()
    meta = decorated(body)["metadata"]
    meta.update(name=name, uid=uid)
    provider_spec(body)["projectID"] = metal_sim.project
    provider_spec(body)["metro"] = "da"
    set_secret_value(body, "apiToken", metal_sim.token)
    body["related"]["Node.v1"] = {}
    return body


def _seed_foreign(metal_sim: MetalSim) -> list[str]:
    """Devices that are not any Machine's: the hooks must never delete them."""
    project, sim = metal_sim.project, metal_sim.sim
    uid_a = MACHINES["worker-a-7f9c2"]
    seeded = [
        sim.add_device(project, hostname="worker-a-7f9c2", tags=[], state="active"),  # same name, no tags
        sim.add_device(project, hostname="worker-z", tags=ownership(OTHER_UID), state="active"),  # another Machine
        sim.add_device(project, hostname="worker-a-7f9c2", tags=[tags.uid_tag(uid_a)], state="active"),  # no managed
        sim.add_device(project, hostname="db-1", tags=["kubernetes.io/cluster/other: 1", tags.MANAGED_TAG],
                       state="active"),  # another cluster, managed tag but no uid tag
    ]
    return [d["id"] for d in seeded]


SYNC = st.tuples(st.just("sync"), st.sampled_from(sorted(MACHINES)), st.booleans() | st.just(True))
STEP = st.one_of(
    SYNC, SYNC, SYNC,
    st.tuples(st.just("delete"), st.sampled_from(sorted(MACHINES))),
    st.tuples(st.just("finalize"), st.sampled_from(sorted(MACHINES)), st.booleans()),
    st.tuples(st.just("tick"), st.integers(1, 40)),
    st.tuples(st.just("faults"), st.sampled_from(range(len(FAULT_MIXES))), st.integers(0, 1000)),
    st.tuples(st.just("calm")),
    st.tuples(st.just("duplicate"), st.sampled_from(sorted(MACHINES))),
    st.tuples(st.just("point-at-foreign"), st.sampled_from(sorted(MACHINES)), st.integers(0, 3)),
    st.tuples(st.just("device-gone"), st.sampled_from(sorted(MACHINES))),
)


class Run:
    """One interleaving: the simulator, the hooks' context and the invariants checked after every call."""

    def __init__(self, metal_sim: MetalSim, sim_clock: ManualClock) -> None:
        self.metal_sim = metal_sim
        self.sim = metal_sim.sim
        self.sim_clock = sim_clock
        self.clock = Clock()
        self.faulty = False
        self.foreign = _seed_foreign(metal_sim)
        self.model = Model({name: _request(name, uid, metal_sim) for name, uid in MACHINES.items()})
        settings = Settings(no_target_cluster=True)
        self.ctx = HookContext(settings=settings, metal=self._client, clock=self.clock,
                               driver=EquinixDriver(settings, self._client))

    def _client(self, token: str) -> MetalClient:
        return MetalClient(token, base_url=self.metal_sim.url, sleep=lambda _: None, retry_budget=2.0,
                           max_attempts=3, connect_timeout=2.0, read_timeout=5.0)

    # -- what the simulator holds

    def remaining(self, name: str) -> list[dict[str, Any]]:
        return [d for d in self.sim.devices() if tags.is_owned_by(d["tags"], MACHINES[name])]

    def live(self, name: str) -> list[dict[str, Any]]:
        return [d for d in self.remaining(name) if d["state"] not in GONE]

    def created(self) -> int:
        return self.sim.calls["POST /projects/{id}/devices"]

    def listings(self) -> int:
        return self.sim.calls["GET /projects/{id}/devices"]

    def ever(self, name: str) -> int:
        uid = MACHINES[name]
        return sum(tags.is_owned_by(d["tags"], uid) for d in self.sim.devices(include_deleted=True))

    # -- Metacontroller

    def sync(self, name: str, store: bool) -> None:
        if name in self.model.finalized or name in self.model.deleting:
            return  # Metacontroller calls finalize, not sync, once a deletion was requested
        body = self.model.bodies[name]
        live_before = {d["id"] for d in self.live(name)}
        created_before, listed_before = self.created(), self.listings()
        response = machine.sync(copy.deepcopy(body), self.ctx)
        assert set(response) <= DECORATOR_KEYS
        assert self.created() - created_before <= 1, "one sync sent more than one create"
        if live_before:
            new = {d["id"] for d in self.live(name)} - live_before
            assert not new, f"sync created {new} while {name} had the live device(s) {live_before}"
        if self.listings() > listed_before and not self.faulty:
            assert len(self.live(name)) <= 1, f"a fault-free sync that looked up {name}'s devices left duplicates"
        if store:
            self.model.bodies[name] = apply(body, response)

    def request_delete(self, name: str) -> None:
        if name not in self.model.finalized:
            self.model.deleting.add(name)

    def finalize(self, name: str, store: bool) -> bool:
        if name not in self.model.deleting or name in self.model.finalized:
            return False
        body = finalize_request(self.model.bodies[name])
        ever_before = self.ever(name)
        response = machine.finalize(copy.deepcopy(body), self.ctx)
        assert set(response) <= DECORATOR_KEYS
        assert self.ever(name) == ever_before, "finalize created a device"
        if response.get("finalized") is True:
            assert self.remaining(name) == [], f"{name} was finalized while a device of it remains"
            if store:
                self.model.finalized.add(name)
            return True
        if store:
            stored = apply(body, response)
            stored.pop("finalizing", None)
            self.model.bodies[name] = stored
        return False

    # -- the world

    def tick(self, seconds: int) -> None:
        self.sim_clock.now += seconds
        self.clock.advance(seconds=seconds)

    def set_faults(self, mix: int, seed: int) -> None:
        self.sim.set_faults(seed=seed, **FAULT_MIXES[mix])
        self.faulty = True

    def calm(self) -> None:
        self.sim.clear_faults()
        self.faulty = False

    def duplicate(self, name: str) -> None:
        """A second device with the Machine's tags, as a racing second hook server would leave behind."""
        if name not in self.model.finalized:
            self.sim.add_device(self.metal_sim.project, hostname=name, tags=ownership(MACHINES[name]),
                                metro="da", state="provisioning")

    def point_at_foreign(self, name: str, which: int) -> None:
        """A user copies another device's id onto the Machine."""
        meta = decorated(self.model.bodies[name])["metadata"]
        meta.setdefault("annotations", {})[machine.DEVICE_ID_ANNOTATION] = self.foreign[which]

    def device_gone(self, name: str) -> None:
        """Someone deletes the Machine's device in the console."""
        for device in self.live(name):
            self.sim.set_device_state(device["id"], "deprovisioning")

    def check_foreign(self) -> None:
        states = {d["id"]: d["state"] for d in self.sim.devices()}
        for device_id in self.foreign:
            assert states.get(device_id) not in (None, *GONE), f"foreign device {device_id} was deleted"

    def step(self, step: tuple) -> None:
        kind, *args = step
        actions: dict[str, Callable[..., Any]] = {
            "sync": self.sync, "delete": self.request_delete, "finalize": self.finalize, "tick": self.tick,
            "faults": self.set_faults, "calm": self.calm, "duplicate": self.duplicate,
            "point-at-foreign": self.point_at_foreign, "device-gone": self.device_gone,
        }
        actions[kind](*args)
        self.check_foreign()

    def delete_everything(self) -> None:
        """Faults off, every Machine deleted: finalize must get each one released with nothing left behind."""
        self.calm()
        for name in MACHINES:
            self.request_delete(name)
        for _ in range(12):
            for name in MACHINES:
                self.finalize(name, store=True)
            if self.model.finalized == set(MACHINES):
                break
            self.tick(15)
        assert self.model.finalized == set(MACHINES), {n: decorated(self.model.bodies[n]).get("status")
                                                       for n in set(MACHINES) - self.model.finalized}
        for name in MACHINES:
            assert self.remaining(name) == []
        self.check_foreign()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(
    faults=st.none() | st.tuples(st.sampled_from(range(len(FAULT_MIXES))), st.integers(0, 1000)),
    steps=st.lists(STEP, min_size=6, max_size=30),
)
def test_interleavings_never_duplicate_leak_or_touch_foreign_devices(
    metal_sim_factory: Callable[..., MetalSim], faults: tuple[int, int] | None, steps: list[tuple]
) -> None:
    sim_clock = ManualClock()
    metal_sim = metal_sim_factory(clock=sim_clock, provision_seconds=20.0, deprovision_seconds=10.0)
    try:
        run = Run(metal_sim, sim_clock)
        if faults is not None:
            run.set_faults(*faults)
        for step in steps:
            run.step(step)
        event(f"creates before the final deletion: {min(run.created(), 3)}{'+' if run.created() > 3 else ''}")
        event(f"faults were on: {faults is not None or any(s[0] == 'faults' for s in steps)}")
        run.delete_everything()
    finally:
        metal_sim.server.shutdown()


def test_a_lost_create_then_a_dropped_status_still_yields_one_device(
    metal_sim_factory: Callable[..., MetalSim],
) -> None:
    """The worst ordinary case spelled out: the create answer is lost and the status write conflicts, twice."""
    sim_clock = ManualClock()
    metal_sim = metal_sim_factory(clock=sim_clock, provision_seconds=20.0, deprovision_seconds=10.0)
    run = Run(metal_sim, sim_clock)
    run.set_faults(2, 0)  # every create's answer is lost
    for store in (False, False, True):
        run.sync("worker-a-7f9c2", store)
    run.calm()
    run.tick(30)
    run.sync("worker-a-7f9c2", True)
    assert len(run.live("worker-a-7f9c2")) == 1 and run.created() == 1
    status = decorated(run.model.bodies["worker-a-7f9c2"])["status"]
    assert status["currentStatus"]["phase"] == "Available"
    run.delete_everything()
