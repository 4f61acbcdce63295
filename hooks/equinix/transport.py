"""One HTTP attempt's limits: timeouts no longer than the hook call has left, and a body read bounded in time and
size, so that neither a trickling nor a huge answer can hold a hook past its webhook timeout.

A failure here is a requests exception; hooks.equinix.client turns it into a TransportError with the short reason
`transport_message` gives.
"""

from __future__ import annotations

import re

import requests
import urllib3

from hooks.deadline import Deadline

# No answer is read past this size: a page of 1000 devices with their includes is a few MB.
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
READ_CHUNK = 64 * 1024
# An attempt is not started with less time than this left in the hook call: it could not finish.
MIN_ATTEMPT_SECONDS = 0.05


class BodyTooSlow(requests.exceptions.ReadTimeout):
    """The answer was still arriving when the hook call's time ran out."""


class BodyTooLarge(requests.exceptions.ContentDecodingError):
    """The answer is larger than any the API sends."""


def within(timeout: tuple[float, float], left: float) -> tuple[float, float] | None:
    """(connect, read) timeouts no longer than the time left; None when too little is left to try."""
    if left < MIN_ATTEMPT_SECONDS:
        return None
    return (min(timeout[0], left), min(timeout[1], left))


def read_body(response: requests.Response, deadline: Deadline, limit: int, read_timeout: float) -> None:
    """Read a streamed answer's body into `response`, giving up when the hook call's time runs out or the body
    passes `limit` bytes. Each read returns what one receive brings, so a server that trickles a byte at a time
    is noticed at the deadline rather than after its whole body (the per-receive read timeout alone never fires)."""
    raw = response.raw
    if raw is None or not hasattr(raw, "read1"):  # a response built in memory (tests, the replay dry run)
        return
    chunks: list[bytes] = []
    size = 0
    sock = getattr(getattr(raw, "connection", None), "sock", None)
    try:
        while True:
            left = deadline.left()
            if left <= 0:
                raise BodyTooSlow("the answer was still arriving when the hook call's time ran out")
            if sock is not None:  # no single receive may wait past the deadline either
                sock.settimeout(max(0.001, min(read_timeout, left)))
            chunk = raw.read1(READ_CHUNK, decode_content=True)
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"the answer is larger than {limit} bytes")
            chunks.append(chunk)
    except (urllib3.exceptions.ReadTimeoutError, TimeoutError) as exc:
        if deadline.left() <= 0:
            raise BodyTooSlow("the answer was still arriving when the hook call's time ran out") from None
        raise requests.exceptions.ReadTimeout(str(exc)) from None
    except urllib3.exceptions.DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(str(exc)) from None
    except (urllib3.exceptions.ProtocolError, urllib3.exceptions.IncompleteRead) as exc:
        raise requests.exceptions.ChunkedEncodingError(str(exc)) from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise requests.exceptions.ConnectionError(str(exc)) from None
    response._content = b"".join(chunks)
    response._content_consumed = True  # type: ignore[attr-defined]


def transport_message(
    operation: str, exc: requests.RequestException, timeout: tuple[float, float], idempotent: bool
) -> str:
    """A short reason; requests' own text is long and repeats the URL."""
    if isinstance(exc, BodyTooSlow):
        reason = "the answer was still arriving when this hook call's time ran out; the next sync tries again"
    elif isinstance(exc, BodyTooLarge):
        reason = f"the answer is larger than {MAX_RESPONSE_BYTES} bytes"
    elif isinstance(exc, requests.ConnectTimeout):
        reason = f"could not connect within {timeout[0]:g} s"
    elif isinstance(exc, requests.Timeout):
        reason = f"no answer within {timeout[1]:g} s"
    elif isinstance(exc, requests.exceptions.ChunkedEncodingError | requests.exceptions.ContentDecodingError):
        reason = "the answer was cut off"
    else:
        errno = re.search(r"\[Errno -?\d+\] [^'\")\]]+", str(exc))
        reason = "connection failed: " + (errno.group(0).strip() if errno else type(exc).__name__)
    unknown = "" if idempotent else "; the outcome is unknown"
    return f"{operation} failed: {reason}{unknown}"
