"""Label selectors (metav1.LabelSelector) as the MachineSet and MachineDeployment hooks need them.

Metacontroller refuses a desired child whose labels do not match the parent's selector (the whole sync fails), so
the hooks check selector against template before they return anything, and say what is wrong in the status.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


def selector_problems(selector: Any, path: str = "spec.selector") -> list[str]:
    """Why `selector` cannot be used (empty, malformed, unknown operator); [] when it is usable.

    An empty selector is refused: it would select every Machine in the namespace (MCM treats it as matching nothing).
    """
    if not isinstance(selector, dict):
        return [f"{path}: Required value: a selector with matchLabels or matchExpressions is required"]
    match_labels = selector.get("matchLabels")
    expressions = selector.get("matchExpressions")
    problems: list[str] = []
    if match_labels is not None and not (
        isinstance(match_labels, dict) and all(isinstance(v, str) for v in match_labels.values())
    ):
        problems.append(f"{path}.matchLabels: Invalid value: must map label keys to string values")
    if expressions is not None and not isinstance(expressions, list):
        problems.append(f"{path}.matchExpressions: Invalid value: must be a list")
        expressions = []
    for index, expr in enumerate(expressions or []):
        where = f"{path}.matchExpressions[{index}]"
        if not isinstance(expr, dict) or not isinstance(expr.get("key"), str) or not expr.get("key"):
            problems.append(f"{where}.key: Required value")
            continue
        operator = expr.get("operator")
        values = expr.get("values") or []
        if operator not in OPERATORS:
            problems.append(f"{where}.operator: Unsupported value: {operator!r}: supported values: "
                            + ", ".join(OPERATORS))
        elif operator in ("In", "NotIn") and not values:
            problems.append(f"{where}.values: Required value: must be non-empty for operator {operator}")
        elif operator in ("Exists", "DoesNotExist") and values:
            problems.append(f"{where}.values: Forbidden: must be empty for operator {operator}")
    if not problems and not match_labels and not expressions:
        problems.append(f"{path}: Invalid value: an empty selector would select every Machine; "
                        "give matchLabels or matchExpressions")
    return problems


def matches(selector: Mapping[str, Any], labels: Mapping[str, Any] | None) -> bool:
    """True when `labels` satisfy a selector that `selector_problems` accepted."""
    labels = labels or {}
    for key, want in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != want:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, operator, values = expr["key"], expr["operator"], expr.get("values") or []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def with_label(selector: Mapping[str, Any], key: str, value: str) -> dict[str, Any]:
    """A copy of `selector` that also requires `key=value` (how a MachineSet narrows its deployment's selector)."""
    out = {k: v for k, v in selector.items() if k in ("matchLabels", "matchExpressions")}
    out["matchLabels"] = {**(selector.get("matchLabels") or {}), key: value}
    return out
