"""The scale and rollout arithmetic of a MachineDeployment, as pure functions over small value objects.

It follows the Kubernetes Deployment controller (which MCM copied): maxSurge/maxUnavailable resolution, one step of
a rolling update (scale the new set up, else clean up unhealthy old replicas and scale old sets down), Recreate,
proportional scaling when replicas change in the middle of a rollout, and revision history clean-up.

Two deliberate differences, both because a "replica" here is a bare-metal device:
- availability is counted as min(status.availableReplicas, spec.replicas): a set that was just scaled down still
  reports the old number of available machines until its own hook catches up, and counting those could take the
  deployment below its minimum;
- surge counts max(spec.replicas, status.replicas): a machine that is still being deleted still holds a device (and
  maybe a hardware reservation), so the new set only grows once the old machine is really gone.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

ROLLING = "RollingUpdate"
RECREATE = "Recreate"
IN_PLACE = "InPlaceUpdate"
# Kubernetes' defaults for a RollingUpdate whose parameters are left out (MCM's CRD has no defaulting).
DEFAULT_SURGE = "25%"
DEFAULT_UNAVAILABLE = "25%"
_PERCENT = re.compile(r"^(-?\d+)%$")


@dataclass
class SetView:
    """What the rollout needs to know about one MachineSet; `replicas` is the desired size and may be changed."""

    name: str
    replicas: int
    status_replicas: int = 0
    available: int = 0
    created: str | None = None  # creationTimestamp; None for a set not created yet (the newest)
    revision: int = 0
    desired_annotation: int | None = None  # deployment.kubernetes.io/desired-replicas
    max_annotation: int | None = None  # deployment.kubernetes.io/max-replicas

    @property
    def usable_available(self) -> int:
        return max(0, min(self.available, self.replicas))

    @property
    def footprint(self) -> int:
        """Machines this set holds or is about to hold, including ones still being deleted."""
        return max(self.replicas, self.status_replicas)


@dataclass(frozen=True)
class Strategy:
    type: str = ROLLING
    max_surge: int | str | None = DEFAULT_SURGE
    max_unavailable: int | str | None = DEFAULT_UNAVAILABLE


# ------------------------------------------------------------------------------------------- surge / unavailable


def scaled_value(value: int | str, total: int, round_up: bool) -> int:
    """An int-or-percent against `total`: integers as they are, "N%" rounded up (surge) or down (unavailable)."""
    if isinstance(value, bool):
        raise ValueError(f"invalid value {value!r}: must be an integer or a percentage such as \"25%\"")
    if isinstance(value, int):
        return value
    match = _PERCENT.match(value) if isinstance(value, str) else None
    if not match:
        raise ValueError(f"invalid value {value!r}: must be an integer or a percentage such as \"25%\"")
    scaled = int(match.group(1)) * total / 100
    return math.ceil(scaled) if round_up else math.floor(scaled)


def resolve_fenceposts(
    max_surge: int | str | None, max_unavailable: int | str | None, desired: int
) -> tuple[int, int]:
    """(surge, unavailable) for `desired` replicas; if both resolve to 0, one may be unavailable (else no progress)."""
    surge = scaled_value(0 if max_surge is None else max_surge, desired, True)
    unavailable = scaled_value(0 if max_unavailable is None else max_unavailable, desired, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def max_surge(replicas: int, strategy: Strategy) -> int:
    if strategy.type != ROLLING:
        return 0
    return resolve_fenceposts(strategy.max_surge, strategy.max_unavailable, replicas)[0]


def max_unavailable(replicas: int, strategy: Strategy) -> int:
    if strategy.type != ROLLING or replicas == 0:
        return 0
    unavailable = resolve_fenceposts(strategy.max_surge, strategy.max_unavailable, replicas)[1]
    return min(unavailable, replicas)


def _raw_value(value: int | str | None) -> int | None:
    """The number a user wrote (percent or not), or None when it is malformed."""
    if value is None:
        return 0
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    match = _PERCENT.match(value) if isinstance(value, str) else None
    return int(match.group(1)) if match else None


def strategy_problems(strategy: Strategy, path: str = "spec.strategy") -> list[str]:
    """What makes a strategy unusable, in the API server's style; [] when it is fine."""
    if strategy.type == IN_PLACE:
        return [f"{path}.type: Unsupported value: \"{IN_PLACE}\": in-place updates are not supported by these hooks; "
                f"use \"{ROLLING}\" or \"{RECREATE}\""]
    if strategy.type not in (ROLLING, RECREATE):
        return [f"{path}.type: Unsupported value: {strategy.type!r}: supported values: \"{RECREATE}\", \"{ROLLING}\""]
    if strategy.type != ROLLING:
        return []
    problems = []
    values = {"maxSurge": strategy.max_surge, "maxUnavailable": strategy.max_unavailable}
    numbers: dict[str, int] = {}
    for name, value in values.items():
        number = _raw_value(value)
        if number is None:
            problems.append(f"{path}.rollingUpdate.{name}: Invalid value: {value!r}: must be an integer or a "
                            "percentage such as \"25%\"")
        elif number < 0:
            problems.append(f"{path}.rollingUpdate.{name}: Invalid value: {value!r}: must be greater than or "
                            "equal to 0")
        else:
            numbers[name] = number
    unavailable = strategy.max_unavailable
    if isinstance(unavailable, str) and numbers.get("maxUnavailable", 0) > 100:
        problems.append(f"{path}.rollingUpdate.maxUnavailable: Invalid value: {unavailable!r}: must not be greater "
                        "than 100%")
    if numbers.get("maxSurge") == 0 and numbers.get("maxUnavailable") == 0:
        problems.append(f"{path}.rollingUpdate: Invalid value: maxSurge and maxUnavailable are both 0: the rollout "
                        "could neither add a new machine nor take an old one away; make at least one of them positive")
    return problems


