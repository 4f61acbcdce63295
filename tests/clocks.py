"""Monotonic clocks that only the test moves, so time-based behaviour is checked without waiting for real time.

The hooks' wall clock (a datetime for HookContext.clock) is machine_support.Clock; these stand in for
`time.monotonic` (and `time.sleep`) where code takes them as parameters.
"""

from __future__ import annotations


class ManualClock:
    """A `monotonic()` callable whose time moves only when the test sets `now` or calls advance()."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class SleepClock:
    """monotonic() and sleep() that only move when the code under test sleeps, so retries take no real time."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
