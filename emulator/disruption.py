"""PodDisruptionBudgets as the disruption controller and the eviction subresource judge them, as pure functions.

Why: the drain program's correctness rests on the API server refusing (429) an eviction that would take a budget
below what it promises. The emulator has no disruption controller, so the REST API computes a budget's status
from the pods it selects whenever it is read or an eviction asks for it, following
`pkg/controller/disruption` and `pkg/registry/core/pod/storage/eviction.go`:

* `expectedPods` is the number of pods the selector matches (the real controller asks the pods' controllers for
  their scale; the emulator has no workload controllers, so the pods themselves are the count);
* `desiredHealthy` is `minAvailable` (an int, or a percentage of expectedPods rounded up), or expectedPods minus
  `maxUnavailable` (likewise rounded up);
* `currentHealthy` counts matching pods that are Ready and not being deleted;
* `disruptionsAllowed` is currentHealthy - desiredHealthy, never below 0.

An eviction is refused with 429 TooManyRequests while disruptionsAllowed is 0, granted without consulting a
budget for pods that are finished, pending or already deleting, and answered 500 when two budgets select the pod.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from emulator import selectors

Obj = dict[str, Any]


def pod_ready(pod: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [] if isinstance(c, dict))


def can_ignore_budget(pod: Obj) -> bool:
    """Evictions of these pods never consult a budget (eviction.go's canIgnorePDB)."""
    phase = (pod.get("status") or {}).get("phase") or "Pending"
    return phase in ("Succeeded", "Failed", "Pending") or bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def selects(pdb: Obj, pod: Obj) -> bool:
    """policy/v1: an empty selector selects every pod of the namespace, a missing one none."""
    if (pdb.get("metadata") or {}).get("namespace") != (pod.get("metadata") or {}).get("namespace"):
        return False
    selector = (pdb.get("spec") or {}).get("selector")
    return selectors.matches(selector, (pod.get("metadata") or {}).get("labels"), none_matches=False)


def _scaled(value: Any, total: int) -> int:
    """An IntOrString: an int as is, "N%" of total rounded up (intstr.GetScaledValueFromIntOrPercent, roundUp)."""
    if isinstance(value, str) and value.endswith("%"):
        try:
            percent = int(value[:-1])
        except ValueError:
            return 0
        return math.ceil(percent * total / 100)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return 0
    return int(value or 0)


def budget_status(pdb: Obj, pods: list[Obj], previous: Obj | None = None) -> Obj:
    """The status the disruption controller would write for `pdb`, given every pod of its namespace."""
    matched = [p for p in pods if selects(pdb, p)]
    live = [p for p in matched if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
    expected = len(live)
    spec = pdb.get("spec") or {}
    if spec.get("maxUnavailable") is not None:
        desired = max(0, expected - _scaled(spec["maxUnavailable"], expected))
    else:
        desired = _scaled(spec.get("minAvailable", 0), expected)
    names = {(p.get("metadata") or {}).get("name") for p in live}
    disrupted = {k: v for k, v in ((previous or {}).get("disruptedPods") or {}).items() if k in names}
    healthy = sum(1 for p in live if pod_ready(p) and not (p.get("metadata") or {}).get("deletionTimestamp")
                  and p["metadata"].get("name") not in disrupted)
    allowed = max(0, healthy - desired) if expected > 0 else 0
    status: Obj = {
        "currentHealthy": healthy,
        "desiredHealthy": desired,
        "expectedPods": expected,
        "disruptionsAllowed": allowed,
        "conditions": [{
            "type": "DisruptionAllowed",
            "status": "True" if allowed > 0 else "False",
            "reason": "SufficientPods" if allowed > 0 else "InsufficientPods",
            "message": "",
        }],
    }
    generation = (pdb.get("metadata") or {}).get("generation")
    if generation is not None:
        status["observedGeneration"] = generation
    if disrupted:
        status["disruptedPods"] = disrupted
    return status


@dataclass(frozen=True)
class EvictionVerdict:
    """What the eviction subresource answers: `code` 201 (the pod is deleted) or an error with its message."""

    code: int
    reason: str = ""
    message: str = ""
    budget: str = ""  # the PDB that decided, if any
    budget_status: Obj | None = None  # the PDB status to write (with one disruption used up when granted)
    cause: str = ""  # the DisruptionBudget cause of a refusal, as the API server words it


TOO_MANY = "Cannot evict pod as it would violate the pod's disruption budget."


def judge_eviction(pod: Obj, budgets: list[Obj], pods: list[Obj], stamp: str) -> EvictionVerdict:
    """Decide one eviction from the pod, the budgets of its namespace and the namespace's pods."""
    if can_ignore_budget(pod):
        return EvictionVerdict(201)
    mine = [b for b in budgets if selects(b, pod)]
    if len(mine) > 1:
        return EvictionVerdict(500, "InternalError", "This pod has more than one PodDisruptionBudget, which the "
                                                     "eviction subresource does not support.")
    if not mine:
        return EvictionVerdict(201)
    pdb = mine[0]
    name = pdb["metadata"]["name"]
    status = budget_status(pdb, pods, pdb.get("status"))
    policy = (pdb.get("spec") or {}).get("unhealthyPodEvictionPolicy", "IfHealthyBudget")
    if not pod_ready(pod) and (policy == "AlwaysAllow" or status["currentHealthy"] >= status["desiredHealthy"]):
        return EvictionVerdict(201, budget=name)  # an unready pod does not count against the budget
    if status["disruptionsAllowed"] <= 0:
        detail = (f"The disruption budget {name} needs {status['desiredHealthy']} healthy pods and has "
                  f"{status['currentHealthy']} currently")
        return EvictionVerdict(429, "TooManyRequests", TOO_MANY, budget=name, budget_status=status, cause=detail)
    spent = dict(status)
    spent["disruptionsAllowed"] -= 1
    spent["disruptedPods"] = {**(status.get("disruptedPods") or {}), pod["metadata"]["name"]: stamp}
    return EvictionVerdict(201, budget=name, budget_status=spent)
