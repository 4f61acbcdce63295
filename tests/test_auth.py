"""Bearer tokens for the hook routes: the current and the next token both work, so a rotation has no 401 window."""

from __future__ import annotations

from hooks.server.auth import check_bearer


def test_current_and_next_token_are_both_accepted_during_a_rotation() -> None:
    tokens = ["current-token-value", "next-token-value"]
    assert check_bearer("Bearer current-token-value", tokens) == ""
    assert check_bearer("bearer next-token-value", tokens) == ""
    assert check_bearer("Bearer old-token-value", tokens) == "invalid bearer token"


def test_an_empty_next_token_is_not_a_wildcard() -> None:
    assert check_bearer("Bearer ", ["current-token-value", ""]) == "invalid bearer token"
    assert check_bearer("Bearer current-token-value", "current-token-value") == ""


def test_problems_never_echo_what_was_sent() -> None:
    problem = check_bearer("Token sent-as-another-scheme", ["current-token-value"])
    assert "sent-as-another-scheme" not in problem and "Bearer" in problem
    assert "missing Authorization header" in check_bearer(None, ["current-token-value"])
