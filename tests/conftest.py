"""Shared pytest fixtures. Keep this file small and generic; one fixture per shared need."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from emulator.metal import MetalSimulator, SimulatorServer
from tests.emulator_support import HookServer

TEST_TOKEN = "test-token"
TEST_PROJECT = "2f3c1a52-5d7e-4b8a-9c1d-2e3f4a5b6c7d"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test without `e2e` or `slow` is `unit`, so a new test file lands in `make test-unit` by default.

    e2e modules say so in one line at their top (`pytestmark = pytest.mark.e2e`). A unit test that starts a server
    anyway shows up in `pytest -m unit --durations=15`, where it is made fast or marked.
    """
    for item in items:
        if item.get_closest_marker("e2e") is None and item.get_closest_marker("slow") is None:
            item.add_marker(pytest.mark.unit)


@dataclass
class MetalSim:
    """A running Equinix Metal simulator: give `url` and `token` to a MetalClient, inspect and steer `sim`."""

    sim: MetalSimulator
    server: SimulatorServer
    url: str  # .../metal/v1
    base_url: str  # http://127.0.0.1:PORT (admin endpoints live under /_sim/)
    token: str
    project: str


@pytest.fixture
def metal_sim_factory() -> Iterator[Callable[..., MetalSim]]:
    """Builds simulators with custom settings (clock, delays, capacity, faults); all are shut down after the test.

    Keyword arguments go to MetalSimulator; `tokens` defaults to {TEST_TOKEN: [TEST_PROJECT]}.
    """
    servers: list[SimulatorServer] = []

    def make(**kwargs: Any) -> MetalSim:
        tokens = kwargs.pop("tokens", {TEST_TOKEN: [TEST_PROJECT]})
        sim = MetalSimulator(tokens, **kwargs)
        server = sim.serve()
        servers.append(server)
        return MetalSim(sim, server, server.url, server.base_url, TEST_TOKEN, TEST_PROJECT)

    yield make
    for server in servers:
        server.shutdown()


@pytest.fixture
def metal_sim(metal_sim_factory: Callable[..., MetalSim]) -> MetalSim:
    """A fresh simulator per test with zero delays, token "test-token" and one project."""
    return metal_sim_factory()


@pytest.fixture
def server() -> Iterator[HookServer]:
    """A canned-answer hook server for the emulator's tests (tests/emulator_support.py), closed after the test."""
    srv = HookServer()
    yield srv
    srv.close()
