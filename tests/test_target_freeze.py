"""An unreachable target freezes Machines as MCM does: nothing Failed from it, visible, and it recovers by itself."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hooks.target.freeze import (
    FROZEN_RESYNC,
    RECOVERED_OPERATION,
    Action,
    MachineView,
    TargetRead,
    decide,
)

NOW = datetime(2026, 12, 3, 9, 30, tzinfo=UTC)
NODE = {"kind": "Node", "metadata": {"name": "m1"}}
SINCE = "2026-12-03T09:29:00Z"
DOWN = TargetRead(False, kind="unreachable", message="GET node m1: ConnectTimeout")


@pytest.mark.parametrize(("read", "machine", "action", "node", "since", "resync", "metric"), [
    # reachable: judge with what the API said (a Node, or None = the API says it does not exist)
    (TargetRead(True, NODE), MachineView(False), Action.JUDGE, NODE, None, 0.0, "ok"),
    (TargetRead(True, None), MachineView(False), Action.JUDGE, None, None, 0.0, "ok"),
    (TargetRead(True, None), MachineView(True), Action.JUDGE, None, None, 0.0, "ok"),
    # reachable again after a freeze: judge, restart health timeouts, clear the mark
    (TargetRead(True, NODE), MachineView(False, unreachable_since=SINCE), Action.RECOVERED, NODE, None, 0.0,
     "recovered"),
    (TargetRead(True, None), MachineView(True, unreachable_since=SINCE), Action.RECOVERED, None, None, 0.0,
     "recovered"),
    # unreachable: never "Node gone"
    (DOWN, MachineView(False), Action.FREEZE, None, "2026-12-03T09:30:00Z", FROZEN_RESYNC, "frozen"),
    (DOWN, MachineView(False, unreachable_since=SINCE), Action.FREEZE, None, SINCE, FROZEN_RESYNC, "frozen"),
    (DOWN, MachineView(True), Action.HOLD_DELETION, None, "2026-12-03T09:30:00Z", FROZEN_RESYNC, "held"),
    (DOWN, MachineView(True, drain_expired=True, unreachable_since=SINCE), Action.DELETE_DEVICE_ONLY, None, SINCE,
     FROZEN_RESYNC, "held"),
    # a Machine not deleting is frozen whatever the drain clock says
    (DOWN, MachineView(False, drain_expired=True), Action.FREEZE, None, "2026-12-03T09:30:00Z", FROZEN_RESYNC,
     "frozen"),
    (TargetRead(False, kind="config", message="kubeconfig uses exec"), MachineView(False), Action.FREEZE, None,
     "2026-12-03T09:30:00Z", FROZEN_RESYNC, "frozen"),
])
def test_the_decision_table(read: TargetRead, machine: MachineView, action: Action, node: object,
                            since: str | None, resync: float, metric: str) -> None:
    decision = decide(read, machine, NOW)
    assert (decision.action, decision.node, decision.since, decision.resync, decision.metric) == (
        action, node, since, resync, metric)
    assert decision.frozen == (action in (Action.FREEZE, Action.HOLD_DELETION, Action.DELETE_DEVICE_ONLY))


def test_a_frozen_machine_is_told_why_and_since_when() -> None:
    decision = decide(DOWN, MachineView(False, unreachable_since=SINCE), NOW)
    assert SINCE in decision.operation and "ConnectTimeout" in decision.operation and "frozen" in decision.operation


def test_a_config_problem_is_named_in_the_operation() -> None:
    decision = decide(TargetRead(False, kind="config", message="kubeconfig uses exec"), MachineView(False), NOW)
    assert "(config)" in decision.operation and "exec" in decision.operation


def test_recovery_says_the_health_timeout_was_reset_as_mcm_says_it() -> None:
    decision = decide(TargetRead(True, NODE), MachineView(False, unreachable_since=SINCE), NOW)
    assert decision.operation.startswith(RECOVERED_OPERATION) and SINCE in decision.operation


def test_an_outage_then_recovery_never_yields_a_node_to_judge_while_down() -> None:
    """A sequence of syncs: down, down, up; only the reachable read hands a Node (or None) to the state machine."""
    mark: str | None = None
    actions = []
    for read in (DOWN, DOWN, TargetRead(True, NODE)):
        decision = decide(read, MachineView(False, unreachable_since=mark), NOW)
        actions.append(decision.action)
        if decision.frozen:
            assert decision.node is None
        mark = decision.since
    assert actions == [Action.FREEZE, Action.FREEZE, Action.RECOVERED] and mark is None
