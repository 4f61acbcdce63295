"""Go durations as MCM's fields hold them: absurd but schema-valid values are clamped, never a 500."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hooks.mcm.timefmt import MAX_DURATION_SECONDS, go_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1e3h", None), ("20m", 1200.0), ("1h30m", 5400.0), ("90s", 90.0), ("0", 0.0), ("1.5h", 5400.0), ("-2m", -120.0)],
)
def test_go_durations_read_as_go_reads_them(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["99999999999999h", "9" * 400 + "s", "2562047h47m16.854775807s"])
def test_an_absurd_duration_is_clamped_so_date_arithmetic_cannot_overflow(text: str) -> None:
    seconds = parse_duration(text)
    assert seconds == MAX_DURATION_SECONDS
    assert datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds) > datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_duration("-" + text) == -MAX_DURATION_SECONDS


@pytest.mark.parametrize("text", ["", "10 seconds", "m", "5", "1h-2m", None, 5])
def test_what_is_not_a_go_duration_is_none(text: object) -> None:
    assert parse_duration(text) is None


def test_go_duration_prints_as_go_does() -> None:
    assert go_duration(1200) == "20m0s"
    assert go_duration(3723) == "1h2m3s"
    assert go_duration(-5) == "0s"
