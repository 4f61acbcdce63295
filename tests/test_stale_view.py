"""What a hook answers when Metacontroller syncs from a cache one write behind (informer lag).

Found with the emulator's informer_lag knob (`make chaos`, and the small chaos run in about a third of its runs):
a sync that sees the MachineSet's own status one write late answers a different status than a sync that sees it
up to date, for the same Machines. Metacontroller compares the answer with the live object and writes it, the write
makes the next stale sync differ again, and the set's status is rewritten several times a second; its
resourceVersion then moves faster than the MachineDeployment's cache, so every InPlace update of the set by the
deployment conflicts (and is dropped) and the rollout stops. Fixed in hooks/mcm/machineset_status.py: the
set's `lastOperation.lastUpdateTime` is derived from its Machines, never carried from its own observed status.
"""

from __future__ import annotations

import copy
from datetime import timedelta

from hooks.mcm import machineset
from tests.test_machineset import NOW, ctx, request


def test_a_sync_that_sees_its_status_one_write_late_answers_the_same_status() -> None:
    body = request()
    first = machineset.sync(copy.deepcopy(body), ctx(NOW))
    current = copy.deepcopy(body)
    current["parent"]["status"] = first["status"]  # the cache caught up with our write
    stale = copy.deepcopy(body)
    stale["parent"]["status"] = {**first["status"], "lastOperation": {
        **first["status"]["lastOperation"], "description": "2 of 3 machines available",
        "lastUpdateTime": "2026-11-25T09:00:00Z"}}  # the write before it, still in the cache
    later = NOW + timedelta(seconds=30)
    assert machineset.sync(stale, ctx(later))["status"] == machineset.sync(current, ctx(later))["status"]
