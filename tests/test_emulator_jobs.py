"""Jobs finish the way the Job controller reports it, so hooks waiting on a drain Job can move on."""

from __future__ import annotations

from emulator.jobs import JobRunner
from emulator.store import Store
from tests.clocks import ManualClock


def job(name: str) -> dict:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": "default"},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x"}]}}}}


def conditions(store: Store, name: str) -> dict[str, str]:
    status = store.get("batch/v1", "Job", name, "default").get("status") or {}
    return {c["type"]: c["status"] for c in status.get("conditions", [])}


def test_jobs_succeed_after_the_delay_or_fail_when_told() -> None:
    store, clock = Store(), ManualClock(start=0.0)
    runner = JobRunner(store, delay=2.0, monotonic=clock)
    runner.set_outcome("bad", "failed")
    store.create(job("good"))
    store.create(job("bad"))
    runner.tick()
    assert store.get("batch/v1", "Job", "good", "default")["status"]["active"] == 1
    assert conditions(store, "good") == {}
    clock.now = 2.0
    runner.tick()
    assert conditions(store, "good")["Complete"] == "True"
    assert store.get("batch/v1", "Job", "good", "default")["status"]["succeeded"] == 1
    assert conditions(store, "bad")["Failed"] == "True"
    assert sorted(runner.finished) == ["bad", "good"]


def test_running_jobs_never_finish() -> None:
    store = Store()
    runner = JobRunner(store, default_outcome="running")
    store.create(job("slow"))
    runner.tick()
    runner.tick()
    assert conditions(store, "slow") == {} and runner.finished == []