# ----------------------------------------------------------------------------------------------------- ordering


def created_key(view: SetView) -> tuple[int, str, str]:
    # A set not created yet is the newest; ties are broken by name, as Kubernetes does.
    return (1, "", view.name) if view.created is None else (0, view.created, view.name)


def by_creation(views: Iterable[SetView]) -> list[SetView]:
    return sorted(views, key=created_key)


def by_size_newer(views: Iterable[SetView]) -> list[SetView]:
    """Largest first; among equals the newest first (scaling up favours new sets)."""
    newest_first = sorted(views, key=created_key, reverse=True)
    return sorted(newest_first, key=lambda v: -v.replicas)


def by_size_older(views: Iterable[SetView]) -> list[SetView]:
    """Largest first; among equals the oldest first (scaling down hits old sets first)."""
    return sorted(by_creation(views), key=lambda v: -v.replicas)


def active(views: Iterable[SetView | None]) -> list[SetView]:
    return [v for v in views if v is not None and v.replicas > 0]


def total_replicas(views: Iterable[SetView | None]) -> int:
    return sum(v.replicas for v in views if v is not None)


def total_available(views: Iterable[SetView | None]) -> int:
    return sum(v.usable_available for v in views if v is not None)


# ---------------------------------------------------------------------------------------------- rolling update


def new_set_replicas(replicas: int, strategy: Strategy, all_sets: Iterable[SetView | None], new: SetView) -> int:
    """How big the new set may be now (Kubernetes' NewRSNewReplicas)."""
    if strategy.type == RECREATE:
        return replicas
    surge = scaled_value(0 if strategy.max_surge is None else strategy.max_surge, replicas, True)
    current = sum(v.footprint for v in all_sets if v is not None)
    max_total = replicas + surge
    if current >= max_total:
        return new.replicas
    scale_up = min(max_total - current, replicas - new.replicas)
    return new.replicas + scale_up


def reconcile_new(replicas: int, strategy: Strategy, all_sets: list[SetView | None], new: SetView) -> bool:
    """Grow (or shrink) the new set; True when its size changed."""
    if new.replicas == replicas:
        return False
    target = replicas if new.replicas > replicas else new_set_replicas(replicas, strategy, all_sets, new)
    changed = target != new.replicas
    new.replicas = target
    return changed


def cleanup_unhealthy(old_sets: list[SetView], max_cleanup: int) -> int:
    """Drop unavailable replicas of old sets first (oldest set first): they hold nothing up and would block the
    rollout. Returns how many were removed."""
    removed = 0
    for view in by_creation(old_sets):
        if removed >= max_cleanup:
            break
        unhealthy = view.replicas - view.usable_available
        if view.replicas == 0 or unhealthy <= 0:
            continue
        count = min(max_cleanup - removed, unhealthy)
        view.replicas -= count
        removed += count
    return removed


def scale_down_old_for_rolling(
    replicas: int, strategy: Strategy, all_sets: list[SetView | None], old_sets: list[SetView]
) -> int:
    """Take available old replicas away while at least replicas - maxUnavailable stay available."""
    min_available = replicas - max_unavailable(replicas, strategy)
    available = total_available(all_sets)
    if available <= min_available:
        return 0
    budget = available - min_available
    removed = 0
    for view in by_creation(old_sets):
        if removed >= budget:
            break
        if view.replicas == 0:
            continue
        count = min(view.replicas, budget - removed)
        view.replicas -= count
        removed += count
    return removed


def reconcile_old(
    replicas: int, strategy: Strategy, all_sets: list[SetView | None], old_sets: list[SetView], new: SetView
) -> bool:
    """Scale old sets down as far as availability allows; True when any size changed."""
    if total_replicas(old_sets) == 0:
        return False
    min_available = replicas - max_unavailable(replicas, strategy)
    new_unavailable = new.replicas - new.usable_available
    max_scaled_down = total_replicas(all_sets) - min_available - new_unavailable
    if max_scaled_down <= 0:
        return False
    cleaned = cleanup_unhealthy(old_sets, max_scaled_down)
    scaled = scale_down_old_for_rolling(replicas, strategy, all_sets, old_sets)
    return cleaned + scaled > 0


