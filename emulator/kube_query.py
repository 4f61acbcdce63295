"""Query-string selectors of the Kubernetes list API (labelSelector, fieldSelector), as pure functions.

Why separate: `emulator/kubeapi.py` is the HTTP edge; what a selector string means is a decision that tests pin
down without a server. Label selectors use the API server's string syntax (`a=b,c!=d,e in (x,y),f notin (z),g,!h`)
and are turned into a metav1.LabelSelector so `emulator/selectors.py` evaluates them as everything else does.
Field selectors support what the API server supports for the kinds here: `metadata.name` and
`metadata.namespace` everywhere, plus a few per-kind fields (a pod's `spec.nodeName`, `status.phase`, ...).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from emulator import selectors

Obj = dict[str, Any]

# Per kind, the fields the API server lets a fieldSelector name besides metadata.name / metadata.namespace.
EXTRA_FIELDS: dict[str, tuple[str, ...]] = {
    "Pod": ("spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
            "status.phase", "status.podIP", "status.nominatedNodeName"),
    "Node": ("spec.unschedulable",),
    "Secret": ("type",),
    "Namespace": ("status.phase",),
    "Job": ("status.successful",),
}

# What an unset field reads as (the Go structs' zero values), where it is not the empty string.
FIELD_DEFAULTS = {"spec.unschedulable": "false"}

_LABEL_TERM = re.compile(
    r"^\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9][-A-Za-z0-9_./]*)\s*"
    r"(?:(?P<op>==|!=|=|\s+in\s+|\s+notin\s+)\s*(?P<value>\([^)]*\)|[-A-Za-z0-9_.]*))?\s*$"
)


class QueryError(ValueError):
    """A selector the API server would answer 400 BadRequest for."""


def _split_terms(text: str) -> list[str]:
    """Split on commas outside parentheses (the values of `in (a,b)` contain commas)."""
    terms, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return [t for t in terms if t.strip()]


def parse_label_selector(text: str | None) -> Obj | None:
    """`labelSelector=` as a metav1.LabelSelector; None (no filter) for an absent or blank selector."""
    if text is None or not text.strip():
        return None
    expressions: list[Obj] = []
    for term in _split_terms(text):
        match = _LABEL_TERM.match(term)
        if not match:
            raise QueryError(f"unable to parse requirement: {term.strip()!r}")
        key, op, value = match["key"], (match["op"] or "").strip(), match["value"]
        if match["neg"]:
            if op:
                raise QueryError(f"unable to parse requirement: {term.strip()!r}")
            expressions.append({"key": key, "operator": "DoesNotExist"})
        elif not op:
            expressions.append({"key": key, "operator": "Exists"})
        elif op in ("in", "notin"):
            if not value or not value.startswith("("):
                raise QueryError(f"unable to parse requirement: {term.strip()!r}: expected a parenthesised set")
            values = [v.strip() for v in value[1:-1].split(",") if v.strip()]
            if not values:
                raise QueryError(f"unable to parse requirement: {term.strip()!r}: empty set")
            expressions.append({"key": key, "operator": "In" if op == "in" else "NotIn", "values": values})
        else:
            if value is None or value.startswith("("):
                raise QueryError(f"unable to parse requirement: {term.strip()!r}")
            expressions.append({"key": key, "operator": "NotIn" if op == "!=" else "In", "values": [value]})
    return {"matchExpressions": expressions}


def label_filter(text: str | None) -> Callable[[Obj], bool]:
    selector = parse_label_selector(text)
    return lambda obj: selectors.matches(selector, (obj.get("metadata") or {}).get("labels"))


def field_value(obj: Obj, path: str) -> str:
    """A field as the API server's field-label conversion renders it: strings as is, booleans lowercase."""
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if node is None:
        return FIELD_DEFAULTS.get(path, "")
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)


def field_filter(text: str | None, kind: str) -> Callable[[Obj], bool]:
    """`fieldSelector=` (`f=v`, `f==v`, `f!=v`, comma-ANDed) for one kind; unsupported fields are a QueryError."""
    if text is None or not text.strip():
        return lambda obj: True
    allowed = ("metadata.name", "metadata.namespace", *EXTRA_FIELDS.get(kind, ()))
    terms: list[tuple[str, bool, str]] = []
    for term in _split_terms(text):
        match = re.match(r"^\s*([A-Za-z0-9_.]+)\s*(==|!=|=)\s*([^,]*?)\s*$", term)
        if not match:
            raise QueryError(f"invalid field selector: {term.strip()!r}")
        field, op, value = match.groups()
        if field not in allowed:
            raise QueryError(f'field label not supported: {field}')
        terms.append((field, op != "!=", value))

    def accept(obj: Obj) -> bool:
        return all((field_value(obj, field) == value) == equal for field, equal, value in terms)

    return accept
