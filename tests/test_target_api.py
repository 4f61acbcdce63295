"""Reading a Node from a target API: verified TLS from memory, bounded time, "not found" only from the API itself."""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import hooks.target.api as api_module
from hooks.target.api import TargetReader, TargetUnavailable
from hooks.target.kubeconfig import TargetConfig

TOKEN = "target-canary-token-0123456789abcdef"
NODE = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "m1"}, "spec": {}}
NOT_FOUND = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
             "message": 'nodes "m2" not found', "details": {"name": "m2", "kind": "nodes"}}


@dataclass
class Pki:
    ca: bytes
    other_ca: bytes
    server_cert: Path
    server_key: Path
    client_cert: bytes
    client_key: bytes
    ca_file: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is needed to make test certificates")
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=ca", cwd=d)
    _openssl("req", "-x509", *ec, "-keyout", "o.key", "-out", "o.crt", "-days", "2", "-subj", "/CN=o", cwd=d)
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name, subject, ext in (("server", "/CN=localhost", ["-extfile", "san.ext"]), ("client", "/CN=hooks", [])):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "2", *ext, cwd=d)
    return Pki((d / "ca.crt").read_bytes(), (d / "o.crt").read_bytes(), d / "server.crt", d / "server.key",
               (d / "client.crt").read_bytes(), (d / "client.key").read_bytes(), d / "ca.crt")


Answer = Callable[[str, dict[str, str]], tuple[int, Any]]


@dataclass
class Api:
    url: str
    seen: list[tuple[str, dict[str, str], str | None]]  # path, headers, client cert subject



@contextlib.contextmanager
def serve(answer: Answer, *, pki: Pki | None = None, require_client_cert: bool = False) -> Iterator[Api]:
    """An HTTP(S) server on loopback answering GETs with `answer(path, headers)`."""
    seen: list[tuple[str, dict[str, str], str | None]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            peer = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
            subject = dict(x[0] for x in peer["subject"]).get("commonName") if peer else None
            seen.append((self.path, dict(self.headers.items()), subject))
            code, body = answer(self.path, dict(self.headers.items()))
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    scheme = "http"
    if pki is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca_file))
        context.load_cert_chain(pki.server_cert, pki.server_key)
        context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield Api(f"{scheme}://localhost:{server.server_address[1]}", seen)
    finally:
        server.shutdown()
        server.server_close()


def nodes(path: str, headers: dict[str, str]) -> tuple[int, Any]:
    if headers.get("Authorization") not in (f"Bearer {TOKEN}", None):
        return 401, {"kind": "Status", "reason": "Unauthorized", "code": 401, "message": "Unauthorized"}
    return (200, NODE) if path == "/api/v1/nodes/m1" else (404, NOT_FOUND)


def test_a_node_is_read_over_tls_verified_with_the_kubeconfigs_ca_only(pki: Pki) -> None:
    with serve(nodes, pki=pki) as api:
        reader = TargetReader(TargetConfig(api.url, ca_data=pki.ca, token=TOKEN))
        assert reader.get_node("m1") == NODE
        assert reader.get_node("m2") is None
        assert api.seen[0][1]["Authorization"] == f"Bearer {TOKEN}"


def test_a_server_certificate_from_another_ca_is_refused_before_the_token_is_sent(pki: Pki) -> None:
    with serve(nodes, pki=pki) as api:
        reader = TargetReader(TargetConfig(api.url, ca_data=pki.other_ca, token=TOKEN))
        with pytest.raises(TargetUnavailable) as caught:
            reader.get_node("m1")
        assert caught.value.kind == "unreachable" and "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
        assert api.seen == []


