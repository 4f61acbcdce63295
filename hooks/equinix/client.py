"""A small client for the Equinix Metal REST API: the device calls the hooks need.

Every failure becomes one of the errors in hooks.equinix.errors, with the status, every API message and the request
id kept, and an answer from an intermediary (a load balancer's HTML 502 or 404) told apart from the API's own.
Idempotent calls are retried within a time budget; a create never is, because the API has no idempotency key and
a lost answer may hide a device that exists and bills: callers look it up by its tags instead.
The token, userdata and customdata never reach a log, an exception or a repr.
"""

from __future__ import annotations

import contextlib
import html
import json
import logging
import math
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import requests
import urllib3

from hooks import PROJECT, __version__, events
from hooks.deadline import Deadline
from hooks.deadline import current as current_deadline
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
from hooks.redact import redact, secret_strings, shorten

log = logging.getLogger("hooks.metal")

DEFAULT_BASE_URL = "https://api.equinix.com/metal/v1"
DEVICE_INCLUDE: tuple[str, ...] = ("metro",)

BACKOFF_BASE = 0.5  # seconds; the first retry waits up to this long
BACKOFF_CAP = 4.0  # no single backoff wait is longer (a Retry-After may be)
MAX_PAGES = 1000  # a listing longer than this is a server defect, not a project
MAX_MESSAGE_CHARS = 300  # per API message kept in an exception
MAX_EXCERPT_CHARS = 120  # of a non-JSON error body
# No answer is read past this size: a page of 1000 devices with their includes is a few MB.
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
READ_CHUNK = 64 * 1024
# An attempt is not started with less time than this left in the hook call: it could not finish.
MIN_ATTEMPT_SECONDS = 0.05

CAPACITY_PATTERN = re.compile(r"no available hardware reservations|no provisionable|not provisionable", re.I)
RATE_LIMIT_PATTERN = re.compile(r"rate.?limit|too many requests|throttl", re.I)


@dataclass(frozen=True)
class ApiCall:
    """One HTTP attempt, for metrics."""

    operation: str
    status: str  # "201", "404", ... or "transport"
    seconds: float
    attempt: int  # 1 for the first try


@dataclass(frozen=True)
class RateLimit:
    """The X-RateLimit-* headers of the last answer that had any."""

    limit: int | None
    remaining: int | None
    reset: float | None  # as sent: unix seconds


