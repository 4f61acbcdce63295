"""What an Equinix Metal API answer means: the decoded body of a success, or the hooks.equinix.errors class that
describes a failure, with every API message (redacted, then cut), the request id and when to come back.

An answer from an intermediary (a load balancer's HTML 502 or 404) is told apart from the API's own: only the API
can say a device does not exist. Pure functions of a requests.Response; nothing here sends anything.
"""

from __future__ import annotations

import contextlib
import html
import json
import math
import re
import time
from collections.abc import Sequence
from email.utils import parsedate_to_datetime
from typing import Any

import requests

from hooks.equinix.errors import (
    CapacityError,
    Forbidden,
    MetalError,
    NotFound,
    RateLimited,
    ServerError,
    TransportError,
    Unauthorized,
    UnexpectedResponse,
    Unprocessable,
)
from hooks.redact import redact, shorten

MAX_MESSAGE_CHARS = 300  # per API message kept in an exception
MAX_EXCERPT_CHARS = 120  # of a non-JSON error body

CAPACITY_PATTERN = re.compile(r"no available hardware reservations|no provisionable|not provisionable", re.I)
RATE_LIMIT_PATTERN = re.compile(r"rate.?limit|too many requests|throttl", re.I)


def decode(
    operation: str, response: requests.Response, want_body: bool, idempotent: bool, secrets: Sequence[str]
) -> Any:
    """The decoded body of a success, or the error (returned, not raised) that describes the answer."""
    request_id = response.headers.get("X-Request-Id") or None
    from_api = _is_json(response) and request_id is not None
    status = response.status_code
    if 200 <= status < 300:
        if not want_body:
            return None
        try:
            decoded = json.loads(response.content)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict):
            return decoded
        unknown = "" if idempotent else "; the outcome is unknown"
        return TransportError(
            f"{operation} failed: HTTP {status} with a body that is not the expected JSON object "
            f"(truncated?){unknown}{_rid(request_id)}",
            status=status,
            request_id=request_id,
            from_api=from_api,
            operation=operation,
        )
    messages = _messages(response, secrets)
    retry_after = _retry_after(response.headers)
    cls = error_class(status, " ".join(messages), from_api)
    if cls is RateLimited and retry_after is None:
        retry_after = _reset_delay(response.headers)
    origin = "" if from_api else " (not from the Metal API)"
    detail = f": {'; '.join(messages)}" if messages else ""
    unknown = "; the outcome is unknown" if cls is ServerError and not idempotent else ""
    message = f"{operation} failed: HTTP {status}{origin}{detail}{unknown}{_rid(request_id)}"
    return cls(
        redact(message, secrets),
        status=status,
        messages=messages,
        request_id=request_id,
        retry_after=retry_after,
        from_api=from_api,
        operation=operation,
    )


def error_class(status: int, text: str, from_api: bool) -> type[MetalError]:
    """The error class for a failed answer's status and messages."""
    if status == 401:
        return Unauthorized
    if status == 403:
        return RateLimited if RATE_LIMIT_PATTERN.search(text) else Forbidden
    if status == 404:
        # Only the API can say a device does not exist; a proxy's 404 (wrong METAL_API_URL, a routing fault)
        # says nothing about it, and calling it NotFound would let a caller forget a device that still bills.
        return NotFound if from_api else UnexpectedResponse
    if status in (422, 503) and CAPACITY_PATTERN.search(text):
        return CapacityError
    if status == 422:
        return Unprocessable
    if status == 429:
        return RateLimited
    return ServerError if status >= 500 else UnexpectedResponse


def header_int(raw: str | None) -> int | None:
    """A header's (or query value's) integer, None when absent or not a number."""
    try:
        return int(raw.strip()) if raw is not None else None
    except ValueError:
        return None


def header_float(raw: str | None) -> float | None:
    """A header's number, None when absent or not a number."""
    try:
        return float(raw.strip()) if raw is not None else None
    except ValueError:
        return None


def _is_json(response: requests.Response) -> bool:
    media = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _rid(request_id: str | None) -> str:
    return f" (request id {request_id})" if request_id else ""


def _messages(response: requests.Response, secrets: Sequence[str] = ()) -> list[str]:
    """Every message in {"error": ...} and {"errors": [...]}; for anything else a short excerpt of the text.

    Each one is redacted whole before it is cut (hooks.redact.shorten): a secret straddling the cut, or echoed
    with its whitespace changed, would otherwise survive as a fragment no redaction recognises.
    """
    decoded: Any = None
    if response.content:
        try:
            decoded = json.loads(response.content)
        except ValueError:
            decoded = None
    if isinstance(decoded, dict):
        found: list[str] = []
        # "message" is not in the spec's Error schema; read it only when neither documented key says anything.
        for keys in (("error", "errors"), ("message",)):
            for key in keys:
                value = decoded.get(key)
                items = value if isinstance(value, list) else [value]
                found += [_short(_as_text(item), secrets) for item in items if item not in (None, "", [], {})]
            if found:
                return found
    excerpt = _excerpt(response.text if response.content else "", secrets)
    return [excerpt] if excerpt else ([response.reason] if response.reason else [])


def _as_text(item: object) -> str:
    """Errors are documented as strings; tolerate objects such as {"code": ..., "message": ...}."""
    if isinstance(item, str):
        return item
    if isinstance(item, dict) and isinstance(item.get("message"), str):
        code = item.get("code")
        return f"{code}: {item['message']}" if isinstance(code, str) and code else item["message"]
    try:
        return json.dumps(item, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return str(item)


def _short(text: str, secrets: Sequence[str], limit: int = MAX_MESSAGE_CHARS) -> str:
    """Redact, collapse whitespace, cut: in that order (hooks.redact.shorten)."""
    return shorten(text, limit, secrets, collapse=True)


def _excerpt(body: str, secrets: Sequence[str] = ()) -> str:
    """A readable line from an HTML or text body: the title if there is one, else the text without tags.

    The body is redacted before the tags are stripped as well as after: a secret may be split by markup.
    """
    body = redact(body, secrets)
    title = re.search(r"<title[^>]*>(.*?)</title>", body, re.I | re.S)
    text = title.group(1) if title and title.group(1).strip() else body
    text = re.sub(r"<(script|style)\b.*?</\1\s*>", " ", text, flags=re.I | re.S)
    return _short(html.unescape(re.sub(r"<[^>]*>", " ", text)), secrets, MAX_EXCERPT_CHARS)


def _retry_after(headers: Any) -> float | None:
    """Retry-After as seconds from now: integer seconds or an HTTP date (measured against the server's Date)."""
    raw = (headers.get("Retry-After") or "").strip()
    if not raw:
        return None
    seconds = header_float(raw)
    if seconds is not None:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(raw).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    now = time.time()
    server_date = headers.get("Date")
    if server_date:
        with contextlib.suppress(TypeError, ValueError, IndexError):
            now = parsedate_to_datetime(server_date).timestamp()
    return max(0.0, when - now)


def _reset_delay(headers: Any) -> float | None:
    """Without Retry-After, X-RateLimit-Reset (unix seconds, or seconds to wait if small) says when to return."""
    reset = header_float(headers.get("X-RateLimit-Reset"))
    if reset is None or not math.isfinite(reset):
        return None
    return max(0.0, reset - time.time()) if reset > 1e9 else max(0.0, reset)
