"""One deadline per hook call, read from the controller config Metacontroller sends with every request."""

from __future__ import annotations

import pytest

from hooks.deadline import ANSWER_MARGIN, DEFAULT_WEBHOOK_TIMEOUT, Deadline, DeadlineExceeded, webhook_timeout
from tests.clocks import ManualClock


def _body(timeout: object) -> dict[str, object]:
    return {"controller": {"spec": {"hooks": {"sync": {"webhook": {"url": "http://h/machine/sync",
                                                                    "timeout": timeout}}}}}}


def test_the_timeout_comes_from_the_controller_config_in_the_request() -> None:
    assert webhook_timeout(_body("30s"), "sync") == 30.0
    assert webhook_timeout(_body("1m"), "sync") == 60.0
    # Metacontroller's default (pkg/hooks/webhook.go webhookTimeout) when unset or not positive.
    for odd in (None, "0s", "-5s", "soon", 7):
        assert webhook_timeout(_body(odd), "sync") == DEFAULT_WEBHOOK_TIMEOUT
    assert webhook_timeout({}, "finalize") == DEFAULT_WEBHOOK_TIMEOUT
    assert webhook_timeout({"controller": "junk"}, "sync") == DEFAULT_WEBHOOK_TIMEOUT


def test_a_deadline_leaves_a_margin_and_bounds_every_call() -> None:
    clock = ManualClock()
    deadline = Deadline.for_request(_body("30s"), "sync", clock)
    assert deadline.left() == pytest.approx(30.0 - ANSWER_MARGIN)
    assert deadline.bound(5.0) == 5.0
    clock.advance(26.0)
    assert deadline.bound(5.0) == pytest.approx(2.0)
    clock.advance(2.5)
    assert deadline.expired()
    with pytest.raises(DeadlineExceeded, match="next sync tries again"):
        deadline.bound(5.0, "creating the device")
