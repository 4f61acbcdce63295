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

from hooks.mcm import machinedeployment as md
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


def test_a_finished_deployment_answers_the_same_status_from_two_views_of_itself() -> None:
    """Two syncs of a converged MachineDeployment that saw its conditions stamped at different moments (one from
    a cache one write behind) answer one status, so Metacontroller's write-back cannot alternate between them.
    The times come from the sets: Progressing since the new set's creation, updated when the sets last reported;
    Available never later than the sets' report."""
    from tests.test_machinedeployment import NS, OLD
    from tests.test_machinedeployment import ctx as md_ctx
    from tests.test_machinedeployment import request as md_request

    body = md_request()
    body["parent"]["spec"]["template"] = copy.deepcopy(
        body["children"][md.SET_KEY][f"{NS}/{OLD}"]["spec"]["template"])
    del body["parent"]["spec"]["template"]["metadata"]["labels"][md.HASH_LABEL]
    views = []
    for stamp in ("2026-11-25T09:20:05Z", "2026-11-25T09:20:06Z"):  # each written by a sync at its own `now`
        seen = copy.deepcopy(body)
        for cond in seen["parent"]["status"]["conditions"]:
            cond.update(lastUpdateTime=stamp, lastTransitionTime=stamp)
        views.append(md.sync(seen, md_ctx(NOW + timedelta(hours=1)))["status"])
    assert views[0] == views[1]
    times = {c["type"]: (c["lastTransitionTime"], c["lastUpdateTime"]) for c in views[0]["conditions"]}
    set_created = body["children"][md.SET_KEY][f"{NS}/{OLD}"]["metadata"]["creationTimestamp"]
    set_reported = body["children"][md.SET_KEY][f"{NS}/{OLD}"]["status"]["lastOperation"]["lastUpdateTime"]
    assert times == {"Available": (set_reported, set_reported), "Progressing": (set_created, set_reported)}
