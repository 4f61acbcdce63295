"""What the hooks did, told to whoever listens: the MCM logic reports, the server counts.

The MCM package must not import the HTTP server (tests/test_architecture.py), yet the server's metrics count what
the MCM logic does (orphans collected, drains started). So the logic emits named events here and
hooks.server.metrics subscribes to them; with no subscriber, an event costs a dictionary lookup.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger("hooks.events")

ORPHANS_COLLECTED = "orphans_collected"  # count
DRAIN_STARTED = "drain_started"  # retry: bool
API_FAILURE = "api_failure"  # operation: str, code: the MCM code
RATE_LIMIT_WAIT = "rate_limit_wait"  # operation: str, seconds: float
TARGET_READ = "target_read"  # outcome: ok | not_found | unreachable | rejected | error (hooks/target/api.py)
TARGET_DECISION = "target_decision"  # outcome: ok | recovered | frozen | held (hooks/target/freeze.py Decision.metric)
# value: a secret the current request now holds (a bootstrap token): hooks.server.logs never logs it in this request.
SECRET_SEEN = "secret_seen"

Listener = Callable[..., None]
_listeners: dict[str, list[Listener]] = {}


def subscribe(event: str, listener: Listener) -> None:
    """Call `listener(count, **labels)` for every `emit(event, count, **labels)`; subscribing twice is a no-op."""
    listeners = _listeners.setdefault(event, [])
    if listener not in listeners:
        listeners.append(listener)


def emit(event: str, count: int = 1, **labels: object) -> None:
    """Tell every listener of `event`; a failing listener is logged and never fails the hook."""
    for listener in _listeners.get(event, ()):
        try:
            listener(count, **labels)
        except Exception:  # a metric must never break a hook call
            log.warning("listener of %s failed", event, exc_info=True)
