"""One Driver call about a Machine, checked, and how its API failures reach MCM: a `DriverError` with MCM's code
and a message without the token or userData, a WARN line and an API-failure event.

Shared by the Machine side of `EquinixDriver` (hooks.equinix.driver) and its create (hooks.equinix.creation).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from hooks import events
from hooks.driver import Device, DriverError, MachineRequest
from hooks.equinix import devices
from hooks.equinix.errors import MetalError, RateLimited
from hooks.equinix.providerspec import Resolution, resolve
from hooks.redact import redact

# Its lines are about Machines (created, deleted, duplicate): the logger name they always had.
log = logging.getLogger("hooks.machine")

# The Go provider's text for a failed create (core.go CreateMachine), kept so MCM users recognise it.
CREATE_FAILED_PREFIX = "Could not create machine: "


@dataclass(frozen=True)
class MachineCall:
    """One request's checked inputs: the Machine's identity, its resolution and an API client for its token."""

    name: str
    namespace: str
    uid: str
    res: Resolution
    client: Any
    machine: Mapping[str, Any]
    machine_class: Mapping[str, Any] | None = None
    installation_id: str = ""

    @property
    def project(self) -> str:
        assert self.res.project_id
        return self.res.project_id

    @property
    def metro(self) -> str:
        return self.res.spec.metro if self.res.spec else ""

    def device(self, raw: Mapping[str, Any]) -> Device:
        return devices.to_device(raw, fallback_metro=self.metro, hostname=self.name)


def resolve_request(request: MachineRequest) -> Resolution:
    """The request's providerSpec and Secret, checked (hooks.equinix.providerspec)."""
    return resolve(request.machine, request.machine_class, request.secrets)


def report_failure(call: MachineCall, exc: MetalError) -> None:
    """An API failure is visible outside .status: a WARN line naming the Machine, the operation, the HTTP status
    and MCM's code (the log scope adds the hook route), and an event the server's metrics count."""
    status = exc.status if exc.status is not None else "none (no answer)"
    log.warning("machine %s/%s: Metal API %s failed: status %s, errorCode %s", call.namespace, call.name,
                exc.operation or "call", status, exc.mcm_code,
                extra={"machine": f"{call.namespace}/{call.name}", "api_status": exc.status,
                       "error_code": exc.mcm_code, "operation": exc.operation})
    events.emit(events.API_FAILURE, operation=exc.operation or "unknown", code=exc.mcm_code)


def driver_error(exc: MetalError, call: MachineCall, prefix: str = "", extra: tuple[str, ...] = (), *,
                 code: str = "") -> DriverError:
    """`extra`: secrets beyond the Secret's (the rendered userData of a create); `code` overrides MCM's code."""
    report_failure(call, exc)
    retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
    return DriverError(prefix + redact(str(exc), [*call.res.secrets(), *extra]), code or exc.mcm_code,
                       retry_after=retry_after)


@contextmanager
def translated(call: MachineCall) -> Iterator[None]:
    """The client's exceptions as DriverError with MCM's code; messages without the token or userData."""
    try:
        yield
    except MetalError as exc:
        raise driver_error(exc, call) from exc
