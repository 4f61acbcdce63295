"""Removing secrets (API tokens, userdata) from text before it reaches a log, a status or an exception.

A server, proxy or library may echo what we sent it; anything built from such text goes through `redact` first.
"""

from __future__ import annotations

import base64
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
# No run this long of a token-like secret (one word, no spaces: an API token, a bootstrap token) may survive,
# wherever it starts: an echo may have been cut by the server before we ever saw it.
MIN_FRAGMENT_LENGTH = 8


def _encoded(secret: str) -> set[str]:
    """Base64 forms (standard and URL-safe, with and without padding): userData travels base64-encoded."""
    raw = secret.encode()
    forms = {base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()}
    return forms | {form.rstrip("=") for form in forms}


def _variants(secret: str) -> set[str]:
    """The forms an echoed secret may take: raw, whitespace-collapsed, JSON- and HTML-escaped, base64, and its
    longer lines and words."""
    collapsed = " ".join(secret.split())
    found = {secret, collapsed, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1],
             html.escape(secret), html.escape(collapsed), *_encoded(secret)}
    parts = [line.strip() for line in secret.splitlines() if len(line.strip()) >= MIN_LINE_LENGTH]
    parts += [" ".join(line.split()) for line in parts]
    parts += [word for word in secret.split() if len(word) >= MIN_WORD_LENGTH]
    for part in parts:
        found |= {part, json.dumps(part)[1:-1], html.escape(part)}
    return {v for v in found if len(v) >= MIN_SECRET_LENGTH}


def _usable(secrets: Iterable[str]) -> list[str]:
    return [s for s in secrets if isinstance(s, str) and len(s) >= MIN_SECRET_LENGTH]


def _token_like(secret: str) -> bool:
    return len(secret) >= MIN_FRAGMENT_LENGTH and not any(c.isspace() for c in secret)


def _fragments(text: str, secret: str) -> str:
    """`text` with every run of MIN_FRAGMENT_LENGTH or more characters of `secret` replaced."""
    grams = {secret[i:i + MIN_FRAGMENT_LENGTH] for i in range(len(secret) - MIN_FRAGMENT_LENGTH + 1)}
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i:i + MIN_FRAGMENT_LENGTH] in grams:
            end = i + MIN_FRAGMENT_LENGTH
            while end < len(text) and text[i:end + 1] in secret:
                end += 1
            out.append(REDACTED)
            i = end
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of every secret replaced by "[redacted]", and no 8-character run of a
    token-like secret left anywhere."""
    usable = _usable(secrets)
    variants: set[str] = set()
    for secret in usable:
        variants |= _variants(secret)
    # Longest first, so a secret that contains another one is removed whole.
    for variant in sorted(variants, key=len, reverse=True):
        text = text.replace(variant, REDACTED)
    for secret in usable:
        if _token_like(secret):
            text = _fragments(text, secret)
    return text


def shorten(text: str, limit: int, secrets: Iterable[str], *, collapse: bool = False) -> str:
    """Redact, then (optionally) collapse whitespace, then cut to `limit`, then drop a trailing start of a secret.

    Cutting first would let a secret that straddles the cut survive as a fragment the redaction no longer
    recognises; collapsing first would turn a multi-line userData into a form no variant matches.
    """
    usable = _usable(secrets)
    text = redact(text, usable)
    if collapse:
        text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: max(0, limit - 3)]
    variants = {v for secret in usable for v in _variants(secret)}
    for variant in sorted(variants, key=len, reverse=True):
        for size in range(min(len(variant) - 1, len(cut)), MIN_SECRET_LENGTH - 1, -1):
            if cut.endswith(variant[:size]):
                cut = cut[:-size]
                break
    return cut + "..."


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