@dataclass
class DeviceCreate:
    """The body of a create (DeviceCreateInMetroInput); fields left at None are not sent."""

    metro: str
    plan: str
    operating_system: str
    hostname: str | None = None
    billing_cycle: str | None = None
    userdata: str | None = field(default=None, repr=False)
    customdata: dict | None = field(default=None, repr=False)
    tags: list[str] | None = None
    project_ssh_keys: list[str] | None = None
    user_ssh_keys: list[str] | None = None
    hardware_reservation_id: str | None = None
    ipxe_script_url: str | None = None
    always_pxe: bool | None = None
    ip_addresses: list[dict] | None = None
    description: str | None = None
    locked: bool | None = None
    termination_time: str | None = None
    features: list[str] | None = None
    no_ssh_keys: bool | None = None

    def to_body(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def secrets(self) -> list[str]:
        """What must be redacted from anything the API says back about this request."""
        return secret_strings(self.userdata) + secret_strings(self.customdata)


class _Secret:
    """Holds the token so that no repr, vars() dump or pytest --showlocals shows it."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "'[redacted]'"


class MetalClient:
    """Equinix Metal API client for one token."""

    def __init__(
        self,
        token: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        connect_timeout: float = 3.0,
        read_timeout: float = 5.0,
        retry_budget: float = 6.0,
        max_attempts: int = 4,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        observer: Callable[[ApiCall], None] | None = None,
        user_agent: str | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if retry_budget < 0:
            raise ValueError("retry_budget must not be negative")
        self._token = _Secret(token)
        self.base_url = base_url.rstrip("/")
        self.timeout = (connect_timeout, read_timeout)
        self.retry_budget = retry_budget
        self.max_attempts = max_attempts
        self.session = session or requests.Session()
        self._sleep = sleep
        self._monotonic = monotonic
        self._rng = rng or random.Random()
        self._observer = observer
        self.user_agent = user_agent or f"{PROJECT}/{__version__}"
        self.rate_limit: RateLimit | None = None

    def __repr__(self) -> str:
        return f"MetalClient(base_url={self.base_url!r})"

    def close(self) -> None:
        self.session.close()

    # -- devices ---------------------------------------------------------------------------------------------

    def create_device(self, project_id: str, request: DeviceCreate) -> dict:
        """POST once. A timeout, reset or 5xx leaves the outcome unknown: the caller must look the device up by tag."""
        return self._call(
            "create_device",
            "POST",
            f"/projects/{_segment(project_id, 'project_id')}/devices",
            body=request.to_body(),
            retry=False,
            secrets=request.secrets(),
        )

    def get_device(self, device_id: str, *, include: Sequence[str] = DEVICE_INCLUDE) -> dict:
        return self._call("get_device", "GET", f"/devices/{_segment(device_id, 'device_id')}", params=_include(include))

    def list_devices(
        self,
        project_id: str,
        *,
        tag: str | None = None,
        hostname: str | None = None,
        search: str | None = None,
        per_page: int = 100,
        include: Sequence[str] = DEVICE_INCLUDE,
    ) -> list[dict]:
        """Every matching device, from every page: a lookup that misses a page would create a duplicate."""
        params = {"tag": tag, "hostname": hostname, "search": search, **_include(include)}
        return self._list(
            "list_devices",
            f"/projects/{_segment(project_id, 'project_id')}/devices",
            "devices",
            {k: v for k, v in params.items() if v is not None},
            per_page,
        )

    def delete_device(self, device_id: str, *, force: bool = False) -> None:
        """DELETE; raises NotFound when the API says the device does not exist (callers treat that as gone)."""
        self._call(
            "delete_device",
            "DELETE",
            f"/devices/{_segment(device_id, 'device_id')}",
            params={"force_delete": "true"} if force else None,
            want_body=False,
        )

    def update_tags(self, device_id: str, tags: list[str]) -> dict:
        """Replace the device's tags (PUT is idempotent, so it is retried like a read)."""
        return self._call(
            "update_tags",
            "PUT",
            f"/devices/{_segment(device_id, 'device_id')}",
            params=_include(DEVICE_INCLUDE),
            body={"tags": list(tags)},
        )

    # -- machinery -------------------------------------------------------------------------------------------

    def _list(self, operation: str, path: str, key: str, params: dict[str, str], per_page: int) -> list[dict]:
        """Follow meta.next (or meta.last_page) to the end, refusing to return a listing we know is incomplete.

        Paging is by offset, so a device created or deleted while we read can shift another one across a page
        boundary and out of sight. When the pages report different `meta.total`s, or the count we collected disagrees
        with it, the listing is read once more; if it is still inconsistent the call fails, because a caller that
        decides "no device, create one" on a short list makes a duplicate.
        """
        if not 1 <= per_page <= 1000:
            raise ValueError("per_page must be between 1 and 1000")
        started = self._monotonic()
        for attempt in (1, 2):
            items, totals = self._list_once(operation, path, key, params, per_page, started)
            if not totals or totals == {len(items)}:
                return items
            if attempt == 2:
                counted = "/".join(str(t) for t in sorted(totals))
                raise UnexpectedResponse(
                    f"{operation} failed: the listing changed while it was read ({len(items)} items, the API counts "
                    f"{counted}); refusing to return an incomplete listing",
                    operation=operation,
                    status=200,
                )
        raise AssertionError("unreachable")

    def _list_once(
        self, operation: str, path: str, key: str, params: dict[str, str], per_page: int, started: float
    ) -> tuple[list[dict], set[int]]:
        """One pass over every page, with the `meta.total` each page reported (they differ if the list changed)."""
        items: list[dict] = []
        seen_ids: set[str] = set()
        fetched: set[int] = set()
        totals: set[int] = set()
        page: int | None = 1
        while page is not None:
            if page in fetched or len(fetched) >= MAX_PAGES:
                raise UnexpectedResponse(
                    f"{operation} failed: the API's pagination does not end (page {page} again or over {MAX_PAGES} "
                    "pages); refusing to return an incomplete listing",
                    operation=operation,
                )
            fetched.add(page)
            body = self._call(
                operation, "GET", path, params={**params, "page": str(page), "per_page": str(per_page)}, started=started
            )
            page_items = body.get(key)
            if not isinstance(page_items, list):
                raise TransportError(
                    f"{operation} failed: the answer has no {key!r} list", operation=operation, status=200
                )
            fresh = repeated = 0
            for item in page_items:
                if not isinstance(item, dict):
                    # It may have been the very device a caller looks for; a listing without it is incomplete.
                    raise UnexpectedResponse(
                        f"{operation} failed: page {page} holds an entry that is not an object "
                        f"({shorten(repr(item), 40, [self._token.value], collapse=True)}); "
                        "refusing to return an incomplete listing",
                        operation=operation,
                        status=200,
                    )
                item_id = item.get("id")
                if isinstance(item_id, str):
                    if item_id in seen_ids:
                        repeated += 1
                        continue
                    seen_ids.add(item_id)
                items.append(item)
                fresh += 1
            if repeated and not fresh:
                # A server that ignores `page` hands back page 1 forever; what we have is not the whole list.
                raise UnexpectedResponse(
                    f"{operation} failed: page {page} repeated earlier items only; the API seems to ignore paging",
                    operation=operation,
                )
            meta = body.get("meta")
            if isinstance(meta, dict) and isinstance(meta.get("total"), int):
                totals.add(meta["total"])
            # An empty page ends the listing only when the API says it is the last one.
            page = _next_page(meta, page)
        return items, totals

    def _call(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: dict | None = None,
        retry: bool = True,
        want_body: bool = True,
        secrets: Sequence[str] = (),
        started: float | None = None,
    ) -> Any:
        """One API operation: attempts, backoff and error mapping. `started` lets a listing share one budget."""
        secrets = [self._token.value, *secrets]
        started = self._monotonic() if started is None else started
        deadline = current_deadline()
        attempt = 0
        while True:
            attempt += 1
            timeout = _within(self.timeout, deadline.left())
            if timeout is None:
                # Not sent at all, so not ambiguous even for a create; the hook answers "try again".
                raise TransportError(f"{operation} failed: no time left in this hook call before its webhook "
                                     "timeout; the next sync tries again", operation=operation)
            t0 = self._monotonic()
            try:
                response = self.session.request(
                    method,
                    self.base_url + path,
                    params=params,
                    json=body,
                    headers=self._headers(),
                    timeout=timeout,
                    # A redirect would carry X-Auth-Token to wherever it points; requests only strips Authorization.
                    allow_redirects=False,
                    stream=True,  # the body is read below, bounded in time and size
                )
                try:
                    _read_body(response, deadline, MAX_RESPONSE_BYTES, timeout[1])
                finally:
                    if response.raw is not None:
                        response.close()
            except requests.RequestException as exc:
                error: MetalError = TransportError(
                    redact(_transport_message(operation, exc, timeout, retry), secrets), operation=operation
                )
                status = "transport"
                error.__cause__ = exc
            else:
                status = str(response.status_code)
                self._record_rate_limit(response)
                result = _result(operation, response, want_body, retry, secrets)
                if not isinstance(result, MetalError):
                    self._report(operation, method, path, status, t0, attempt)
                    return result
                error = result
            self._report(operation, method, path, status, t0, attempt)
            if not (retry and _retryable(error)) or attempt >= self.max_attempts:
                raise error
            wait = self._rng.uniform(0.0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1)))
            if error.retry_after is not None:
                wait = max(wait, error.retry_after)
            if self._monotonic() - started + wait > self.retry_budget:
                raise error
            if wait + MIN_ATTEMPT_SECONDS >= deadline.left():
                raise error  # the retry could not finish before the webhook timeout: the next sync tries again
            log.debug("%s: retrying in %.2f s after %s", operation, wait, status)
            if isinstance(error, RateLimited):
                events.emit(events.RATE_LIMIT_WAIT, operation=operation, seconds=wait)
            self._sleep(wait)

    def _headers(self) -> dict[str, str]:
        return {
            "X-Auth-Token": self._token.value,
            "User-Agent": self.user_agent,
            "Accept": "application/json",
            "Content-Type": "application/json",
        }

    def _report(self, operation: str, method: str, path: str, status: str, t0: float, attempt: int) -> None:
        seconds = max(0.0, self._monotonic() - t0)
        log.debug("%s %s -> %s in %.3f s (attempt %d)", method, path, status, seconds, attempt)
        if self._observer is not None:
            try:
                self._observer(ApiCall(operation=operation, status=status, seconds=seconds, attempt=attempt))
            except Exception as exc:  # metrics must never break provisioning
                log.warning("API call observer failed: %s", type(exc).__name__)

    def _record_rate_limit(self, response: requests.Response) -> None:
        h = response.headers
        if any(name in h for name in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")):
            self.rate_limit = RateLimit(
                limit=_int(h.get("X-RateLimit-Limit")),
                remaining=_int(h.get("X-RateLimit-Remaining")),
                reset=_float(h.get("X-RateLimit-Reset")),
            )


# -- pure helpers ----------------------------------------------------------------------------------------------


class _BodyTooSlow(requests.exceptions.ReadTimeout):
    """The answer was still arriving when the hook call's time ran out."""


class _BodyTooLarge(requests.exceptions.ContentDecodingError):
    """The answer is larger than any the API sends."""


def _within(timeout: tuple[float, float], left: float) -> tuple[float, float] | None:
    """(connect, read) timeouts no longer than the time left; None when too little is left to try."""
    if left < MIN_ATTEMPT_SECONDS:
        return None
    return (min(timeout[0], left), min(timeout[1], left))


def _read_body(response: requests.Response, deadline: Deadline, limit: int, read_timeout: float) -> None:
    """Read a streamed answer's body into `response`, giving up when the hook call's time runs out or the body
    passes `limit` bytes. Each read returns what one receive brings, so a server that trickles a byte at a time
    is noticed at the deadline rather than after its whole body (the per-receive read timeout alone never fires)."""
    raw = response.raw
    if raw is None or not hasattr(raw, "read1"):  # a response built in memory (tests, the replay dry run)
        return
    chunks: list[bytes] = []
    size = 0
    sock = getattr(getattr(raw, "connection", None), "sock", None)
    try:
        while True:
            left = deadline.left()
            if left <= 0:
                raise _BodyTooSlow("the answer was still arriving when the hook call's time ran out")
            if sock is not None:  # no single receive may wait past the deadline either
                sock.settimeout(max(0.001, min(read_timeout, left)))
            chunk = raw.read1(READ_CHUNK, decode_content=True)
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise _BodyTooLarge(f"the answer is larger than {limit} bytes")
            chunks.append(chunk)
    except (urllib3.exceptions.ReadTimeoutError, TimeoutError) as exc:
        if deadline.left() <= 0:
            raise _BodyTooSlow("the answer was still arriving when the hook call's time ran out") from None
        raise requests.exceptions.ReadTimeout(str(exc)) from None
    except urllib3.exceptions.DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(str(exc)) from None
    except (urllib3.exceptions.ProtocolError, urllib3.exceptions.IncompleteRead) as exc:
        raise requests.exceptions.ChunkedEncodingError(str(exc)) from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise requests.exceptions.ConnectionError(str(exc)) from None
    response._content = b"".join(chunks)
    response._content_consumed = True  # type: ignore[attr-defined]


def _segment(value: str, name: str) -> str:
    """A path segment; an empty id would turn GET /devices/{id} into a different endpoint."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string")
    return quote(value, safe="")


def _include(include: Sequence[str]) -> dict[str, str]:
    return {"include": ",".join(include)} if include else {}


def _int(raw: str | None) -> int | None:
    try:
        return int(raw.strip()) if raw is not None else None
    except ValueError:
        return None


def _float(raw: str | None) -> float | None:
    try:
        return float(raw.strip()) if raw is not None else None
    except ValueError:
        return None


def _retryable(error: MetalError) -> bool:
    """Transport errors, 429 and 5xx (except 501, which will not change); never any other 4xx."""
    if isinstance(error, TransportError):
        return True
    status = error.status or 0
    return status == 429 or (status >= 500 and status != 501)


def _next_page(meta: object, current: int) -> int | None:
    """The page after `current` according to meta.next.href, else meta.last_page; None at the end."""
    if not isinstance(meta, dict):
        return None
    nxt = meta.get("next")
    href = nxt.get("href") if isinstance(nxt, dict) else None
    if isinstance(href, str) and href:
        pages = parse_qs(urlsplit(href).query).get("page")
        number = _int(pages[0]) if pages else None
        return number if number is not None else current + 1
    last, shown = meta.get("last_page"), meta.get("current_page")
    shown = shown if isinstance(shown, int) else current
    if isinstance(last, int) and last > shown:
        return shown + 1
    return None


def _is_json(response: requests.Response) -> bool:
    media = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _result(
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
    cls = _error_class(status, " ".join(messages), from_api)
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


def _error_class(status: int, text: str, from_api: bool) -> type[MetalError]:
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
    seconds = _float(raw)
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
    reset = _float(headers.get("X-RateLimit-Reset"))
    if reset is None or not math.isfinite(reset):
        return None
    return max(0.0, reset - time.time()) if reset > 1e9 else max(0.0, reset)


def _transport_message(
    operation: str, exc: requests.RequestException, timeout: tuple[float, float], idempotent: bool
) -> str:
    """A short reason; requests' own text is long and repeats the URL."""
    if isinstance(exc, _BodyTooSlow):
        reason = "the answer was still arriving when this hook call's time ran out; the next sync tries again"
    elif isinstance(exc, _BodyTooLarge):
        reason = f"the answer is larger than {MAX_RESPONSE_BYTES} bytes"
    elif isinstance(exc, requests.ConnectTimeout):
        reason = f"could not connect within {timeout[0]:g} s"
    elif isinstance(exc, requests.Timeout):
        reason = f"no answer within {timeout[1]:g} s"
    elif isinstance(exc, requests.exceptions.ChunkedEncodingError | requests.exceptions.ContentDecodingError):
        reason = "the answer was cut off"
    else:
        errno = re.search(r"\[Errno -?\d+\] [^'\")\]]+", str(exc))
        reason = "connection failed: " + (errno.group(0).strip() if errno else type(exc).__name__)
    unknown = "" if idempotent else "; the outcome is unknown"
    return f"{operation} failed: {reason}{unknown}"
