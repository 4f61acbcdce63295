"""gunicorn's threaded worker with a deadline on reading each request, so slow clients cannot starve probes.

With gthread, a request's headers and body are read in a pool thread with a blocking socket and no timeout: a
client that sends one byte every few seconds holds a thread for as long as it likes, and a handful of them leave
no thread for Metacontroller's calls or the kubelet's probes. Here every request must arrive whole within
REQUEST_READ_SECONDS (env `REQUEST_READ_TIMEOUT`), counted from its first byte being awaited: each receive waits
only for what is left of that time. A client too slow for it loses its connection; a body that stops mid-way
surfaces in the app as an OSError, which it answers with 408.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

from gunicorn.http.errors import NoMoreData  # type: ignore[import-untyped]
from gunicorn.workers.gthread import TConn, ThreadWorker  # type: ignore[import-untyped]

DEFAULT_READ_SECONDS = 10.0
log = logging.getLogger("hooks.server")


def read_seconds(env: dict[str, str] | None = None) -> float:
    raw = (os.environ if env is None else env).get("REQUEST_READ_TIMEOUT", "").strip()
    try:
        value = float(raw) if raw else DEFAULT_READ_SECONDS
    except ValueError:
        value = DEFAULT_READ_SECONDS
    return value if value > 0 else DEFAULT_READ_SECONDS


class RequestReadTimeout(NoMoreData):
    """The request did not arrive in time. A NoMoreData (an OSError): gunicorn closes quietly, the app says 408."""

    def __init__(self, seconds: float) -> None:
        super().__init__(None)
        self.seconds = seconds

    def __str__(self) -> str:
        return f"request not received within {self.seconds:g} s"


class DeadlineSocket:
    """A socket whose every receive waits at most until one deadline."""

    def __init__(self, sock: socket.socket, seconds: float, clock: Any = time.monotonic) -> None:
        self._sock = sock
        self._seconds = seconds
        self._clock = clock
        self._deadline = clock() + seconds

    def recv(self, size: int) -> bytes:
        left = self._deadline - self._clock()
        if left <= 0:
            raise RequestReadTimeout(self._seconds)
        self._sock.settimeout(left)
        try:
            return self._sock.recv(size)
        except TimeoutError:
            raise RequestReadTimeout(self._seconds) from None
        finally:
            self._sock.settimeout(None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class BoundedReadWorker(ThreadWorker):
    """ThreadWorker whose requests must be read within read_seconds()."""

    read_timeout = read_seconds()

    def handle(self, conn: TConn) -> Any:
        unreader = getattr(conn.parser, "unreader", None)
        if unreader is not None:
            raw = unreader.sock._sock if isinstance(unreader.sock, DeadlineSocket) else unreader.sock
            unreader.sock = DeadlineSocket(raw, self.read_timeout)
        try:
            return super().handle(conn)
        finally:
            if unreader is not None and isinstance(unreader.sock, DeadlineSocket):
                unreader.sock = unreader.sock._sock
