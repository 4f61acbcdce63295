"""Names of the objects the set controllers create: stable across processes, DNS-safe, within hostname limits.

A sync may run on a stale cache, so a child's name must follow from the observed state alone: the same inputs
always give the same names, and a repeated sync asks again for the object it already created instead of a second.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # no vowels, no look-alikes: no words, no confusion
SUFFIX_LENGTH = 5
# A Machine's name is its device's hostname (and Node name): the Go provider's limit.
MAX_MACHINE_NAME = 63


def short_hash(text: str, length: int) -> str:
    """A stable (unlike hash()) short name part in a DNS-safe alphabet."""
    number = int.from_bytes(hashlib.sha256(text.encode()).digest()[:12], "big")
    chars = []
    for _ in range(length):
        number, digit = divmod(number, len(SUFFIX_ALPHABET))
        chars.append(SUFFIX_ALPHABET[digit])
    return "".join(chars)


def machine_name(set_name: str, set_uid: str, slot: int) -> str:
    """The name of a set's Machine in `slot`: `<set>-<suffix>`, the suffix a hash of (set uid, slot)."""
    return f"{set_name}-{short_hash(f'{set_uid}/{slot}', SUFFIX_LENGTH)}"


def new_names(set_name: str, set_uid: str, count: int, taken: Iterable[str]) -> list[str]:
    """The first `count` slot names not in `taken`: the same inputs always give the same names."""
    used = set(taken)
    names: list[str] = []
    slot = 0
    while len(names) < count:
        name = machine_name(set_name, set_uid, slot)
        if name not in used:
            names.append(name)
            used.add(name)
        slot += 1
    return names
