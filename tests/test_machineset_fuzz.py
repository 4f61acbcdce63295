"""Odd requests never crash the set, deployment or class hooks: they answer, or refuse with BadRequest (HTTP 400).

Each example replaces one field of a fixture request (anywhere in it) by an arbitrary JSON value.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hooks.config import Settings
from hooks.context import BadRequest, HookContext
from hooks.mcm import machineclass, machinedeployment, machineset
from tests.json_paths import json_paths

pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).parent / "fixtures"
COMPOSITE = {"status", "children", "resyncAfterSeconds", "finalized"}
DECORATOR = {"labels", "annotations", "status", "resyncAfterSeconds", "finalized"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**10) | st.text(max_size=8) | st.sampled_from(["3", "25%", "-1%"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def mutated(base: dict[str, Any], index: int, value: Any) -> dict[str, Any]:
    body = copy.deepcopy(base)
    where = [p for p in json_paths(body) if p[0] != "controller"]
    path = where[index % len(where)]
    target = body
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return body


def offline_ctx() -> HookContext:
    def no_api(token: str) -> Any:
        raise AssertionError("no API in this test")

    return HookContext(settings=Settings(), metal=no_api, clock=lambda: datetime(2026, 11, 25, 10, tzinfo=UTC))


def check(hook: Callable[[dict[str, Any], HookContext], dict[str, Any]], body: dict[str, Any],
          allowed: set[str]) -> None:
    try:
        response = hook(body, offline_ctx())
    except BadRequest:
        return
    assert set(response) <= allowed
    json.dumps(response)  # serialisable


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


SET_BODY = load("machineset/sync-request.json")
DEPLOYMENT_BODY = load("machinedeployment/sync-request.json")
CLASS_BODY = load("machineclass/sync-request.json")
CLASS_BODY["object"]["provider"] = "NotEquinix"  # no scan, so no API


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10**6), json_values)
def test_machineset_hook_never_crashes(index: int, value: Any) -> None:
    check(machineset.sync, mutated(SET_BODY, index, value), COMPOSITE)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10**6), json_values)
def test_machinedeployment_hook_never_crashes(index: int, value: Any) -> None:
    check(machinedeployment.sync, mutated(DEPLOYMENT_BODY, index, value), COMPOSITE)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10**6), json_values)
def test_machineclass_hooks_never_crash(index: int, value: Any) -> None:
    body = mutated(CLASS_BODY, index, value)
    check(machineclass.sync, body, DECORATOR)
    check(machineclass.finalize, body, DECORATOR)
