"""Chaos convergence (issue 7): the small run of `bench.chaos`, plus the invariant monitor's own rules.

The small run is `python -m bench.chaos --machines 20` exactly as `make chaos` runs it at 200: gunicorn hook server,
Metacontroller emulator, Metal simulator with the issue's fault rates, two hook server restarts, one emulator
restart, three devices that are not ours. The monitor tests show that the checks it prints can fail.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bench.chaos import (
    CLUSTER_TAG,
    INSTALLATION,
    LAST_LINE,
    NAMESPACE,
    OTHER_INSTALLATION,
    TEAM_B,
    ChaosSimulator,
    DeviceView,
    Monitor,
    overlaps,
)
from hooks.equinix import tags, tenancy

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
PROJECT = "7f3c1a52-5d7e-4b8a-9c1d-2e3f4a5b6c7d"
OTHER_PROJECT = "0c4f7a3e-9b1d-4e2a-8f6c-5d3b2a1e9f70"
UID = "4b6c7a7e-2f0e-4a61-9d57-0f3f3b1f6a11"
OTHER_UID = "9e1d2c3b-4a5f-4e6d-8c7b-6a5f4e3d2c1b"
TENANT = tenancy.tenant_tags(INSTALLATION, NAMESPACE)


def _fields(line: str) -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\S+)", line))


@pytest.mark.timeout(240)
def test_small_chaos_run_converges_without_leaks_or_foreign_deletions() -> None:
    started = time.monotonic()
    # Every realism knob on, informer lag included (a set's status no longer depends on its own stale view:
    # tests/test_stale_view.py).
    proc = subprocess.run(
        [sys.executable, "-m", "bench.chaos", "--machines", "20", "--seed", "7", "--timeout", "150"],
        cwd=REPO, capture_output=True, text=True, timeout=220,
    )
    lines = proc.stdout.strip().splitlines()
    output = proc.stdout[-6000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, output
    last = LAST_LINE.match(lines[-1])
    assert last, f"last line is not the machine-readable one: {lines[-1]!r}\n{output}"
    machines, faults, duplicates_max, leaked, foreign_deleted, converged, late = (int(g) for g in last.groups())
    assert (machines, leaked, foreign_deleted, late) == (20, 0, 0, 0), output
    assert duplicates_max in (1, 2), output  # every Machine got a device; a duplicate may only show briefly
    assert 0 < converged <= time.monotonic() - started

    counts = _fields(next(line for line in lines if line.startswith("chaos: faults ")))
    # Every kind of fault the issue asks for happened (lost creates are too rare at 20 Machines to require).
    for kind in ("429", "5xx", "dropped", "conflicts", "metadata_conflicts"):
        assert int(counts.get(kind, "0")) > 0, f"no {kind} fault injected:\n{output}"
    assert (counts["hook_restarts"], counts["emulator_restarts"]) == ("2", "1"), output
    assert faults == int(counts["total"]) and faults >= 50, output
    api = _fields(next(line for line in lines if line.startswith("chaos: api requests=")))
    assert int(api["heartbeats"]) > 0, output  # kubelets reported during the run (the realism knobs are on)
    activity = _fields(next(line for line in lines if line.startswith("chaos: machines created=")))
    # 20 Machines, 20 more for the rollout, plus replacements of failed ones; every one deleted in the end.
    assert int(activity["created"]) >= 40 and activity["created"] == activity["deleted"], output
    assert (activity["http_5xx"], activity["http_4xx"]) == ("0", "0"), output  # hooks never answer an error
    canaries = _fields(next(line for line in lines if line.startswith("chaos: secret canary hits ")))
    assert set(canaries.values()) == {"0"} and len(canaries) == 4, output
    duplicates = _fields(next(line for line in lines if line.startswith("chaos: duplicates ")))
    assert duplicates["violations"] == "0", output
    assert "chaos: seeded devices alive=5/5" in lines, output
    phases = next(line for line in lines if line.startswith("chaos: phases "))
    assert f" {TEAM_B}=" in phases, output  # the second namespace's Machines ran through the scenario
    assert [line for line in lines if re.search(r"\] (scale-up|rollout|scale-down|delete|create) done", line)]


# ------------------------------------------------------------------------------------------------ the monitor


class FakeEmulator:
    """Just the event log the monitor reads."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def sync_done(self, machine: str, hook: str = "sync", outcome: str = "ok") -> None:
        key = f"Machine {NAMESPACE}/{machine}"
        self.events.append({"time": time.time(), "controller": "metal-machines", "key": key, "hook": hook,
                            "outcome": outcome})


def _monitor() -> tuple[ChaosSimulator, FakeEmulator, Monitor]:
    sim = ChaosSimulator({"t": [PROJECT], "f": [OTHER_PROJECT]})
    emulator = FakeEmulator()
    return sim, emulator, Monitor(sim, emulator, PROJECT, poll=1.0)  # type: ignore[arg-type]


def _ours(sim: ChaosSimulator, uid: str = UID, hostname: str = "m1") -> str:
    return sim.add_device(PROJECT, hostname=hostname, tags=[*tags.ownership_tags(uid), CLUSTER_TAG, *TENANT])["id"]


