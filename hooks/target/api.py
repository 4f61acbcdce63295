"""Reading a Machine's Node from the target cluster's API, bounded in time like a Metal API call.

Why: the Node of a Machine may live in another cluster (issue 17), which Metacontroller does not watch; the
Machine hook reads it with one GET per sync. The call has a connect timeout, a read timeout and a total deadline
(the body is read in chunks against it, so a server that trickles bytes cannot hold the hook), and no retry: the
next sync is the retry. "Not found" is only believed from a Kubernetes `Status` answer that says NotFound; any
other failure (no connection, timeout, 401/403, 5xx, a 404 from something that is not an API server) is
TargetUnavailable, which the Machine hook treats as "unknown" (hooks/target/freeze.py), never as "Node gone".

API:

    reader = TargetReader(config)                 # config: hooks.target.kubeconfig.TargetConfig
    node = reader.get_node("m1", deadline=4.0)    # dict, or None when the API says NotFound
    except TargetUnavailable as exc: exc.kind     # "unreachable" | "rejected" | "error"
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote

import requests

from hooks import events
from hooks.redact import redact
from hooks.target.kubeconfig import TargetConfig
from hooks.target.tls import session_for

MAX_BODY_BYTES = 4 * 1024 * 1024  # a Node with many images is well under this
CHUNK = 64 * 1024


class TargetUnavailable(RuntimeError):
    """The target API did not give a usable answer; `kind` says which way (for lastOperation and metrics)."""

    def __init__(self, message: str, kind: str = "unreachable", status: int = 0) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


class TargetReader:
    """GET one Node by name; one instance per kubeconfig (its session keeps connections alive)."""

    def __init__(
        self,
        config: TargetConfig,
        *,
        connect_timeout: float = 3.0,
        read_timeout: float = 5.0,
        session: requests.Session | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._session = session or session_for(config)
        self._monotonic = monotonic

    def __repr__(self) -> str:
        return f"TargetReader(server={self.config.server!r})"

    def close(self) -> None:
        self._session.close()

    def secrets(self) -> Iterable[str]:
        return self.config.secrets()

    def get_node(self, name: str, *, deadline: float = 8.0) -> dict[str, Any] | None:
        """The Node, None when the API says it does not exist; TargetUnavailable otherwise, within `deadline` s.

        Each read is counted by outcome (events.TARGET_READ: the server's metal_machine_hooks_target_node_reads_total).
        """
        try:
            node = self._get_node(name, deadline)
        except TargetUnavailable as exc:
            events.emit(events.TARGET_READ, outcome=exc.kind)
            raise
        events.emit(events.TARGET_READ, outcome="ok" if node is not None else "not_found")
        return node

    def _get_node(self, name: str, deadline: float) -> dict[str, Any] | None:
        end = self._monotonic() + deadline
        path = f"/api/v1/nodes/{quote(name, safe='')}"
        headers = {"Accept": "application/json"}
        if self.config.token:
            headers["Authorization"] = f"Bearer {self.config.token}"
        left = end - self._monotonic()
        if left <= 0:
            raise TargetUnavailable(f"GET node {name}: no time left in this hook call", "unreachable")
        try:
            response = self._session.get(
                self.config.server + path, headers=headers, stream=True, allow_redirects=False,
                timeout=(min(self.connect_timeout, left), min(self.read_timeout, left)),
            )
            try:
                body = self._read(response, end)
            finally:
                response.close()
        except requests.RequestException as exc:
            raise TargetUnavailable(self._clean(f"GET node {name} at {self.config.server}: "
                                                f"{type(exc).__name__}: {exc}"), "unreachable") from None
        return self._answer(name, response.status_code, body)

    def _read(self, response: requests.Response, end: float) -> bytes:
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_content(CHUNK):
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise TargetUnavailable(f"the target API's answer is larger than {MAX_BODY_BYTES} bytes", "error")
            chunks.append(chunk)
            if self._monotonic() > end:
                raise TargetUnavailable("the target API's answer did not arrive within the deadline", "unreachable")
        return b"".join(chunks)

    def _answer(self, name: str, code: int, body: bytes) -> dict[str, Any] | None:
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        what = f"GET node {name} at {self.config.server}: HTTP {code}"
        if code == 200 and isinstance(parsed, dict) and parsed.get("kind") == "Node" \
                and (parsed.get("metadata") or {}).get("name") == name:
            return parsed
        status = parsed if isinstance(parsed, dict) and parsed.get("kind") == "Status" else None
        message = str((status or {}).get("message") or "")[:300]
        if code == 404 and status is not None and status.get("reason") == "NotFound":
            return None
        if code == 200:
            raise TargetUnavailable(f"{what} did not answer with the Node (is the server URL an API server?)", "error")
        if code == 404:
            raise TargetUnavailable(f"{what} without a Kubernetes Status: is the server URL an API server?", "error",
                                    code)
        if code in (401, 403):
            hint = ("the kubeconfig's credentials were rejected" if code == 401 else
                    "the kubeconfig's identity may not get nodes (RBAC: docs/operations.md, Two clusters)")
            raise TargetUnavailable(self._clean(f"{what}: {hint}: {message}"), "rejected", code)
        raise TargetUnavailable(self._clean(f"{what}: {message or 'no message'}"), "error", code)

    def _clean(self, text: str) -> str:
        return redact(text, self.config.secrets())
