"""Redact, then cut: no 8-character fragment of a token or of a userData canary survives any shortening."""

from __future__ import annotations

import base64
import secrets

import pytest

from hooks.redact import MIN_FRAGMENT_LENGTH, REDACTED, redact, shorten


def _fragments(secret: str) -> list[str]:
    return [secret[i:i + MIN_FRAGMENT_LENGTH] for i in range(len(secret) - MIN_FRAGMENT_LENGTH + 1)]


def _leaks(text: str, secret: str) -> list[str]:
    return [f for f in _fragments(secret) if f in text]


@pytest.mark.parametrize("limit", range(20, 90))
def test_a_token_straddling_the_cut_leaves_no_fragment(limit: int) -> None:
    token = secrets.token_urlsafe(30)
    text = f"upstream said: invalid credentials {token} for project 7f3c1a52 (request id abc)"
    assert _leaks(shorten(text, limit, [token]), token) == []


def test_an_echoed_partial_token_is_removed_wherever_it_starts() -> None:
    token = secrets.token_hex(20)
    text = f"auth failed for key ending {token[13:29]}; retry later"
    assert _leaks(redact(text, [token]), token) == []
    assert "retry later" in redact(text, [token])


def test_user_data_with_doubled_spaces_is_removed_before_whitespace_is_collapsed() -> None:
    canary = secrets.token_hex(12)
    user_data = f"#!/bin/bash\necho  'join   {canary}'  >> /etc/motd\n"
    echoed = f"invalid userdata: {user_data}"
    collapsed_echo = " ".join(echoed.split())  # an API that collapsed it itself
    for text in (echoed, collapsed_echo):
        out = shorten(text, 300, [user_data], collapse=True)
        assert _leaks(out, canary) == []
        assert REDACTED in out


def test_base64_user_data_is_recognised() -> None:
    user_data = f"#cloud-config\nruncmd: [echo {secrets.token_hex(10)}]\n"
    encoded = base64.b64encode(user_data.encode()).decode()
    assert encoded not in redact(f"bad userdata {encoded}", [user_data])


@pytest.mark.parametrize("limit", range(10, 60))
def test_a_user_data_canary_cut_in_half_leaves_no_fragment(limit: int) -> None:
    canary = secrets.token_hex(16)
    user_data = f"#!/bin/sh\nexport JOIN_TOKEN={canary}\n"
    text = f"device create rejected: userdata line 2 'export JOIN_TOKEN={canary}' is not allowed"
    out = shorten(text, limit, [user_data])
    assert _leaks(out, canary) == [], out


def test_short_text_is_returned_as_is_and_long_text_says_it_was_cut() -> None:
    assert shorten("all good", 100, ["some-secret-value"]) == "all good"
    out = shorten("x" * 500, 100, [])
    assert len(out) == 100 and out.endswith("...")
