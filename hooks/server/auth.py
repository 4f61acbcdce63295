"""Bearer-token check for the hook routes (Metacontroller's `webhook.authorization`, type Bearer, v4.16+).

Metacontroller sends `Authorization: Bearer <secret value, trimmed>`. Without a token configured the hook
routes are open, as before; health and metrics endpoints never need one, so probes and scrapers work unchanged.
"""

from __future__ import annotations

import hmac

SCHEME = "Bearer"


def check_bearer(header: str | None, expected: str) -> str:
    """"" when `header` carries the expected token, else why not (for the 401 body; never echoes a token).

    The scheme is case-insensitive (RFC 7235); the token is compared in constant time so its value cannot be
    guessed byte by byte from response times.
    """
    if not expected:
        return ""
    if not header or not header.strip():
        return "missing Authorization header: this hook server requires 'Authorization: Bearer <token>'"
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != SCHEME.lower():
        # The scheme is not echoed: a caller that sends a bare token would see it in the answer.
        return "the Authorization header does not use the Bearer scheme: send 'Authorization: Bearer <token>'"
    if not hmac.compare_digest(token.strip().encode(), expected.encode()):
        return "invalid bearer token"
    return ""