def test_a_duplicate_removed_by_the_sync_that_finds_it_is_allowed() -> None:
    sim, emulator, monitor = _monitor()
    first, second = _ours(sim), _ours(sim)
    monitor.check()
    emulator.sync_done("m1")  # may have started before the duplicate existed
    monitor.check()
    sim.set_device_state(second, "deprovisioning")
    emulator.sync_done("m1")
    monitor.check()
    report = monitor.report
    assert report.duplicates_max == 2 and len(report.episodes) == 1
    assert report.violations == [] and report.foreign_deleted == {}
    assert first != second


def test_a_duplicate_that_outlives_a_full_sync_is_a_violation() -> None:
    sim, emulator, monitor = _monitor()
    _ours(sim), _ours(sim)
    monitor.check()
    emulator.sync_done("m1", outcome="error")  # failed calls do not count as syncs
    emulator.sync_done("m1")
    emulator.sync_done("m1", hook="finalize")
    monitor.check()
    assert len(monitor.report.violations) == 1
    assert "m1 still has 2 live devices after 2 completed syncs" in monitor.report.violations[0]


@pytest.mark.parametrize("seed", ["other project", "untagged", "other cluster", "managed without uid",
                                  "other installation", "other namespace", "no tenant tags"])
def test_deleting_a_device_that_is_not_ours_is_counted(seed: str) -> None:
    sim, _, monitor = _monitor()
    mine = _ours(sim)
    project, device_tags = {
        "other project": (OTHER_PROJECT, [*tags.ownership_tags(UID), CLUSTER_TAG, *TENANT]),
        "untagged": (PROJECT, []),
        "other cluster": (PROJECT, [*tags.ownership_tags(UID), "kubernetes.io/cluster/other: 1", *TENANT]),
        "managed without uid": (PROJECT, [tags.MANAGED_TAG, CLUSTER_TAG, *TENANT]),
        "other installation": (PROJECT, [*tags.ownership_tags(UID), CLUSTER_TAG,
                                         *tenancy.tenant_tags(OTHER_INSTALLATION, NAMESPACE)]),
        "other namespace": (PROJECT, [*tags.ownership_tags(UID), CLUSTER_TAG,
                                      *tenancy.tenant_tags(INSTALLATION, "team-c")]),
        "no tenant tags": (PROJECT, [*tags.ownership_tags(UID), CLUSTER_TAG]),
    }[seed]
    victim = sim.add_device(project, hostname="victim", tags=device_tags)["id"]
    sim.set_device_state(mine, "deleted")  # ours: fine
    monitor.check()
    assert monitor.report.foreign_deleted == {}
    sim.set_device_state(victim, "deprovisioning")
    monitor.check()
    assert list(monitor.report.foreign_deleted) == [victim]


def test_deleting_the_only_device_of_a_wanted_machine_is_a_violation() -> None:
    from emulator.store import Store

    sim, emulator, _ = _monitor()
    store = Store()
    store.load_yaml(sorted(p for p in (REPO / "kubernetes" / "crds").glob("*.yaml") if p.name != "kustomization.yaml"))
    machine = store.create({"apiVersion": "machine.sapcloud.io/v1alpha1", "kind": "Machine",
                            "metadata": {"name": "m1", "namespace": NAMESPACE, "finalizers": ["test/keep"]},
                            "spec": {"class": {"kind": "MachineClass", "name": "eqx-mc"}}})
    monitor = Monitor(sim, emulator, PROJECT, poll=1.0, store=store)  # type: ignore[arg-type]
    uid = machine["metadata"]["uid"]
    first, second = _ours(sim, uid), _ours(sim, uid)
    sim.set_device_state(second, "deprovisioning")  # a duplicate: the Machine keeps another device
    monitor.check()
    assert monitor.report.violations == []
    sim.set_device_state(first, "deprovisioning")  # its last device, while the Machine is wanted
    monitor.check()
    assert len(monitor.report.violations) == 1 and f"device {first} of machine m1" in monitor.report.violations[0]
    store.delete("machine.sapcloud.io/v1alpha1", "Machine", "m1", NAMESPACE)  # deletionTimestamp, finalizer kept
    third = _ours(sim, uid)
    sim.set_device_state(third, "deprovisioning")  # finalize deleting it: fine
    monitor.check()
    assert len(monitor.report.violations) == 1 and monitor.report.foreign_deleted == {}


def _view(device_id: str, created: float, deleted_at: float | None, uid: str = UID) -> DeviceView:
    return DeviceView(device_id, PROJECT, "m1", (*tags.ownership_tags(uid), CLUSTER_TAG, *TENANT), "active", "ny",
                      "c3.small.x86", created, deleted_at)


def test_exact_overlap_counts_a_duplicate_that_sampling_would_miss() -> None:
    assert overlaps([_view("a", 0.0, 10.0), _view("b", 10.0, None)], PROJECT) == (1, 0.0)  # a replacement
    most, longest = overlaps([_view("a", 0.0, None), _view("b", 5.0, 5.004), _view("c", 0.0, 1.0, uid=OTHER_UID)],
                             PROJECT)
    assert most == 2 and longest == pytest.approx(0.004)
    assert overlaps([_view("a", 0.0, None), _view("b", 1.0, None)], PROJECT) == (2, math.inf)  # never cleaned up
