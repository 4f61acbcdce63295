"""What a hook needs from outside its request: settings, a clock and a way to reach the Metal API.

Passing these in keeps every decision a pure function that tests drive with a fixed clock and a fake API.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from hooks.config import Settings

if TYPE_CHECKING:
    from hooks.driver import Driver
    from hooks.equinix.client import MetalClient


def utc_now() -> datetime:
    return datetime.now(UTC)


class BadRequest(ValueError):
    """The hook request itself is malformed; answered with HTTP 400 and a JSON error."""


@dataclass(frozen=True)
class HookContext:
    settings: Settings
    # Builds a client for one API token; the token never leaves the client.
    metal: Callable[[str], MetalClient]
    clock: Callable[[], datetime] = utc_now
    extras: dict[str, Any] = field(default_factory=dict)
    driver: Driver | None = None  # the provider seam (hooks.driver); the MachineClass hook needs it
