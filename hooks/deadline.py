"""One deadline per hook call: every outbound call, retry and delete asks it how much time is left.

Metacontroller gives up on a webhook after the timeout its controller config sets (10 s when unset) and calls
again while the first call may still run. A hook that answers late is worse than one that answers "try again":
two calls may then act at once. The timeout is kept in one place, the controller config, and the request itself
carries that config under `controller`, so the hook reads its own timeout from there.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from hooks import objects
from hooks.mcm.timefmt import parse_duration

# Metacontroller's own default when a webhook names no timeout (pkg/hooks/webhook.go webhookTimeout).
DEFAULT_WEBHOOK_TIMEOUT = 10.0
# Kept back for encoding the answer and the network: the hook answers this long before Metacontroller gives up.
ANSWER_MARGIN = 2.0
MIN_BUDGET = 1.0


class DeadlineExceeded(TimeoutError):
    """Too little time is left to start (or finish) an outbound call; the hook answers "try again" instead."""


def webhook_timeout(body: Any, hook: str) -> float:
    """The timeout of `hook` (sync, finalize, customize) in the controller config the request carries."""
    webhook = objects.mapping(body, "controller", "spec", "hooks", hook, "webhook")
    seconds = parse_duration(webhook.get("timeout"))
    return seconds if seconds is not None and seconds > 0 else DEFAULT_WEBHOOK_TIMEOUT


@dataclass
class Deadline:
    """Seconds left of one hook call, on a monotonic clock."""

    seconds: float
    clock: Callable[[], float] = time.monotonic
    started: float = field(default=-1.0)

    def __post_init__(self) -> None:
        if self.started < 0:
            self.started = self.clock()

    @classmethod
    def for_request(cls, body: Any, hook: str, clock: Callable[[], float] = time.monotonic) -> Deadline:
        return cls(max(MIN_BUDGET, webhook_timeout(body, hook) - ANSWER_MARGIN), clock)

    def left(self) -> float:
        return self.seconds - (self.clock() - self.started)

    def expired(self) -> bool:
        return self.left() <= 0

    def bound(self, wanted: float, what: str = "the call") -> float:
        """`wanted` seconds, or what is left if that is less; DeadlineExceeded when nothing is left."""
        left = self.left()
        if left <= 0:
            raise DeadlineExceeded(f"no time left in this hook call for {what}; the next sync tries again")
        return min(wanted, left)


def unlimited() -> Deadline:
    """A deadline that never runs out, for callers outside a hook call (tools, tests of other things)."""
    return Deadline(float("inf"))


_current: ContextVar[Deadline | None] = ContextVar("hook_deadline", default=None)


def current() -> Deadline:
    """The deadline of the hook call this thread serves (set by the server per request), else one without end."""
    found = _current.get()
    return found if found is not None else unlimited()


@contextmanager
def scope(deadline: Deadline) -> Iterator[Deadline]:
    """Make `deadline` the current one for the calls made inside (the server wraps each hook call in one)."""
    token = _current.set(deadline)
    try:
        yield deadline
    finally:
        _current.reset(token)
