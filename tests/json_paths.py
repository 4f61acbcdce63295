"""Every place inside a JSON document, so fuzz tests can break any field of a real request, not a chosen few."""

from __future__ import annotations

from typing import Any


def json_paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The key/index path of every value below `value` (not `value` itself), parents before their children."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, sub in value.items():
            found += json_paths(sub, (*prefix, key))
    elif isinstance(value, list):
        for index, sub in enumerate(value):
            found += json_paths(sub, (*prefix, index))
    return found
