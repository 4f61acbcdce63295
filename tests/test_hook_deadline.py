"""One deadline per hook call: an API that trickles its answers (one byte every 1.5 s) cannot hold a hook past
its webhook timeout; the hook answers "try again" (Unavailable, a short resync) within the timeout minus the
margin, measured through the Flask app with the real Metal client."""

from __future__ import annotations

import copy
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from hooks.config import Settings
from hooks.deadline import ANSWER_MARGIN, Deadline, scope
from hooks.equinix.client import MetalClient
from hooks.equinix.errors import TransportError
from hooks.server.app import create_app
from tests.machine_support import Clock, provider_spec, set_secret_value, sync_request

TRICKLE_SECONDS = 1.5
BODY = b'{"devices": [], "meta": {"total": 0}}' + b" " * 200


class TricklingApi:
    """Answers every request at once with its headers, then sends the body one byte every 1.5 s."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/metal/v1"
        self.stopped = threading.Event()
        self.requests = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                self.requests += 1
                head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Request-Id: trickle\r\n"
                        f"Content-Length: {len(BODY)}\r\n\r\n").encode()
                conn.sendall(head)
                for byte in BODY:
                    if self.stopped.wait(TRICKLE_SECONDS):
                        return
                    conn.sendall(bytes([byte]))
            except OSError:
                return

    def stop(self) -> None:
        self.stopped.set()
        self.listener.close()


@pytest.fixture
def trickling() -> Iterator[TricklingApi]:
    api = TricklingApi()
    yield api
    api.stop()


def _with_timeout(body: dict[str, Any], hook: str, timeout: str) -> dict[str, Any]:
    body = copy.deepcopy(body)
    body["controller"] = {"spec": {"hooks": {hook: {"webhook": {"timeout": timeout}}}}}
    return body


@pytest.mark.slow  # waits out a real deadline of seconds
def test_a_trickling_api_cannot_hold_a_machine_sync_past_its_webhook_timeout(trickling: TricklingApi) -> None:
    webhook_timeout = 6.0
    # The configured timeouts alone would allow far longer: each receive gets a byte within the read timeout.
    settings = Settings(metal_api_url=trickling.url, read_timeout=5.0, retry_budget=30.0)
    client = create_app(settings, clock=Clock()).test_client()  # the fixture Machine is fresh: still creating
    body = sync_request()
    provider_spec(body)["projectID"] = "d9a2f1b4-0000-4000-8000-000000000001"
    set_secret_value(body, "apiToken", "trickle-token-0001")
    body = _with_timeout(body, "sync", f"{webhook_timeout:g}s")
    started = time.monotonic()
    answer = client.post("/machine/sync", json=body)
    seconds = time.monotonic() - started
    print(f"machine sync against a trickling API answered in {seconds:.2f} s "
          f"(webhook timeout {webhook_timeout:g} s, margin {ANSWER_MARGIN:g} s)")
    assert trickling.requests >= 1, "the API was never called: the test proves nothing"
    assert answer.status_code == 200
    assert seconds <= webhook_timeout - ANSWER_MARGIN + 0.5
    status = answer.get_json()["status"]  # "try again": Unavailable, and a short resync
    assert status["lastOperation"]["errorCode"] == "Unavailable"
    assert "time ran out" in status["lastOperation"]["description"]
    assert status["currentStatus"]["phase"] == "CrashLoopBackOff"
    resync = answer.get_json().get("resyncAfterSeconds")
    assert resync is not None and resync <= 30


def test_no_attempt_starts_when_the_time_is_spent(trickling: TricklingApi) -> None:
    client = MetalClient("trickle-token-0002", base_url=trickling.url, read_timeout=5.0)
    clock = [0.0]
    spent = Deadline(1.0, clock=lambda: clock[0])
    clock[0] = 2.0
    with scope(spent), pytest.raises(TransportError, match="no time left"):
        client.delete_device("9c1d2e3f-4a5b-4c6d-8e7f-0a1b2c3d4e5f")
    assert trickling.requests == 0


@pytest.mark.slow  # waits out a real deadline of seconds
def test_a_slow_body_is_cut_at_the_deadline(trickling: TricklingApi) -> None:
    client = MetalClient("trickle-token-0003", base_url=trickling.url, read_timeout=5.0, retry_budget=30.0)
    started = time.monotonic()
    with scope(Deadline(2.0)), pytest.raises(TransportError, match="time ran out"):
        client.get_device("9c1d2e3f-4a5b-4c6d-8e7f-0a1b2c3d4e5f")
    seconds = time.monotonic() - started
    print(f"GET against a trickling API gave up after {seconds:.2f} s (deadline 2 s)")
    assert seconds <= 2.5
