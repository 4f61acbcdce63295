"""A Kubernetes REST API over the emulator's store, on loopback, for programs that talk to a real API server.

Why: Jobs declared by the hooks run real programs (`python -m drain NODE`), and those programs speak HTTP to
`https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT` with a ServiceAccount token. This server gives them
the same API over `emulator/store.py` (so the hooks, the emulated Metacontroller and the programs share one
cluster), with the answers a real API server gives where a program can notice:

* paths `/api/v1/...` and `/apis/GROUP/VERSION/...`, namespaced (`namespaces/NS/PLURAL/NAME`) or cluster-wide;
* GET one, LIST (`kind: XList`, `metadata.resourceVersion`, `labelSelector`, `fieldSelector`, `limit`/`continue`),
  POST create, PUT (a stale resourceVersion is 409 Conflict), PATCH (merge, JSON and strategic merge patch;
  retried internally on conflicts unless the patch pins a resourceVersion), DELETE, the `status` subresource;
* pods: DELETE and eviction of a pod bound to a Node are graceful (`deletionTimestamp` set, the pod removed when
  its grace period ends, standing in for the kubelet); `pods/NAME/eviction` (policy/v1 Eviction) honours
  PodDisruptionBudgets (429 TooManyRequests while a budget allows no disruption), and budgets' status is
  computed from their pods (`emulator/disruption.py`) when read or consulted;
* bearer-token authentication (401 without a known token) and `kind: Status` error bodies (404 NotFound, 409
  Conflict, 422 Invalid, 400 BadRequest, 415 UnsupportedMediaType, ...).

Discovery (`/version`, `/api`, `/apis`, `/api/v1`, `/apis/GROUP/VERSION`) lists what the store serves.
Not served: watch, collection DELETE, RBAC authorization (every known token may do everything), TLS
(plain http: the drain program uses http only when told to by KUBE_API_SCHEME=http).

API:

    api = KubeApiServer(store, tokens={"t0ken": "system:serviceaccount:default:metal-machine-drain"}).start()
    api.url, api.host, api.port;  api.add_token(token, user)
    api.requests()            # every request so far (ApiRequest: verb, resource, code, items listed, ...)
    api.stop()                # also a context manager; start() again serves on the same port (an outage's end)
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit

from emulator.kube_handlers import ApiCore, HttpError, Reply

Obj = dict[str, Any]


@dataclass(frozen=True)
class ApiRequest:
    """One request as the server saw and answered it; `verb`/`resource` are what RBAC would authorize."""

    seq: int
    at: float  # monotonic seconds
    method: str
    path: str
    query: Mapping[str, str]
    content_type: str
    user: str
    code: int
    verb: str
    resource: str
    namespace: str = ""
    name: str = ""
    items: tuple[str, ...] = ()  # lists: ns/name of every item answered
    terminating: tuple[str, ...] = ()  # lists: the items that carried a deletionTimestamp
    body: Any = None  # the request's JSON (never for Secrets: the log must not hold credentials)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (a program killed mid-request) is normal here; anything else is reported."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        """End kept-alive connections, so no handler thread outlives the server."""
        with self.connections_lock:
            for conn in list(self.connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)


class KubeApiServer:
    """The REST API in a thread on 127.0.0.1 (free port unless given); `reap_interval` paces the pod reaper."""

    def __init__(
        self,
        store: Any,
        *,
        tokens: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        reap_interval: float = 0.05,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.core = ApiCore(store, monotonic=monotonic)
        self._tokens: dict[str, str] = dict(tokens or {})
        self._monotonic = monotonic
        self._log: list[ApiRequest] = []
        self._lock = threading.Lock()
        self._reap_interval = reap_interval
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server = _Server((host, port), self._handler_class())
        self._closed = False
        self.host = str(self._server.server_address[0])
        self.port = int(self._server.server_address[1])
        self.url = f"http://{self.host}:{self.port}"

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> Self:
        """Serve; after stop() this serves again on the same address (an API server back from an outage: clients
        keep their URL and credentials, and the store kept every object)."""
        if self._closed:
            self._server = _Server((self.host, self.port), self._handler_class())
            self._closed = False
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                             name=f"kube-api:{self.port}", daemon=True),
            threading.Thread(target=self._reap_loop, name=f"kube-api-reaper:{self.port}", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._threads:
            self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        self._closed = True
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add_token(self, token: str, user: str) -> None:
        with self._lock:
            self._tokens[token] = user

    def requests(self) -> list[ApiRequest]:
        with self._lock:
            return list(self._log)

    def _reap_loop(self) -> None:
        while not self._stop.wait(self._reap_interval):
            self.core.reap_terminated_pods()

    # ---------------------------------------------------------------- HTTP

    def _authenticate(self, header: str) -> str | None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        with self._lock:
            return self._tokens.get(token.strip())

    def answer(self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes) -> Reply:
        """One request end to end (the HTTP handler calls this; tests may too)."""
        split = urlsplit(raw_path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        path = unquote(split.path)
        content_type = (headers.get("Content-Type") or "").split(";")[0].strip()
        user = self._authenticate(headers.get("Authorization") or "")
        parsed: Any = None
        if user is None:
            reply = Reply(401, _status(401, "Unauthorized", "Unauthorized"))
        else:
            try:
                parsed = json.loads(body) if body else None
            except ValueError as exc:
                reply = Reply(400, _status(400, "BadRequest", f"the body is not JSON: {exc}"))
            else:
                reply = self.core.handle(method, path, query, content_type, parsed)
        with self._lock:  # numbered and appended at once: seq is the order answers were given in
            self._log.append(ApiRequest(
                seq=len(self._log) + 1, at=self._monotonic(), method=method, path=path, query=query,
                content_type=content_type, user=user or "", code=reply.code, verb=reply.verb or method.lower(),
                resource=reply.resource, namespace=reply.namespace, name=reply.name, items=reply.items,
                terminating=reply.terminating, body=None if reply.resource.startswith("secrets") else parsed,
            ))
        return reply

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes; Nagle would add ~40 ms to each
            timeout = 30

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                reply = server.answer(self.command, self.path, dict(self.headers.items()), body)
                data = json.dumps(reply.body).encode()
                self.send_response(reply.code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        return Handler


def _status(code: int, reason: str, message: str) -> Obj:
    return HttpError(code, reason, message).status()


__all__ = ["ApiRequest", "KubeApiServer", "Reply"]
