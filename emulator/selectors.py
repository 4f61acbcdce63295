"""Kubernetes label selectors (metav1.LabelSelector) evaluated against label or annotation maps.

Kept separate from the store and the controller loop because both need the same semantics: `matchLabels` and
`matchExpressions` are ANDed, an empty selector `{}` selects everything, and the caller decides what a missing
(None) selector means, since Kubernetes itself is not consistent about it (a missing parent selector in a
CompositeController rule means "all", a missing selector in `LabelSelectorAsSelector` means "nothing").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_OPERATORS = {"In", "NotIn", "Exists", "DoesNotExist"}


class SelectorError(ValueError):
    """A selector the API server would refuse (unknown operator, missing values)."""


def matches(
    selector: Mapping[str, Any] | None,
    values: Mapping[str, str] | None,
    *,
    match_key: str = "matchLabels",
    none_matches: bool = True,
) -> bool:
    """True when `values` satisfy `selector`; `match_key` is `matchAnnotations` for annotation selectors."""
    if selector is None:
        return none_matches
    values = values or {}
    for key, want in (selector.get(match_key) or {}).items():
        if values.get(key) != want:
            return False
    return all(_expression_matches(expr, values) for expr in selector.get("matchExpressions") or [])


def _expression_matches(expr: Mapping[str, Any], values: Mapping[str, str]) -> bool:
    key = expr.get("key")
    op = expr.get("operator")
    wanted = expr.get("values") or []
    if not key or op not in _OPERATORS:
        raise SelectorError(
            f"invalid selector requirement {dict(expr)!r}: operator must be one of {sorted(_OPERATORS)}"
        )
    if op in ("In", "NotIn") and not wanted:
        raise SelectorError(f"invalid selector requirement {dict(expr)!r}: values must be non-empty for {op}")
    if op in ("Exists", "DoesNotExist") and wanted:
        raise SelectorError(f"invalid selector requirement {dict(expr)!r}: values must be empty for {op}")
    if op == "In":
        return key in values and values[key] in wanted
    if op == "NotIn":
        return key not in values or values[key] not in wanted
    if op == "Exists":
        return key in values
    return key not in values


def is_empty(selector: Mapping[str, Any] | None) -> bool:
    """A selector with neither matchLabels nor matchExpressions (what `spec.selector` must not be)."""
    return not selector or (not selector.get("matchLabels") and not selector.get("matchExpressions"))
