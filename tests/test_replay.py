"""`python -m hooks replay`: a recorded request (real v2 wire names) runs the right hook against the configured API."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hooks.__main__ import guess_route, main
from tests.conftest import MetalSim

FIXTURES = Path(__file__).parent / "fixtures"


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def replay(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, Any]:
    code = main(["replay", str(path)])
    return code, json.loads(capsys.readouterr().out)


def test_replayed_sync_fixture_creates_the_device_and_prints_the_answer(
        metal_sim: MetalSim, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = load("machine/sync-request.json")
    assert "object" in body and "attachments" in body and "parent" not in body  # recorded as Metacontroller sends it
    # The fixture's Secret already holds the simulator's token and project; only its age must be fresh, or the
    # hook (on the wall clock here) would see a Machine past its creation timeout.
    body["object"]["metadata"]["creationTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    path = tmp_path / "sync.json"
    path.write_text(json.dumps(body))
    monkeypatch.setenv("METAL_API_URL", metal_sim.url)

    code, answer = replay(path, capsys)

    assert code == 0
    (device,) = metal_sim.sim.devices()
    assert device["hostname"] == body["object"]["metadata"]["name"]
    assert answer["annotations"]["metal-machine-hooks/device-id"] == device["id"]
    assert answer["status"]["lastOperation"]["type"] == "Create"
    assert answer["status"]["currentStatus"]["phase"] == "Pending"


def test_replayed_customize_fixture_prints_the_related_rules(
        metal_sim: MetalSim, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("METAL_API_URL", metal_sim.url)

    code, answer = replay(FIXTURES / "machine" / "customize-request.json", capsys)

    assert code == 0
    assert [rule["resource"] for rule in answer["relatedResources"]] == [
        "machineclasses", "secrets", "nodes", "secrets", "machinesets", "namespaces"]
    assert sum(metal_sim.sim.calls.values()) == 0  # customize never calls the API


def test_a_request_without_object_prints_the_400(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"controller": {}, "related": {}}))
    assert main(["replay", str(path), "--hook", "/machine/sync"]) == 1
    assert "request has no `object`" in json.loads(capsys.readouterr().out)["error"]


def _as_customize(body: dict[str, Any]) -> dict[str, Any]:
    """The customize request for the same object: `controller` + `parent`, for every controller kind."""
    return {"controller": copy.deepcopy(body["controller"]), "parent": copy.deepcopy(body["object"])}


def _finalizing(body: dict[str, Any]) -> dict[str, Any]:
    return {**copy.deepcopy(body), "finalizing": True}


def _only(body: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {key: copy.deepcopy(body[key]) for key in keys}


@pytest.mark.parametrize(("fixture", "shape", "route"), [
    ("machine/sync-request.json", lambda b: b, "/machine/sync"),
    ("machine/sync-request.json", _finalizing, "/machine/finalize"),
    ("machine/sync-request.json", lambda b: _only(b, "controller", "object", "finalizing"), "/machine/sync"),
    ("machine/sync-request.json", lambda b: _only(_finalizing(b), "controller", "object", "finalizing"),
     "/machine/finalize"),
    ("machine/sync-request.json", lambda b: _only(b, "controller", "object", "attachments"), "/machine/sync"),
    ("machine/sync-request.json", _as_customize, "/machine/customize"),
    ("machine/customize-request.json", lambda b: b, "/machine/customize"),
    ("machineclass/sync-request.json", lambda b: b, "/machineclass/sync"),
    ("machineclass/sync-request.json", _finalizing, "/machineclass/finalize"),
    ("machineclass/sync-request.json", _as_customize, "/machineclass/customize"),
    ("machineset/sync-request.json", lambda b: b, "/machineset/sync"),
    ("machinedeployment/sync-request.json", lambda b: b, "/machinedeployment/sync"),
])
def test_guess_route_reads_decorator_composite_and_customize_requests(fixture: str, shape: Any, route: str) -> None:
    assert guess_route(shape(load(fixture))) == route
