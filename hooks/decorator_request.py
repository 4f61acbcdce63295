"""Where a DecoratorController sync/finalize request keeps the decorated object and its attachments.

The two hook versions name them differently on the wire. Metacontroller v4.17's v2 request type
(`pkg/controller/decorator/api/v2/hooks.go`, `DecoratorHookRequest`) sends `parent` and `children`; v1 sends
`object` and `attachments`. Our controller configs use v2, but recorded v1 requests, hand-written ones and older
notes use the v1 names, so both are read. A body that carries both names with different content is ambiguous and
answered 400 rather than guessed. The response keys are the same in both versions (`attachments`, `finalized`...).
"""

from __future__ import annotations

from typing import Any

from hooks.context import BadRequest

OBJECT_V2, OBJECT_V1 = "parent", "object"
ATTACHMENTS_V2, ATTACHMENTS_V1 = "children", "attachments"


def _pick(body: dict[str, Any], v2_key: str, v1_key: str) -> tuple[Any, str]:
    if v2_key in body and v1_key in body and body[v2_key] != body[v1_key]:
        raise BadRequest(
            f"request has both `{v2_key}` (v2) and `{v1_key}` (v1) and they differ: send one of them"
        )
    if v2_key in body:
        return body[v2_key], v2_key
    return body.get(v1_key), v1_key


def decorated_object(body: dict[str, Any]) -> tuple[Any, str]:
    """The decorated object (unchecked) and the key it came under; neither key present is a 400."""
    if OBJECT_V2 not in body and OBJECT_V1 not in body:
        raise BadRequest(
            f"request has no `{OBJECT_V2}` (v2) or `{OBJECT_V1}` (v1): this route expects a Metacontroller "
            "DecoratorController sync/finalize request"
        )
    return _pick(body, OBJECT_V2, OBJECT_V1)


def attachments(body: dict[str, Any]) -> tuple[Any, str]:
    """The observed attachments map (unchecked, None when absent) and the key it came under."""
    return _pick(body, ATTACHMENTS_V2, ATTACHMENTS_V1)
