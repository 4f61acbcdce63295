"""Bearer-token check for the hook routes (Metacontroller's `webhook.authorization`, type Bearer, v4.16+).

Metacontroller sends `Authorization: Bearer <secret value, trimmed>`. A server built from the environment refuses
to serve hooks without a token unless HOOK_AUTH_DISABLED=true (hooks/config.py); health and metrics endpoints
never need one, so probes and scrapers work unchanged.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

SCHEME = "Bearer"


def check_bearer(header: str | None, expected: str | Sequence[str]) -> str:
    """"" when `header` carries an expected token, else why not (for the 401 body; never echoes a token).

    `expected` may hold the current and the next token, so a rotation has no window of 401s: Metacontroller reads
    its Secret only when a controller is created. The scheme is case-insensitive (RFC 7235); the token is compared
    with every expected one in constant time, so neither its value nor which one matched shows in response times.
    """
    accepted = [expected] if isinstance(expected, str) else list(expected)
    accepted = [token for token in accepted if token]
    if not accepted:
        return ""
    if not header or not header.strip():
        return "missing Authorization header: this hook server requires 'Authorization: Bearer <token>'"
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != SCHEME.lower():
        # The scheme is not echoed: a caller that sends a bare token would see it in the answer.
        return "the Authorization header does not use the Bearer scheme: send 'Authorization: Bearer <token>'"
    offered = token.strip().encode()
    matches = [hmac.compare_digest(offered, candidate.encode()) for candidate in accepted]
    if not any(matches):
        return "invalid bearer token"
    return ""
