"""Errors of the Equinix Metal client, one class per thing a caller can act on.

Every error keeps the HTTP status, every API message, the request id and a parsed Retry-After, and knows
whether the answer came from the API itself (JSON and an X-Request-Id) or from an intermediary such as a
load balancer. `mcm_code` is the machine-controller-manager error code users know from MCM; hooks.equinix.driver
carries it into `hooks.driver.DriverError`. Whether a call is retried is the client's decision (hooks.equinix.retry).
Messages never contain the API token or userdata.
"""

from __future__ import annotations

from hooks.driver import (
    INVALID_ARGUMENT,
    NOT_FOUND,
    PERMISSION_DENIED,
    RESOURCE_EXHAUSTED,
    UNAUTHENTICATED,
    UNAVAILABLE,
    UNKNOWN_CODE,
)


class MetalError(Exception):
    """Base class: any failed Equinix Metal API call."""

    mcm_code = UNKNOWN_CODE

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        messages: list[str] | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
        from_api: bool = False,
        operation: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.messages = list(messages or [])
        self.request_id = request_id
        self.retry_after = retry_after
        self.from_api = from_api
        self.operation = operation

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status!r}, message={self.message!r})"


class TransportError(MetalError):
    """Timeout, reset, refused connection, or a body that is not the JSON we expected: the outcome is unknown."""

    mcm_code = UNAVAILABLE


class NotFound(MetalError):
    """404 from the API itself (never from an intermediary)."""

    mcm_code = NOT_FOUND


class Unauthorized(MetalError):
    """401: the token is missing, wrong or revoked."""

    mcm_code = UNAUTHENTICATED


class Forbidden(MetalError):
    """403: not allowed. Not 'not found': a device behind a 403 may still exist and bill."""

    mcm_code = PERMISSION_DENIED


class Unprocessable(MetalError):
    """422: the request was rejected as invalid."""

    mcm_code = INVALID_ARGUMENT


class CapacityError(MetalError):
    """No provisionable hardware, or no usable hardware reservation; worth retrying later."""

    mcm_code = RESOURCE_EXHAUSTED


class RateLimited(MetalError):
    """429, or a 403 that says it is a rate limit; `retry_after` says when to come back."""

    mcm_code = RESOURCE_EXHAUSTED


class ServerError(MetalError):
    """5xx, from the API or from an intermediary (HTML 502 from a load balancer)."""

    mcm_code = UNAVAILABLE


class UnexpectedResponse(MetalError):
    """Any other status we have no better class for."""

    mcm_code = UNKNOWN_CODE
