"""The timer loop of the emulator's stand-ins for cluster components (NodeJoiner, JobRunner).

Like the controllers they replace, they look again on a timer rather than on every change; tests that want one
deterministic step call tick() themselves instead of start().
"""

from __future__ import annotations

import threading
from typing import Self


class Poller:
    """Calls tick() every `poll_interval` seconds in a daemon thread between start() and stop()."""

    thread_name = "poller"

    def __init__(self, poll_interval: float) -> None:
        self.poll_interval = poll_interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self._poll()
            self._stop.wait(self.poll_interval)

    def _poll(self) -> None:
        """One round of the loop; a subclass that must survive a failing round catches it here."""
        self.tick()
