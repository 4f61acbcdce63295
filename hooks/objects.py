"""Reading Kubernetes objects that may be malformed, without a TypeError.

Metacontroller hands the hooks whatever the API server holds. A schema-valid parent can still relate a Node, Job or
Secret of an odd shape, and a hook must answer with a status, never a 500. These readers turn a field of the wrong
type into the empty value of the expected type, so every caller reads `mapping(obj, "status")` instead of
repeating `x.get("k") if isinstance(x.get("k"), dict) else {}`.
"""

# No `from __future__ import annotations` here: it would bind the name `annotations`, which this module defines as a
# reader, and type checkers then take `objects.annotations` for the __future__ feature (all hints here work without).
from typing import Any


def mapping(obj: Any, *path: str) -> dict[str, Any]:
    """The mapping at `path` inside `obj`; {} when any step is missing or not a mapping."""
    current = obj
    for key in path:
        current = current.get(key) if isinstance(current, dict) else None
    return current if isinstance(current, dict) else {}


def mappings(obj: Any, *path: str) -> list[dict[str, Any]]:
    """The mappings in the list at `path` (the list itself when `path` is empty); entries of other types dropped."""
    current = obj
    for key in path:
        current = current.get(key) if isinstance(current, dict) else None
    return [item for item in current if isinstance(item, dict)] if isinstance(current, list) else []


def string(obj: Any, *path: str, default: str = "") -> str:
    """The string at `path`; `default` when missing or not a string."""
    if not path:
        return obj if isinstance(obj, str) else default
    value = mapping(obj, *path[:-1]).get(path[-1])
    return value if isinstance(value, str) else default


def meta(obj: Any) -> dict[str, Any]:
    """`metadata`, or {}."""
    return mapping(obj, "metadata")


def labels(obj: Any) -> dict[str, Any]:
    return mapping(obj, "metadata", "labels")


def annotations(obj: Any) -> dict[str, Any]:
    return mapping(obj, "metadata", "annotations")


def name(obj: Any) -> str:
    return string(obj, "metadata", "name")


def namespace(obj: Any) -> str:
    return string(obj, "metadata", "namespace")


def uid(obj: Any) -> str:
    return string(obj, "metadata", "uid")


def children(body: Any, group: str, kind_key: str) -> dict[str, Any]:
    """One kind's objects in a hook request's `children`, `related` or `attachments` map, keyed as Metacontroller
    keys them; entries that are not objects are dropped."""
    return {key: obj for key, obj in mapping(body, group, kind_key).items() if isinstance(obj, dict)}
