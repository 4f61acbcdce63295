"""When the Metal client tries an idempotent call again, and after how long.

Transport errors, 429 and 5xx (but 501) are retried with jittered exponential backoff, never waiting less than the
API's Retry-After, within the client's retry budget and never past the hook call's deadline: a retry that could
not finish before the webhook timeout is left to the next sync. A create is never retried (the client decides).
"""

from __future__ import annotations

import random

from hooks.equinix.errors import MetalError, TransportError
from hooks.equinix.transport import MIN_ATTEMPT_SECONDS

BACKOFF_BASE = 0.5  # seconds; the first retry waits up to this long
BACKOFF_CAP = 4.0  # no single backoff wait is longer (a Retry-After may be)


def retryable(error: MetalError) -> bool:
    """Transport errors, 429 and 5xx (except 501, which will not change); never any other 4xx."""
    if isinstance(error, TransportError):
        return True
    status = error.status or 0
    return status == 429 or (status >= 500 and status != 501)


def backoff(rng: random.Random, attempt: int, error: MetalError, spent: float, budget: float,
            left: float) -> float | None:
    """Seconds to wait before attempt `attempt + 1`, or None when that attempt must not be made.

    `spent` is how long the operation has taken so far, `budget` the client's retry budget, `left` the time left
    in the hook call.
    """
    wait = rng.uniform(0.0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1)))
    if error.retry_after is not None:
        wait = max(wait, error.retry_after)
    if spent + wait > budget:
        return None
    if wait + MIN_ATTEMPT_SECONDS >= left:
        return None  # the retry could not finish before the webhook timeout: the next sync tries again
    return wait
