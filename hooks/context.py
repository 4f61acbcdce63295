"""What a hook needs from outside its request: settings, a clock, a way to reach the Metal API, runtime state.

Passing these in keeps every decision a pure function that tests drive with a fixed clock and a fake API.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from hooks.config import Settings
from hooks.driver import Driver

if TYPE_CHECKING:
    from hooks.equinix.client import MetalClient
    from hooks.target.node_read import ReaderFactory


def utc_now() -> datetime:
    return datetime.now(UTC)


class BadRequest(ValueError):
    """The hook request itself is malformed; answered with HTTP 400 and a JSON error."""


@dataclass
class Runtime:
    """What the hooks of one app keep between calls (created by create_app; shared by its threads).

    Nothing here is needed for correctness across restarts or workers: losing it costs one extra scan. (The device
    listing cache is the Equinix driver's own: hooks/equinix/device_cache.py.)
    """

    # MachineClass uid → when its last orphan scan ran (hooks/mcm/machineclass.py rate-limits scans with it).
    scan_times: dict[str, datetime] = field(default_factory=dict)


@dataclass(frozen=True)
class HookContext:
    settings: Settings
    # Builds a client for one API token; the token never leaves the client.
    metal: Callable[[str], MetalClient]
    clock: Callable[[], datetime] = utc_now
    # The provider seam the Machine hooks call (hooks.server.app gives it one; hooks.mcm never builds one).
    driver: Driver | None = None
    runtime: Runtime = field(default_factory=Runtime)
    # Builds the reader of a target cluster's API from its kubeconfig (None: hooks.target.api.TargetReader).
    target_reader: ReaderFactory | None = None