def test_the_client_certificate_is_presented_and_leaves_no_file_behind(
        pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with serve(nodes, pki=pki, require_client_cert=True) as api:
        reader = TargetReader(TargetConfig(api.url, ca_data=pki.ca, client_cert=pki.client_cert,
                                           client_key=pki.client_key))
        assert reader.get_node("m1") == NODE
        assert api.seen[0][2] == "hooks"
        assert "Authorization" not in api.seen[0][1]
    assert list(tmp_path.iterdir()) == []


def test_rejected_credentials_are_unavailable_not_not_found(pki: Pki) -> None:
    with serve(nodes, pki=pki) as api:
        reader = TargetReader(TargetConfig(api.url, ca_data=pki.ca, token="wrong-token-0123456789"))
        with pytest.raises(TargetUnavailable) as caught:
            reader.get_node("m2")
        assert caught.value.kind == "rejected" and caught.value.status == 401


def test_forbidden_names_the_rbac_section() -> None:
    status = {"kind": "Status", "reason": "Forbidden", "code": 403,
              "message": 'nodes "m1" is forbidden: User "x" cannot get resource "nodes"'}
    with serve(lambda p, h: (403, status)) as api:
        with pytest.raises(TargetUnavailable, match="RBAC") as caught:
            TargetReader(TargetConfig(api.url.replace("localhost", "127.0.0.1"), token=TOKEN)).get_node("m1")
        assert caught.value.kind == "rejected"


@pytest.mark.parametrize("answer", [
    (404, b"<html>404 page not found</html>"),  # some web server, not an API server
    (404, {"kind": "Status", "reason": "NotFound", "code": 404, "message": "the server could not find it"} | {
        "reason": "Gone"}),
    (200, {"kind": "Node", "metadata": {"name": "someone-else"}}),
    (200, b"<html>login</html>"),
    (503, {"kind": "Status", "reason": "ServiceUnavailable", "code": 503, "message": "etcd"}),
])
def test_only_the_apis_own_not_found_means_the_node_is_gone(answer: tuple[int, Any]) -> None:
    with serve(lambda p, h: answer) as api, pytest.raises(TargetUnavailable):
        TargetReader(TargetConfig(api.url.replace("localhost", "127.0.0.1"), token=TOKEN)).get_node("m1")


def test_an_unreachable_target_fails_fast_and_names_no_token() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    reader = TargetReader(TargetConfig(f"http://127.0.0.1:{port}", token=TOKEN))
    started = time.monotonic()
    with pytest.raises(TargetUnavailable) as caught:
        reader.get_node("m1")
    assert time.monotonic() - started < 2
    assert caught.value.kind == "unreachable" and TOKEN[:8] not in str(caught.value)


def test_a_server_that_never_answers_is_given_up_on_at_the_deadline() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        reader = TargetReader(TargetConfig(f"http://127.0.0.1:{port}", token=TOKEN), read_timeout=30)
        started = time.monotonic()
        with pytest.raises(TargetUnavailable, match="Timeout"):
            reader.get_node("m1", deadline=0.3)
        assert time.monotonic() - started < 1.5


def test_a_trickling_answer_is_cut_at_the_total_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    class Trickle(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            with contextlib.suppress(OSError):
                for _ in range(100):
                    self.wfile.write(b" " * 10)
                    self.wfile.flush()
                    time.sleep(0.05)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    try:
        reader = TargetReader(TargetConfig(f"http://127.0.0.1:{server.server_address[1]}", token=TOKEN))
        monkeypatch.setattr(api_module, "CHUNK", 8)
        started = time.monotonic()
        with pytest.raises(TargetUnavailable, match="deadline"):
            reader.get_node("m1", deadline=0.5)
        assert time.monotonic() - started < 1.5
    finally:
        server.shutdown()
        server.server_close()


def test_repr_names_the_server_only() -> None:
    reader = TargetReader(TargetConfig("https://t.example", token=TOKEN))
    assert TOKEN not in repr(reader) and "t.example" in repr(reader)
    assert base64.b64encode(TOKEN.encode()).decode() not in repr(reader)


def test_every_read_is_counted_by_outcome_in_the_servers_metrics() -> None:
    from prometheus_client import REGISTRY

    import hooks.server.metrics  # noqa: F401  (subscribes the counters)

    def count(outcome: str) -> float:
        return REGISTRY.get_sample_value("metal_machine_hooks_target_node_reads_total", {"outcome": outcome}) or 0.0

    before = {o: count(o) for o in ("ok", "not_found", "unreachable")}
    with serve(nodes) as api:
        reader = TargetReader(TargetConfig(api.url.replace("localhost", "127.0.0.1"), token=TOKEN))
        reader.get_node("m1")
        reader.get_node("m2")
    with pytest.raises(TargetUnavailable):
        reader.get_node("m1")  # the server is gone
    assert {o: count(o) - before[o] for o in before} == {"ok": 1, "not_found": 1, "unreachable": 1}


def test_tls_server_name_is_the_name_the_certificate_is_checked_against(pki: Pki) -> None:
    with serve(nodes, pki=pki) as api:
        url = api.url.replace("localhost", "127.0.0.1")
        good = TargetReader(TargetConfig(url, ca_data=pki.ca, token=TOKEN, tls_server_name="localhost"))
        assert good.get_node("m1") == NODE
        wrong = TargetReader(TargetConfig(url, ca_data=pki.ca, token=TOKEN, tls_server_name="api.elsewhere.example"))
        with pytest.raises(TargetUnavailable, match=r"elsewhere|match|CERTIFICATE_VERIFY_FAILED"):
            wrong.get_node("m1")
