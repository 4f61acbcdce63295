"""Table tests of the rollout arithmetic, with the classic cases of Kubernetes' deployment controller tests."""

from __future__ import annotations

import pytest

from hooks.mcm import rollout
from hooks.mcm.rollout import SetView, Strategy

OLD = "2026-01-01T00:00:00Z"
NEWER = "2026-02-01T00:00:00Z"


def rolling(surge: int | str | None, unavailable: int | str | None) -> Strategy:
    return Strategy(rollout.ROLLING, surge, unavailable)


# ------------------------------------------------------------------------------------------ maxSurge / maxUnavailable


@pytest.mark.parametrize(
    ("surge", "unavailable", "desired", "expected"),
    [
        ("0%", "0%", 0, (0, 1)),
        ("39%", "39%", 10, (4, 3)),  # surge rounds up, unavailable rounds down
        (None, "39%", 10, (0, 3)),
        ("39%", None, 10, (4, 0)),
        (None, None, 10, (0, 1)),  # both zero: one may be unavailable, or nothing could ever move
        ("25%", "25%", 3, (1, 0)),
        (1, 1, 3, (1, 1)),
        ("10%", "0%", 3, (1, 0)),
        ("0%", "10%", 3, (0, 1)),  # rounds down to 0, fence post makes it 1
    ],
)
def test_resolve_fenceposts(surge: str | None, unavailable: str | None, desired: int,
                            expected: tuple[int, int]) -> None:
    assert rollout.resolve_fenceposts(surge, unavailable, desired) == expected


@pytest.mark.parametrize(("surge", "unavailable"), [("oops", "39%"), ("55%", "urg"), ("5", 1), (True, 1)])
def test_resolve_fenceposts_rejects_non_numbers(surge: object, unavailable: object) -> None:
    with pytest.raises(ValueError, match="integer or a percentage"):
        rollout.resolve_fenceposts(surge, unavailable, 10)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("replicas", "unavailable", "strategy_type", "expected"),
    [
        (10, 5, rollout.ROLLING, 5),
        (10, 10, rollout.ROLLING, 10),
        (5, 10, rollout.ROLLING, 5),  # never more than the replicas
        (0, 10, rollout.ROLLING, 0),
        (10, 5, rollout.RECREATE, 0),
        (10, "50%", rollout.ROLLING, 5),
        (10, "100%", rollout.ROLLING, 10),
        (5, "100%", rollout.ROLLING, 5),
    ],
)
def test_max_unavailable(replicas: int, unavailable: int | str, strategy_type: str, expected: int) -> None:
    assert rollout.max_unavailable(replicas, Strategy(strategy_type, 1, unavailable)) == expected


@pytest.mark.parametrize(
    ("strategy", "fragment"),
    [
        (rolling(0, 0), "both 0"),
        (rolling("0%", "0%"), "both 0"),
        (rolling(0, "0%"), "both 0"),
        (rolling(-1, 1), "maxSurge: Invalid value: -1: must be greater than or equal to 0"),
        (rolling(1, "150%"), "must not be greater than 100%"),
        (rolling("1", 1), "must be an integer or a percentage"),
        (Strategy("InPlaceUpdate"), "not supported"),
        (Strategy("BlueGreen"), "Unsupported value: 'BlueGreen'"),
    ],
)
def test_strategy_problems_name_the_field(strategy: Strategy, fragment: str) -> None:
    problems = rollout.strategy_problems(strategy)
    assert problems and any(fragment in p for p in problems), problems


@pytest.mark.parametrize("strategy", [rolling(1, 0), rolling(0, 1), rolling("25%", "25%"), Strategy("Recreate")])
def test_usable_strategies_have_no_problems(strategy: Strategy) -> None:
    assert rollout.strategy_problems(strategy) == []


# ------------------------------------------------------------------------------------------------- NewRSNewReplicas


@pytest.mark.parametrize(
    ("strategy_type", "replicas", "new_replicas", "surge", "expected"),
    [
        (rollout.ROLLING, 1, 5, 1, 5),  # cannot scale up: already at the surge limit
        (rollout.ROLLING, 6, 2, 10, 6),  # scale up, but not past the deployment's replicas
        (rollout.RECREATE, 3, 1, 1, 3),
    ],
)
def test_new_set_replicas(strategy_type: str, replicas: int, new_replicas: int, surge: int, expected: int) -> None:
    other = SetView("rs5", 5, created=OLD)
    new = SetView("new", new_replicas, created=NEWER)
    strategy = Strategy(strategy_type, surge, 1)
    assert rollout.new_set_replicas(replicas, strategy, [other], new) == expected


