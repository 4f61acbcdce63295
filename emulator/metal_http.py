"""The simulator's HTTP front: a threaded stdlib server that hands every request to one function.

Kept apart from the API model so the model stays plain Python. The only HTTP behaviour that lives here is
what the model cannot express as an answer: closing the connection without answering (a dropped request).
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast


@dataclass
class SimResponse:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection without any answer


Handler = Callable[[str, str, Mapping[str, str], bytes], SimResponse]


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real clients use pooled connections
    timeout = 60  # an idle keep-alive connection frees its thread eventually
    disable_nagle_algorithm = True  # headers and body go out in two writes; Nagle would add ~40 ms to each answer
    server: _Server

    def _serve(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        body = self.rfile.read(length) if length > 0 else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            response = self.server.answer(self.command, self.path, headers, body)
        except Exception:  # a simulator bug must show up as a failing call, not a hung client
            traceback.print_exc(file=sys.stderr)
            response = SimResponse(500, b'{"error": "internal simulator error"}', {"Content-Type": "application/json"})
        if response.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if response.body:
            self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests and demos print what matters themselves."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handle: Handler) -> None:
        super().__init__(address, _RequestHandler)
        self.answer = handle

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-answer is normal under chaos tests; anything else is worth a traceback."""
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class SimulatorServer:
    """A running simulator on a background thread. `url` is the API base URL clients should use."""

    def __init__(self, handle: Handler, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = _Server((host, port), handle)
        bound_host, bound_port = cast(tuple[str, int], self._server.server_address[:2])  # an AF_INET(6) address
        shown = bound_host if ":" not in str(bound_host) else f"[{bound_host}]"
        self.host: str = str(bound_host)
        self.port: int = int(bound_port)
        self.base_url = f"http://{shown}:{self.port}"
        self.url = f"{self.base_url}/metal/v1"
        # shutdown() waits for the loop's next poll: 10 ms keeps stopping a simulator (every test fixture) cheap.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.01},
                                        name=f"metal-sim:{self.port}", daemon=True)

    def start(self) -> SimulatorServer:
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve on the calling thread (the CLI) until shutdown() or KeyboardInterrupt."""
        try:
            self._server.serve_forever()
        finally:
            self._server.server_close()

    def shutdown(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> SimulatorServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
