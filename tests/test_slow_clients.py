"""Slow clients cannot starve the hook server: a request must arrive within REQUEST_READ_TIMEOUT (issue 14).

Without the read deadline, a few connections that trickle one byte at a time hold every gthread worker thread,
and probes and Metacontroller's calls wait behind them for as long as the trickle lasts.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlparse

import pytest
import requests

from tests.test_server import Server, start_server  # noqa: F401  (the fixture is used by name)

pytestmark = pytest.mark.e2e

READ_TIMEOUT = 1.5
TRICKLE_SECONDS = 12.0  # how long a slow client would hold a thread without the deadline


class Trickler:
    """Opens a connection and sends a request one byte every 0.3 s, for at most TRICKLE_SECONDS."""

    def __init__(self, url: str, trickled: bytes, *, at_once: bytes = b"") -> None:
        parsed = urlparse(url)
        self.sock = socket.create_connection((parsed.hostname, parsed.port), timeout=TRICKLE_SECONDS + 5)
        if at_once:
            self.sock.sendall(at_once)
        self.payload = trickled
        self.closed_after: float | None = None
        self.answer = b""
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.started = time.monotonic()
        self.thread.start()

    def _run(self) -> None:
        try:
            for byte in self.payload:
                if time.monotonic() - self.started > TRICKLE_SECONDS:
                    break
                self.sock.sendall(bytes([byte]))
                time.sleep(0.3)
        except OSError:
            pass
        finally:
            self.closed_after = time.monotonic() - self.started
            try:
                self.sock.settimeout(5)
                self.answer = self.sock.recv(4096)
            except OSError:
                pass
            self.sock.close()


@pytest.fixture
def slow_server(start_server: Callable[..., Server]) -> Iterator[Server]:  # noqa: F811
    yield start_server(GUNICORN_WORKERS="1", GUNICORN_THREADS="2", REQUEST_READ_TIMEOUT=str(READ_TIMEOUT),
                       HOOK_AUTH_DISABLED="true")


def test_trickled_headers_do_not_starve_health_probes(slow_server: Server) -> None:
    head = b"POST /machine/sync HTTP/1.1\r\nHost: hooks\r\nContent-Type: application/json\r\nX-Filler: " + b"a" * 80
    slow = [Trickler(slow_server.url, head) for _ in range(4)]  # twice the worker's threads
    time.sleep(0.5)
    started = time.monotonic()
    answer = requests.get(slow_server.url + "/healthz", timeout=TRICKLE_SECONDS + 5)
    waited = time.monotonic() - started
    print(f"healthz answered after {waited:.2f} s beside 4 trickling clients (read timeout {READ_TIMEOUT} s)")
    assert answer.status_code == 200
    assert waited < TRICKLE_SECONDS / 2, f"healthz waited {waited:.1f} s behind slow clients"
    for trickler in slow:
        trickler.thread.join(TRICKLE_SECONDS + 5)
        assert trickler.closed_after is not None and trickler.closed_after < TRICKLE_SECONDS - 1


def test_a_trickled_body_is_answered_408_not_500(slow_server: Server) -> None:
    body = b'{"object": {"kind": "Machine"}, "pad": "' + b"x" * 200 + b'"}'
    head = (b"POST /machine/sync HTTP/1.1\r\nHost: hooks\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
    trickler = Trickler(slow_server.url, body[10:], at_once=head + body[:10])  # headers at once, body trickles
    trickler.thread.join(TRICKLE_SECONDS + 8)
    assert trickler.answer.startswith(b"HTTP/1.1 408"), trickler.answer[:200]