def test_new_set_replicas_counts_machines_still_being_deleted() -> None:
    # The old set was scaled to 2, but 3 machines still exist: no room for a surge machine yet.
    old = SetView("old", 2, status_replicas=3, available=2, created=OLD)
    new = SetView("new", 1, status_replicas=1, created=NEWER)
    assert rollout.new_set_replicas(3, rolling(1, 1), [old, new], new) == 1
    old.status_replicas = 2
    assert rollout.new_set_replicas(3, rolling(1, 1), [old, new], new) == 2


# ---------------------------------------------------------------------------------------------- reconcileNewReplicaSet


@pytest.mark.parametrize(
    ("replicas", "surge", "old_replicas", "new_replicas", "changed", "expected"),
    [
        (10, 0, 10, 0, False, 0),
        (10, 2, 10, 0, True, 2),
        (10, 2, 5, 0, True, 7),
        (10, 2, 10, 2, False, 2),
        (2, 2, 2, 4, True, 2),  # scale down
    ],
)
def test_reconcile_new(replicas: int, surge: int, old_replicas: int, new_replicas: int, changed: bool,
                       expected: int) -> None:
    old = SetView("old", old_replicas, created=OLD)
    new = SetView("new", new_replicas, created=NEWER)
    assert rollout.reconcile_new(replicas, rolling(surge, 0), [old, new], new) is changed
    assert new.replicas == expected


# --------------------------------------------------------------------------------------------- reconcileOldReplicaSets


@pytest.mark.parametrize(
    ("replicas", "unavailable", "old_replicas", "new_replicas", "old_ready", "new_ready", "changed", "expected_old"),
    [
        (10, 0, 10, 0, 10, 0, True, 9),
        (10, 2, 10, 0, 10, 0, True, 8),
        (10, 2, 10, 0, 8, 0, True, 8),  # the unhealthy old replicas go first
        (10, 2, 10, 0, 9, 0, True, 8),  # one unhealthy cleaned up, one available scaled down
        (10, 2, 8, 2, 8, 0, False, 8),  # the new set's unavailable replicas block any further scale-down
    ],
)
def test_reconcile_old(replicas: int, unavailable: int, old_replicas: int, new_replicas: int, old_ready: int,
                       new_ready: int, changed: bool, expected_old: int) -> None:
    old = SetView("old", old_replicas, status_replicas=old_replicas, available=old_ready, created=OLD)
    new = SetView("new", new_replicas, status_replicas=new_replicas, available=new_ready, created=NEWER)
    assert rollout.reconcile_old(replicas, rolling(0, unavailable), [old, new], [old], new) is changed
    assert old.replicas == expected_old


@pytest.mark.parametrize(
    ("old_replicas", "ready", "max_cleanup", "expected"),
    [(10, 8, 1, 1), (10, 8, 3, 2), (10, 8, 0, 0), (10, 10, 3, 0)],
)
def test_cleanup_unhealthy(old_replicas: int, ready: int, max_cleanup: int, expected: int) -> None:
    old = SetView("old", old_replicas, status_replicas=old_replicas, available=ready, created=OLD)
    assert rollout.cleanup_unhealthy([old], max_cleanup) == expected
    assert old.replicas == old_replicas - expected


@pytest.mark.parametrize(
    ("replicas", "unavailable", "ready", "old_replicas", "expected_old"),
    [
        (10, 0, 10, 10, 9),
        (10, 2, 10, 10, 8),
        (10, 2, 8, 10, 10),  # available already at the minimum
        (10, 2, 10, 0, 0),
    ],
)
def test_scale_down_old_for_rolling(replicas: int, unavailable: int, ready: int, old_replicas: int,
                                    expected_old: int) -> None:
    old = SetView("old", old_replicas, status_replicas=old_replicas, available=ready, created=OLD)
    rollout.scale_down_old_for_rolling(replicas, rolling(0, unavailable), [old], [old])
    assert old.replicas == expected_old


def test_stale_availability_of_a_just_shrunk_set_is_not_counted() -> None:
    # The old set was scaled 3 -> 2 but its status still says 3 available: counting 3 would allow another step.
    old = SetView("old", 2, status_replicas=3, available=3, created=OLD)
    new = SetView("new", 1, status_replicas=1, available=0, created=NEWER)
    assert rollout.reconcile_old(3, rolling(1, 1), [old, new], [old], new) is False
    assert old.replicas == 2


# ------------------------------------------------------------------------------------------ proportional scaling


def annotated(name: str, replicas: int, created: str, *, desired: int, max_: int, available: int = 0) -> SetView:
    return SetView(name, replicas, status_replicas=replicas, available=available, created=created,
                   desired_annotation=desired, max_annotation=max_)


