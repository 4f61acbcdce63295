"""Pieces of the emulator that decide whether a hook answer counts and when a key runs again."""

from __future__ import annotations

import threading
import time

import pytest

from emulator.hookcall import HookError, decode_response, parse_duration, parse_retry_after
from emulator.workqueue import WorkQueue


@pytest.mark.parametrize(("text", "seconds"), [("10s", 10.0), ("1m30s", 90.0), ("250ms", 0.25), ("0", 0.0),
                                               ("1.5h", 5400.0), (None, None)])
def test_go_durations(text: str | None, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


def test_bad_duration_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration("10 seconds")


def test_retry_after_seconds_or_http_date() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=lambda: 1445412500.0) == 10.0
    assert parse_retry_after("soon") == 0.0
    assert parse_retry_after(None) == 0.0


def test_strict_decoding_is_case_sensitive_and_checks_nested_rules() -> None:
    with pytest.raises(HookError, match='unknown field "ResyncAfterSeconds"'):
        decode_response('{"ResyncAfterSeconds": 1}', "composite", strict=True)
    assert decode_response('{"ResyncAfterSeconds": 1}', "composite", strict=False) == {}
    with pytest.raises(HookError, match="unknown field"):
        decode_response('{"relatedResources": [{"apiVersion": "v1", "resource": "secrets", "name": ["x"]}]}',
                        "customize", strict=True)
    loose = decode_response('{"relatedResources": [{"apiVersion": "v1", "resource": "secrets", "name": ["x"]}]}',
                            "customize", strict=False)
    assert loose == {"relatedResources": [{"apiVersion": "v1", "resource": "secrets"}]}


def test_types_are_checked_in_both_modes() -> None:
    for strict in (True, False):
        with pytest.raises(HookError, match="labels"):
            decode_response('{"labels": {"a": 1}}', "decorator", strict=strict)
        with pytest.raises(HookError, match="resyncAfterSeconds"):
            decode_response('{"resyncAfterSeconds": "5"}', "decorator", strict=strict)
        with pytest.raises(HookError, match="cannot unmarshal list"):
            decode_response("[]", "decorator", strict=strict)
    assert decode_response("null", "decorator", strict=True) == {}


def test_queue_collapses_duplicates_and_never_hands_out_a_key_twice() -> None:
    queue = WorkQueue()
    queue.add("a")
    queue.add("a")
    queue.add("b")
    first = queue.get()
    queue.add(first)  # re-added while processing: waits until done
    second = queue.get()
    assert {first, second} == {"a", "b"}
    assert queue.busy()  # keys being processed count as busy
    got: list[object] = []
    thread = threading.Thread(target=lambda: got.append(queue.get()))
    thread.start()
    thread.join(0.05)
    assert got == []  # the re-added key is not handed to a second worker while the first holds it
    queue.done(first)
    thread.join(1)
    assert got == [first]
    queue.shut_down()


def test_add_after_keeps_the_earliest_and_backoff_doubles_up_to_the_cap() -> None:
    now = [0.0]
    queue = WorkQueue(backoff_base=0.01, backoff_cap=0.04, monotonic=lambda: now[0])
    queue.add_after("k", 5.0)
    queue.add_after("k", 1.0)
    queue.add_after("k", 3.0)
    assert queue.pending_delays() == {"k": 1.0}
    assert [queue.add_rate_limited("x") for _ in range(4)] == [0.01, 0.02, 0.04, 0.04]
    queue.forget("x")
    assert queue.add_rate_limited("x") == 0.01
    now[0] = 1.0
    assert queue.get() in ("k", "x")
    queue.shut_down()


def test_get_wakes_up_for_a_delayed_key() -> None:
    queue = WorkQueue()
    started = time.monotonic()
    queue.add_after("late", 0.05)
    assert queue.get() == "late"
    assert time.monotonic() - started >= 0.045
    queue.shut_down()
    assert queue.get() is None
