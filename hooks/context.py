"""What a hook needs from outside its request: settings, a clock, a way to reach the Metal API, runtime state.

Passing these in keeps every decision a pure function that tests drive with a fixed clock and a fake API.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from hooks.config import Settings

if TYPE_CHECKING:
    from hooks.equinix.client import MetalClient
    from hooks.equinix.device_cache import DeviceCache


def utc_now() -> datetime:
    return datetime.now(UTC)


class BadRequest(ValueError):
    """The hook request itself is malformed; answered with HTTP 400 and a JSON error."""


@dataclass
class Runtime:
    """What the hooks of one app keep between calls (created by create_app; shared by its threads).

    Nothing here is needed for correctness across restarts or workers: losing it costs one extra scan or listing.
    """

    # MachineClass uid → when its last orphan scan ran (hooks/mcm/machineclass.py rate-limits scans with it).
    scan_times: dict[str, datetime] = field(default_factory=dict)
    # The device listing cache the Machine hooks use; None: the worker's own cache when METAL_DEVICE_CACHE_SECONDS
    # turns it on, looked up per call so a forked worker never serves its parent's listings
    # (hooks/equinix/device_cache.py). Tests and the bench put their own here.
    device_cache: DeviceCache | None = None


@dataclass(frozen=True)
class HookContext:
    settings: Settings
    # Builds a client for one API token; the token never leaves the client.
    metal: Callable[[str], MetalClient]
    clock: Callable[[], datetime] = utc_now
    runtime: Runtime = field(default_factory=Runtime)
