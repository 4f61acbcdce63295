"""What a CompositeController sync request carries, read once for the MachineSet and MachineDeployment hooks.

Metacontroller v4.17's v2 request (`pkg/controller/composite/api/v2/hooks.go`, `CompositeHookRequest`) sends
`parent`, `children` (Kind.group/version → namespace/name → object), `related` and `finalizing`. A parent without
a name or namespace, a children value that is not a map or a child without a name is not something Metacontroller
sends, so it is answered 400 rather than guessed at.
"""

from __future__ import annotations

from typing import Any

from hooks import objects
from hooks.context import BadRequest
from hooks.last_applied import LAST_APPLIED, without_last_applied  # noqa: F401  (re-exported)


def parent_and_children(body: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The parent and children map of a CompositeController sync; a malformed request is a BadRequest (400)."""
    if not isinstance(body, dict) or not isinstance(body.get("parent"), dict):
        raise BadRequest("request has no parent object")
    parent = body["parent"]
    meta = parent.get("metadata")
    if not isinstance(meta, dict) or not meta.get("name") or not meta.get("namespace"):
        raise BadRequest("parent.metadata must have a name and a namespace")
    children = {} if body.get("children") is None else body["children"]
    if not isinstance(children, dict):
        raise BadRequest("children must be a map")
    return parent, children


def child_objects(group: Any, key: str) -> list[dict[str, Any]]:
    """The observed children of one kind (`children[key]`, None when absent); not a map, or a child without a
    name, is a 400."""
    if group is None:
        return []
    if not isinstance(group, dict):
        raise BadRequest(f"children[{key!r}] must be a map")
    return [child_object(obj, name) for name, obj in group.items()]


def child_object(obj: Any, key: str) -> dict[str, Any]:
    """An observed child; Metacontroller never sends one without a name, so one is a malformed request."""
    if not objects.name(obj):
        raise BadRequest(f"child {key!r} has no metadata.name")
    return obj
