"""A small client for the Equinix Metal REST API: the device calls the hooks need.

Every failure becomes one of the errors in hooks.equinix.errors, with the status, every API message and the request
id kept, and an answer from an intermediary (a load balancer's HTML 502 or 404) told apart from the API's own.
Idempotent calls are retried within a time budget; a create never is, because the API has no idempotency key and
a lost answer may hide a device that exists and bills: callers look it up by its tags instead.
The token, userdata and customdata never reach a log, an exception or a repr.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import quote

import requests

from hooks import PROJECT, __version__, events
from hooks.deadline import Deadline
from hooks.deadline import current as current_deadline
from hooks.equinix import answers, paging, transport
from hooks.equinix import retry as retry_policy
from hooks.equinix.answers import header_float, header_int
from hooks.equinix.errors import MetalError, RateLimited, TransportError
from hooks.redact import redact, secret_strings

log = logging.getLogger("hooks.metal")

DEFAULT_BASE_URL = "https://api.equinix.com/metal/v1"
DEVICE_INCLUDE: tuple[str, ...] = ("metro",)


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
        """Every page of a listing (hooks.equinix.paging), all pages sharing one retry budget."""
        if not 1 <= per_page <= 1000:
            raise ValueError("per_page must be between 1 and 1000")
        started = self._monotonic()

        def fetch(page: int) -> dict:
            page_params = {**params, "page": str(page), "per_page": str(per_page)}
            body: dict = self._call(operation, "GET", path, params=page_params, started=started)
            return body

        return paging.read_all(operation, key, fetch, [self._token.value])

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
        request = _Request(operation, method, path, params, body, retry, want_body, secrets)
        attempt = 0
        while True:
            attempt += 1
            timeout = transport.within(self.timeout, deadline.left())
            if timeout is None:
                # Not sent at all, so not ambiguous even for a create; the hook answers "try again".
                raise TransportError(f"{operation} failed: no time left in this hook call before its webhook "
                                     "timeout; the next sync tries again", operation=operation)
            t0 = self._monotonic()
            status, result = self._attempt(request, timeout, deadline)
            self._report(operation, method, path, status, t0, attempt)
            if not isinstance(result, MetalError):
                return result
            error = result
            if not (retry and retry_policy.retryable(error)) or attempt >= self.max_attempts:
                raise error
            wait = retry_policy.backoff(self._rng, attempt, error, self._monotonic() - started, self.retry_budget,
                                        deadline.left())
            if wait is None:
                raise error
            log.debug("%s: retrying in %.2f s after %s", operation, wait, status)
            if isinstance(error, RateLimited):
                events.emit(events.RATE_LIMIT_WAIT, operation=operation, seconds=wait)
            self._sleep(wait)

    def _attempt(self, request: _Request, timeout: tuple[float, float], deadline: Deadline) -> tuple[str, Any]:
        """Send once and read the answer within the deadline: (status for metrics, body or MetalError)."""
        try:
            response = self.session.request(
                request.method,
                self.base_url + request.path,
                params=request.params,
                json=request.body,
                headers=self._headers(),
                timeout=timeout,
                # A redirect would carry X-Auth-Token to wherever it points; requests only strips Authorization.
                allow_redirects=False,
                stream=True,  # the body is read below, bounded in time and size
            )
            try:
                transport.read_body(response, deadline, transport.MAX_RESPONSE_BYTES, timeout[1])
            finally:
                if response.raw is not None:
                    response.close()
        except requests.RequestException as exc:
            message = transport.transport_message(request.operation, exc, timeout, request.retry)
            error = TransportError(redact(message, request.secrets), operation=request.operation)
            error.__cause__ = exc
            return "transport", error
        self._record_rate_limit(response)
        result = answers.decode(request.operation, response, request.want_body, request.retry, request.secrets)
        return str(response.status_code), result

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
                limit=header_int(h.get("X-RateLimit-Limit")),
                remaining=header_int(h.get("X-RateLimit-Remaining")),
                reset=header_float(h.get("X-RateLimit-Reset")),
            )


# -- helpers ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Request:
    """What one operation sends, and how its answer is read; the same for every attempt."""

    operation: str
    method: str
    path: str
    params: dict[str, str] | None
    body: dict | None = field(repr=False)
    retry: bool  # idempotent: retried, and a lost answer is not "outcome unknown"
    want_body: bool
    secrets: list[str] = field(repr=False)


def _segment(value: str, name: str) -> str:
    """A path segment; an empty id would turn GET /devices/{id} into a different endpoint."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string")
    return quote(value, safe="")


def _include(include: Sequence[str]) -> dict[str, str]:
    return {"include": ",".join(include)} if include else {}
