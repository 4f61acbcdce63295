"""Removing secrets (API tokens, userdata) from text before it reaches a log, a status or an exception.

A server, proxy or library may echo what we sent it; anything built from such text goes through `redact` first.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable

REDACTED = "[redacted]"
# Shorter strings are too likely to be ordinary words; replacing them would garble messages without hiding much.
MIN_SECRET_LENGTH = 4
# Lines of a multi-line secret, and its long words (keys, tokens, certificate lines), are redacted on their own
# too, because an echo may be cut off or reformatted.
MIN_LINE_LENGTH = 12
MIN_WORD_LENGTH = 16


def _variants(secret: str) -> set[str]:
    """The forms an echoed secret may take: raw, JSON-escaped, HTML-escaped, and its longer lines and words."""
    found = {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1], html.escape(secret)}
    parts = [line.strip() for line in secret.splitlines() if len(line.strip()) >= MIN_LINE_LENGTH]
    parts += [word for word in secret.split() if len(word) >= MIN_WORD_LENGTH]
    for part in parts:
        found |= {part, json.dumps(part)[1:-1], html.escape(part)}
    return {v for v in found if len(v) >= MIN_SECRET_LENGTH}


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of every secret replaced by "[redacted]"."""
    variants: set[str] = set()
    for secret in secrets:
        if isinstance(secret, str) and len(secret) >= MIN_SECRET_LENGTH:
            variants |= _variants(secret)
    # Longest first, so a secret that contains another one is removed whole.
    for variant in sorted(variants, key=len, reverse=True):
        text = text.replace(variant, REDACTED)
    return text


def secret_strings(value: object) -> list[str]:
    """The strings to redact for a secret that may be structured (customdata is a JSON object).

    For a dict or list: its JSON forms plus every string inside it, since an echo may quote any part.
    """
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    out: list[str] = []
    try:
        out += [json.dumps(value), json.dumps(value, separators=(",", ":")), json.dumps(value, sort_keys=True)]
    except (TypeError, ValueError):
        out.append(str(value))
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return out
