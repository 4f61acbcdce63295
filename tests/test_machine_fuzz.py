"""Whatever shape a request takes, the Machine hooks answer with a decorator response or a 400, never a crash."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hooks.context import BadRequest
from hooks.mcm import machine
from tests.json_paths import json_paths
from tests.machine_support import DECORATOR_KEYS, Clock, FakeMetal, context, finalize_request, load, node, sync_request

pytestmark = pytest.mark.slow

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def _base(kind: str) -> dict[str, Any]:
    body = sync_request()
    body["related"]["Node.v1"] = {"worker-a-7f9c2": node()}
    body["object"]["status"] = {
        "currentStatus": {"phase": "Running", "lastUpdateTime": "2026-11-25T10:05:00Z"},
        "lastOperation": {"description": "x", "state": "Successful", "type": "Create"},
        "addresses": [{"type": "Hostname", "address": "worker-a-7f9c2"}],
        "conditions": [{"type": "Ready", "status": "True"}],
    }
    body["object"]["metadata"]["annotations"] = {"metal-machine-hooks/device-id": "d-1"}
    return finalize_request(body) if kind == "finalize" else body


BASES = {"sync": _base("sync"), "finalize": _base("finalize"), "customize": load("customize-request.json")}
PATHS = {kind: [p for p in json_paths(body) if p[0] != "controller"] for kind, body in BASES.items()}


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    kind = draw(st.sampled_from(sorted(BASES)))
    body = copy.deepcopy(BASES[kind])
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS[kind]))
        target = body
        try:
            for step in path[:-1]:
                target = target[step]
            target[path[-1]] = draw(JSON)
        except (KeyError, IndexError, TypeError):
            continue
    return kind, body


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_any_request_gets_an_answer_or_a_400(case: tuple[str, dict[str, Any]]) -> None:
    kind, body = case
    fake = FakeMetal()
    fake.add(id="d-1", state="active")
    hook = {"sync": machine.sync, "finalize": machine.finalize, "customize": machine.customize}[kind]
    try:
        response = hook(body, context(fake, Clock()))
    except BadRequest:
        return
    if kind == "customize":
        assert set(response) == {"relatedResources"}
    else:
        assert set(response) <= DECORATOR_KEYS