@pytest.mark.parametrize(
    ("name", "replicas", "before", "surge", "before_surge", "new", "olds", "expected_new", "expected_olds"),
    [
        ("normal scaling event: 10 -> 12", 12, 10, 0, 0, 10, [], 12, []),
        ("normal scaling event: 10 -> 5", 5, 10, 0, 0, 10, [], 5, []),
        ("proportional scaling: 5 -> 10", 10, 5, 0, 0, 2, [3], 4, [6]),
        ("proportional scaling: 5 -> 3", 3, 5, 0, 0, 2, [3], 1, [2]),
        ("proportional scaling: 9 -> 4", 4, 9, 0, 0, 8, [1], 4, [0]),
        ("proportional scaling: 7 -> 10", 10, 7, 0, 0, 2, [3, 2], 3, [4, 3]),
        ("proportional scaling: 13 -> 8", 8, 13, 0, 0, 2, [8, 3], 1, [5, 2]),
        ("leftover distribution: 3 -> 4", 4, 3, 0, 0, 1, [1, 1], 2, [1, 1]),
        ("leftover distribution: 3 -> 2", 2, 3, 0, 0, 1, [1, 1], 1, [1, 0]),
        ("proportional scaling: 6 -> 0", 0, 6, 0, 0, 3, [2, 1], 0, [0, 0]),
        ("deployment with surge: 10 -> 20", 20, 10, 2, 2, 6, [6], 11, [11]),
        ("change both surge and size", 50, 10, 6, 3, 5, [8], 22, [34]),
    ],
)
def test_proportional_scale(name: str, replicas: int, before: int, surge: int, before_surge: int, new: int,
                            olds: list[int], expected_new: int, expected_olds: list[int]) -> None:
    # Old sets are listed newest first (as in Kubernetes' table); creation times make that order explicit.
    old_views = [annotated(f"old{i}", size, f"2026-01-{10 - i:02d}T00:00:00Z", desired=before,
                           max_=before + before_surge) for i, size in enumerate(olds)]
    new_view = annotated("new", new, "2026-02-01T00:00:00Z", desired=before, max_=before + before_surge)
    rollout.scale(replicas, rolling(surge, 0), new_view, old_views, before)
    assert new_view.replicas == expected_new, name
    assert [v.replicas for v in old_views] == expected_olds, name


def test_proportional_scale_without_new_set_grows_the_newest_first() -> None:
    v2 = annotated("v2", 2, "2026-01-09T00:00:00Z", desired=4, max_=4)
    v1 = annotated("v1", 2, "2026-01-08T00:00:00Z", desired=4, max_=4)
    rollout.scale(5, rolling(0, 0), None, [v2, v1], 4)
    assert (v2.replicas, v1.replicas) == (3, 2)


def test_scale_from_zero_goes_to_the_new_set() -> None:
    new = annotated("new", 0, NEWER, desired=6, max_=6)
    olds = [annotated("old", 0, OLD, desired=6, max_=6)]
    rollout.scale(6, rolling(0, 0), new, olds, 0)
    assert (new.replicas, olds[0].replicas) == (6, 0)


def test_scaling_event_is_read_from_the_desired_replicas_annotation() -> None:
    sets = [annotated("a", 2, OLD, desired=3, max_=4), annotated("b", 0, NEWER, desired=1, max_=1)]
    assert not rollout.is_scaling_event(3, sets)  # the empty set's stale annotation does not count
    assert rollout.is_scaling_event(5, sets)


# -------------------------------------------------------------------------------------- recreate and history


def test_recreate_scales_old_down_then_waits_for_machines_to_go() -> None:
    old = SetView("old", 3, status_replicas=3, created=OLD)
    new = SetView("new", 0, created=NEWER)
    assert rollout.recreate_step(3, new, [old]) == (True, False)
    assert (old.replicas, new.replicas) == (0, 0)
    assert rollout.recreate_step(3, new, [old]) == (False, False)  # still 3 machines terminating
    old.status_replicas = 0
    assert rollout.recreate_step(3, new, [old]) == (True, True)
    assert new.replicas == 3


def test_history_keeps_the_newest_empty_sets() -> None:
    sets = [SetView(f"r{i}", 0, created=f"2026-01-0{i}T00:00:00Z", revision=i) for i in range(1, 5)]
    sets.append(SetView("busy", 2, status_replicas=2, created=OLD, revision=0))
    assert rollout.history_to_delete(sets, 2) == ["r1", "r2"]
    assert rollout.history_to_delete(sets, None) == []
    assert rollout.history_to_delete(sets, 0) == ["r1", "r2", "r3", "r4"]
