"""Where a DecoratorController sync/finalize request keeps the decorated object and its attachments.

Metacontroller v4.17 sends `object` and `attachments` in both hook versions: the Go types
(`pkg/controller/decorator/api/v1/hooks.go` and `.../v2/hooks.go`, `DecoratorHookRequest`) name the fields
Parent/Children but tag them `json:"object"` and `json:"attachments"`. Only composite requests and customize
requests use `parent`. A sync/finalize body without `object` is not a decorator request, so it is answered 400
naming the key, never guessed from `parent`/`children`.
"""

from __future__ import annotations

from typing import Any

from hooks.context import BadRequest

OBJECT = "object"
ATTACHMENTS = "attachments"


def decorated_object(body: dict[str, Any]) -> tuple[Any, str]:
    """The decorated object (unchecked) and the key it came under; a body without `object` is a 400."""
    if OBJECT not in body:
        raise BadRequest(
            f"request has no `{OBJECT}`: this route expects a Metacontroller DecoratorController sync/finalize "
            f"request (`controller`, `{OBJECT}`, `{ATTACHMENTS}`, `related`, `finalizing`)"
        )
    return body[OBJECT], OBJECT


def attachments(body: dict[str, Any]) -> tuple[Any, str]:
    """The observed attachments map (unchecked, None when absent) and the key it came under."""
    return body.get(ATTACHMENTS), ATTACHMENTS
