"""client-go's rate-limited delaying work queue, the piece that gives Metacontroller its concurrency rules.

A key is never handed to two workers at once (a key added while it is being processed is re-queued when the
worker calls `done`), duplicate adds collapse, `add_after` keeps the earliest due time, and failures back off
exponentially per key (`base * 2**failures`, capped) until `forget` resets the count after a success.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable


class WorkQueue:
    def __init__(
        self,
        *,
        backoff_base: float = 0.005,
        backoff_cap: float = 1000.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cond = threading.Condition()
        self._queue: deque[Hashable] = deque()
        self._dirty: set[Hashable] = set()
        self._processing: set[Hashable] = set()
        self._waiting: dict[Hashable, float] = {}
        self._failures: dict[Hashable, int] = {}
        self._base = backoff_base
        self._cap = backoff_cap
        self._now = monotonic
        self._shutdown = False

    def add(self, key: Hashable) -> None:
        with self._cond:
            self._add_locked(key)

    def _add_locked(self, key: Hashable) -> None:
        if self._shutdown or key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._queue.append(key)
            self._cond.notify()

    def add_after(self, key: Hashable, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        with self._cond:
            if self._shutdown:
                return
            due = self._now() + delay
            if key not in self._waiting or due < self._waiting[key]:
                self._waiting[key] = due
            self._cond.notify_all()

    def add_rate_limited(self, key: Hashable) -> float:
        """Requeue after this key's next backoff step; returns the delay used."""
        with self._cond:
            failures = self._failures.get(key, 0)
            self._failures[key] = failures + 1
            delay = min(self._base * (2**failures), self._cap)
        self.add_after(key, delay)
        return delay

    def forget(self, key: Hashable) -> None:
        with self._cond:
            self._failures.pop(key, None)

    def failures(self, key: Hashable) -> int:
        with self._cond:
            return self._failures.get(key, 0)

    def get(self) -> Hashable | None:
        """Block until a key is ready (None after shut_down); the caller must call `done(key)`."""
        with self._cond:
            while True:
                self._promote_due()
                if self._queue:
                    key = self._queue.popleft()
                    self._processing.add(key)
                    self._dirty.discard(key)
                    return key
                if self._shutdown:
                    return None
                timeout = min(self._waiting.values()) - self._now() if self._waiting else None
                self._cond.wait(timeout if timeout is None else max(timeout, 0.0005))

    def _promote_due(self) -> None:
        now = self._now()
        for key, due in list(self._waiting.items()):
            if due <= now:
                del self._waiting[key]
                self._add_locked(key)

    def done(self, key: Hashable) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._queue.append(key)
                self._cond.notify()

    def shut_down(self) -> None:
        with self._cond:
            self._shutdown = True
            self._cond.notify_all()

    def busy(self) -> bool:
        """Anything queued or being processed right now (delayed keys do not count)."""
        with self._cond:
            return bool(self._queue or self._processing)

    def describe(self) -> str:
        """What is queued and what is being processed, for a timeout's message."""
        with self._cond:
            queued = [str(key) for key in list(self._queue)[:5]]
            return f"queued {queued} ({len(self._queue)}), processing {sorted(map(str, self._processing))}"

    def pending_delays(self) -> dict[Hashable, float]:
        with self._cond:
            now = self._now()
            return {k: max(0.0, due - now) for k, due in self._waiting.items()}
