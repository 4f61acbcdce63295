"""A Metal API session that reads but never writes, for `python -m hooks replay --dry-run`.

Replaying a recorded request with its real token must not create or delete a server by accident. GETs go to the
API as usual, so the answer reflects what really exists; a POST, PUT, PATCH or DELETE is not sent: it is recorded
in words (method, path and the harmless fields of its body) and answered as the API would accept it, so the hook
goes on and shows what it would have written.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

import requests
from requests.adapters import HTTPAdapter

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Fields of a create body that may be shown; userdata and anything else stays out of the record.
SHOWN_FIELDS = ("hostname", "plan", "metro", "operating_system", "billing_cycle", "hardware_reservation_id")
DRY_RUN_DEVICE_ID = str(uuid.UUID(int=0, version=4))


class ReadOnlyAdapter(HTTPAdapter):
    """Sends reads; records writes and answers them with a plausible acceptance."""

    def __init__(self) -> None:
        super().__init__()
        self.would_have: list[str] = []

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        method = (request.method or "GET").upper()
        if method in READ_METHODS:
            return super().send(request, *args, **kwargs)
        path = urlparse(request.url or "").path
        body = _json(request.body)
        shown = {k: body[k] for k in SHOWN_FIELDS if isinstance(body.get(k), str | int) and body.get(k) != ""}
        self.would_have.append(f"{method} {path}" + (f" {json.dumps(shown, sort_keys=True)}" if shown else ""))
        return _accepted(request, method, body)


def _json(raw: Any) -> dict[str, Any]:
    try:
        value = json.loads(raw) if raw else {}
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _accepted(request: requests.PreparedRequest, method: str, body: dict[str, Any]) -> requests.Response:
    response = requests.Response()
    response.request = request
    response.url = request.url or ""
    response.headers["X-Request-Id"] = "dry-run"
    if method == "POST":
        device = {
            "id": DRY_RUN_DEVICE_ID,
            "hostname": body.get("hostname") or "",
            "state": "queued",
            "tags": [t for t in body.get("tags") or [] if isinstance(t, str)],
            "metro": {"code": body.get("metro") or ""},
            "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "ip_addresses": [],
        }
        response.status_code = 201
        response.headers["Content-Type"] = "application/json"
        response._content = json.dumps(device).encode()
    else:
        response.status_code = 204
        response._content = b""
    return response


def read_only_session(base: requests.Session | None = None) -> tuple[requests.Session, ReadOnlyAdapter]:
    """A session (a fresh one, or `base` re-mounted) whose writes go to a ReadOnlyAdapter, and that adapter."""
    session = base or requests.Session()
    adapter = ReadOnlyAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session, adapter
