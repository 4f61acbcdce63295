"""`make bench` at toy size, so the harness cannot rot: every part runs and results.json has every figure.

No performance target is asserted here (CI machines are shared and noisy); only what must hold at any speed:
one POST per Machine, one API call per steady sync, and the cache answering a steady fleet from one listing.
"""

from __future__ import annotations

import json
import sys

import pytest

from bench import run

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the bench harness reads /proc"),
    pytest.mark.timeout(180),
]

HEADLINE = ("overhead_ratio", "api_calls_per_steady_sync", "posts_per_machine", "machineset_1000_ms",
            "machinedeployment_10_ms", "converge_500_s")


def test_quick_bench_writes_every_figure(tmp_path, capsys) -> None:
    out = tmp_path / "results.json"
    assert run.main(["--quick", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["errors"] == {"convergence_size": "ran with 5 replicas, not 500"}
    for key in HEADLINE:
        assert key in results
        if key != "converge_500_s":  # a quick run converges 5 Machines, not 500: null, with the reason
            assert isinstance(results[key], int | float) and results[key] > 0, key
    assert results["null_reasons"] == {"converge_500_s": "ran with 5 replicas, not 500"}

    parts = results["parts"]
    assert results["api_calls_per_steady_sync"] == 1.0
    assert results["posts_per_machine"] == 1.0
    for mode in ("cache_off", "cache_on"):
        assert parts["api_calls"][mode]["devices_created"] == 5
    assert parts["api_calls"]["cache_off"]["steady_resync"]["device_gets"] == 5
    cached = parts["api_calls"]["cache_on"]["steady_resync"]
    assert cached["device_gets"] == 0 and 1 <= cached["list_calls"] <= 2  # one listing per gunicorn worker at most
    assert parts["large_parents"]["machineset_1000"]["children_answered"] == 1000
    assert parts["convergence"]["converged"] and parts["convergence"]["running"] == 5
    # One Machine change syncs only its own class: ten classes cost what one does (exact byte counts, any speed).
    bytes_per_change = results["class_sync_bytes_per_machine_change"]
    assert 0 < bytes_per_change["ten_classes"] <= 1.5 * bytes_per_change["one_class"]
    assert bytes_per_change["before_ten_classes"] > 5 * bytes_per_change["ten_classes"]
    assert parts["class_syncs"]["after"]["10_classes"]["class_syncs"] == 1
    per_period = results["syncs_per_heartbeat_period"]  # Node reports re-sync their Machines (queued ones merge)
    assert per_period["metal-machines"] > 0 and parts["heartbeats"]["rounds"] >= 2, per_period
    assert set(per_period) == {"metal-machines", "metal-machinesets", "metal-machinedeployments",
                               "metal-machineclasses", "metal_api_calls"}
    assert "overhead_ratio" in capsys.readouterr().out  # the table was printed
