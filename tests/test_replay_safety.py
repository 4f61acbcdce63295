"""`python -m hooks replay` is safe with a real recorded token: no run on a bad configuration, a dry run by default."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hooks.__main__ import main
from tests.conftest import MetalSim

FIXTURES = Path(__file__).parent / "fixtures"


def _fresh_sync_request(tmp_path: Path) -> Path:
    body = json.loads((FIXTURES / "machine" / "sync-request.json").read_text())
    machine = body.get("object") or body.get("parent")
    machine["metadata"]["creationTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    path = tmp_path / "sync.json"
    path.write_text(json.dumps(body))
    return path


def test_a_configuration_error_stops_replay_before_any_call(
        metal_sim: MetalSim, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("METAL_API_URL", metal_sim.url)
    monkeypatch.setenv("METAL_READ_TIMEOUT", "abc")
    with pytest.raises(SystemExit, match="replay refused: the configuration is invalid: METAL_READ_TIMEOUT"):
        main(["replay", str(_fresh_sync_request(tmp_path))])
    assert sum(metal_sim.sim.calls.values()) == 0
    assert metal_sim.sim.devices() == []


def test_a_dry_run_reads_the_api_but_creates_nothing_and_says_what_it_would_have_sent(
        metal_sim: MetalSim, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("METAL_API_URL", metal_sim.url)
    path = _fresh_sync_request(tmp_path)

    assert main(["replay", str(path), "--dry-run"]) == 0

    captured = capsys.readouterr()
    answer: dict[str, Any] = json.loads(captured.out)
    assert metal_sim.sim.devices() == [], "a dry run created a device"
    assert sum(metal_sim.sim.calls.values()) >= 1, "a dry run should still read the API"
    assert "dry run: nothing was written to the Metal API" in captured.err
    (line,) = [ln for ln in captured.err.splitlines() if "would have sent POST" in ln]
    assert "/devices" in line and '"hostname"' in line
    assert "userdata" not in line.lower()
    assert answer["status"]["currentStatus"]["phase"] == "Pending"


def test_without_an_explicit_api_url_replay_is_a_dry_run(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("METAL_API_URL", raising=False)
    assert main(["replay", str(FIXTURES / "machine" / "customize-request.json")]) == 0
    assert "dry run: nothing was written" in capsys.readouterr().err


def test_apply_sends_writes(
        metal_sim: MetalSim, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("METAL_API_URL", metal_sim.url)
    assert main(["replay", str(_fresh_sync_request(tmp_path)), "--apply"]) == 0
    assert len(metal_sim.sim.devices()) == 1
    assert "dry run" not in capsys.readouterr().err
