"""Kubernetes timestamps and Go durations as text, the one way every hook reads and writes them.

Statuses compare timestamps they wrote earlier with ones they write now; if two hooks rendered times differently,
an unchanged object would look changed and sync forever. Durations come from fields Go code defines (MCM's
timeouts, drain timeouts), so they are read and printed the way Go's time package does.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
# The longest duration any hook acts on. A CRD only says "a string", so "99999999999999h" is schema-valid; past
# this bound a timeout means "never" anyway, and date arithmetic with it would overflow.
MAX_DURATION_SECONDS = 30 * 24 * 3600.0


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_duration(text: Any) -> float | None:
    """Seconds in a Go duration string such as "20m", "1h30m" or "90s"; None when it is not one.

    The result is clamped to ±MAX_DURATION_SECONDS, so a schema-valid absurd value cannot overflow a datetime.
    """
    if not isinstance(text, str):
        return None
    text = text.strip()
    if text in ("0", ""):
        return 0.0 if text == "0" else None
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    position, total = 0, 0.0
    for match in _DURATION_PART.finditer(body):
        if match.start() != position:
            return None
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if position != len(body) or position == 0:
        return None
    return sign * min(total, MAX_DURATION_SECONDS)


def go_duration(seconds: float) -> str:
    """A duration the way Go prints it (1h2m3s), to whole seconds."""
    remaining = max(0, round(seconds))
    hours, remaining = divmod(remaining, 3600)
    minutes, secs = divmod(remaining, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if hours or minutes else "") + f"{secs}s"
    return text
