"""Counting words and short name lists for status messages a person reads in `kubectl describe`."""

from __future__ import annotations

# A status message names at most this many objects, then says how many more there are.
NAMES_SHOWN = 5


def plural(count: int, word: str) -> str:
    """"1 machine", "2 machines": messages read as sentences, not as counters."""
    return f"{count} {word}" + ("" if count == 1 else "s")


def names_list(names: list[str]) -> str:
    """The first NAMES_SHOWN names and a count of the rest, so a thousand-Machine set keeps a short message."""
    shown = ", ".join(names[:NAMES_SHOWN])
    return shown + (f" and {len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else "")