def rolling_step(replicas: int, strategy: Strategy, new: SetView, old_sets: list[SetView]) -> bool:
    """One step of a rolling update, in place: scale up if possible, else scale down. True when anything changed."""
    all_sets: list[SetView | None] = [*old_sets, new]
    if reconcile_new(replicas, strategy, all_sets, new):
        return True
    return reconcile_old(replicas, strategy, all_sets, active(old_sets), new)


# ---------------------------------------------------------------------------------------------------- recreate


def recreate_step(replicas: int, new: SetView | None, old_sets: list[SetView]) -> tuple[bool, bool]:
    """Recreate: old sets to 0, wait until their machines are gone, then the new set to full size.

    Returns (changed, may_create_new): the new set is only created once no old machine is left.
    """
    scaled_down = False
    for view in old_sets:
        if view.replicas > 0:
            view.replicas = 0
            scaled_down = True
    if scaled_down:
        return True, False
    if any(v.status_replicas > 0 for v in old_sets):
        return False, False
    if new is not None and new.replicas != replicas:
        new.replicas = replicas
        return True, True
    return False, True


# -------------------------------------------------------------------------------------- scaling (sync.go scale)


def find_active_or_latest(new: SetView | None, old_sets: list[SetView]) -> SetView | None:
    if new is None and not old_sets:
        return None
    newest_first = sorted(old_sets, key=created_key, reverse=True)
    live = active([*newest_first, new])
    if not live:
        return new if new is not None else newest_first[0]
    return live[0] if len(live) == 1 else None


def is_saturated(replicas: int, new: SetView | None) -> bool:
    return (
        new is not None
        and new.replicas == replicas
        and new.desired_annotation == replicas
        and new.available == replicas
    )


def is_scaling_event(replicas: int, sets: Iterable[SetView | None]) -> bool:
    """The deployment was resized since its active sets were last sized (their desired-replicas annotation)."""
    return any(v.desired_annotation is not None and v.desired_annotation != replicas for v in active(sets))


def _round(value: float) -> int:
    return math.floor(value + 0.5)  # Go's math.Round for the non-negative values used here


def set_fraction(view: SetView, replicas: int, strategy: Strategy, status_replicas: int) -> int:
    if replicas == 0:
        return -view.replicas
    deployment_replicas = replicas + max_surge(replicas, strategy)
    annotated = view.max_annotation if view.max_annotation is not None else status_replicas
    if not annotated:
        return 0
    return _round(view.replicas * deployment_replicas / annotated) - view.replicas


def proportion(view: SetView, replicas: int, strategy: Strategy, status_replicas: int, to_add: int, added: int) -> int:
    if view.replicas == 0 or to_add == 0 or to_add == added:
        return 0
    fraction = set_fraction(view, replicas, strategy, status_replicas)
    allowed = to_add - added
    return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)


def scale(
    replicas: int, strategy: Strategy, new: SetView | None, old_sets: list[SetView], status_replicas: int
) -> None:
    """Resize the sets to a new deployment size, in place; during a rollout in proportion to their sizes."""
    target = find_active_or_latest(new, old_sets)
    if target is not None:
        target.replicas = replicas
        return
    if is_saturated(replicas, new):
        for view in active(old_sets):
            view.replicas = 0
        return
    if strategy.type != ROLLING:
        return
    live = active([*old_sets, new])
    allowed = replicas + max_surge(replicas, strategy) if replicas > 0 else 0
    to_add = allowed - total_replicas(live)
    if to_add > 0:
        live = by_size_newer(live)
    elif to_add < 0:
        live = by_size_older(live)
    sizes: dict[str, int] = {}
    added = 0
    for view in live:
        share = proportion(view, replicas, strategy, status_replicas, to_add, added) if to_add else 0
        sizes[view.name] = view.replicas + share
        added += share
    for index, view in enumerate(live):
        size = sizes[view.name]
        if index == 0 and to_add:
            size = max(0, size + to_add - added)
        view.replicas = size


# ------------------------------------------------------------------------------------------------ bookkeeping


def history_to_delete(old_sets: list[SetView], limit: int | None, deleting: Iterable[str] = ()) -> list[str]:
    """Old, empty sets beyond `revisionHistoryLimit`, oldest revision first; None keeps every one."""
    if limit is None:
        return []
    skip = set(deleting)
    cleanable = [v for v in old_sets if v.replicas == 0 and v.status_replicas == 0 and v.name not in skip]
    excess = len(cleanable) - max(0, limit)
    if excess <= 0:
        return []
    ordered = sorted(cleanable, key=lambda v: (v.revision, *created_key(v)))
    return [v.name for v in ordered[:excess]]
