"""Flask's JSON provider with orjson underneath: request bodies and hook answers are parsed and written in C.

Why (measured by `make bench`, README "Performance"): a MachineSet sync with 1,000 Machines is a 1.5-3 MB request;
the standard library spent about as long decoding and encoding it as the hook spent deciding. For the small
Machine requests the gain is small but not negative, so there is one code path.

Same results as Flask's default provider: keys sorted (the same answer for the same request, byte for byte), dates,
dataclasses and the like through Flask's own `default`. Anything orjson refuses (NaN or a lone surrogate in the
input; an integer beyond 64 bits or a key that is not a string in an answer) goes through the standard library
instead, only slower. One difference remains: orjson reads an integer beyond 64 bits as a float. No Kubernetes
object holds one (the API server stores int64), so no Metacontroller request does. Without orjson installed, this
is Flask's provider.
"""

from __future__ import annotations

from typing import Any

from flask.json.provider import DefaultJSONProvider

try:
    import orjson
except ImportError:  # pragma: no cover - the image pins orjson; a bare checkout still works
    orjson = None  # type: ignore[assignment]

if orjson is not None:
    _OPTIONS = (orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
                | orjson.OPT_PASSTHROUGH_SUBCLASS)


class FastJSONProvider(DefaultJSONProvider):
    def dumps(self, obj: Any, **kwargs: Any) -> str:
        if orjson is None or kwargs.keys() - {"separators"}:  # indent, ensure_ascii=...: Flask's debug output
            return super().dumps(obj, **kwargs)
        try:
            return orjson.dumps(obj, default=self.default, option=_OPTIONS).decode()
        except (TypeError, orjson.JSONEncodeError):
            return super().dumps(obj, **kwargs)

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        if orjson is None or kwargs:
            return super().loads(s, **kwargs)
        try:
            return orjson.loads(s)
        except orjson.JSONDecodeError:
            return super().loads(s, **kwargs)
