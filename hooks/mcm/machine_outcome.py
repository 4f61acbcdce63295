"""What one Machine hook call decided, and the few steps sync and finalize share to get there.

`Outcome` is the decorator answer in the making; `observed` gathers the state machine's input; `answer` turns the
state machine's Transition into the status to write. Shared by hooks.mcm.machine (sync) and
hooks.mcm.machine_deletion (finalize).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hooks import objects
from hooks.context import HookContext
from hooks.driver import Device, Driver
from hooks.mcm import fail_permit
from hooks.mcm import machine_state as state
from hooks.mcm import vocabulary as mcm
from hooks.mcm.machine_request import HookRequest
from hooks.mcm.machine_status import build_status

# Longest resync we ask for. A Retry-After far in the future must not become a Go time.Duration that overflows in
# Metacontroller (on amd64 it turns negative: an immediate re-queue); resyncPeriodSeconds still applies anyway.
MAX_RESYNC = 3600.0


@dataclass
class Outcome:
    """What one hook call decided; `response()` turns it into the decorator answer."""

    status: dict[str, Any] | None = None
    labels: dict[str, Any] = field(default_factory=dict)
    annotations: dict[str, Any] = field(default_factory=dict)
    resync: float = 0.0
    finalized: bool | None = None
    attachments: list[dict[str, Any]] | None = None
    device: Device | None = field(default=None, repr=False)  # the live device this call saw (not in the answer)

    def response(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.labels:
            out["labels"] = self.labels
        if self.annotations:
            out["annotations"] = self.annotations
        if self.status is not None:
            out["status"] = self.status
        if self.attachments is not None:
            out["attachments"] = self.attachments
        if self.resync > 0:
            out["resyncAfterSeconds"] = round(min(self.resync, MAX_RESYNC), 1)
        if self.finalized is not None:
            out["finalized"] = self.finalized
        return out


def driver_of(ctx: HookContext) -> Driver:
    driver = getattr(ctx, "driver", None)
    if driver is None:
        raise RuntimeError("the hook context has no driver: hooks.server.app.create_app gives it one")
    return driver


def observed(req: HookRequest, ctx: HookContext) -> state.Observed:
    may_fail = fail_permit.may_fail(req.machine, objects.mapping(req.related, mcm.MACHINESET_KEY))
    return state.Observed(req.machine, req.node, ctx.clock(), ctx.settings, may_fail)


def answer(req: HookRequest, seen: state.Observed, step: state.Transition, **status: Any) -> Outcome:
    written = build_status(req.status, phase=step.phase, operation=step.operation, now=seen.now, **status)
    return Outcome(status=written, resync=step.resync, finalized=step.finalized)


def decide(req: HookRequest, ctx: HookContext, event: state.Event) -> Outcome:
    """The state machine's answer to `event`, for a step that needs nothing else written."""
    seen = observed(req, ctx)
    return answer(req, seen, state.next_status(seen, event))
