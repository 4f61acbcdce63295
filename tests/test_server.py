"""The hook server as deployed: gunicorn with gunicorn.conf.py, probes, /metrics over all workers, bearer auth, TLS.

The gunicorn tests start the real server in a subprocess on an ephemeral port (BIND=127.0.0.1:0; the port is read
from gunicorn's "Listening at" line), exactly as the container's CMD runs it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from hooks.config import Settings
from hooks.context import HookContext
from hooks.server import app as app_module
from hooks.server.app import create_app

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent
MACHINE_SYNC_FIXTURE = REPO / "tests" / "fixtures" / "machine" / "sync-request.json"
HOOK_TOKEN = "hook-bearer-token-7d1e2f"
HOOK_COUNT = "metal_machine_hooks_hook_duration_seconds"
START_TIMEOUT = 30.0


class Server:
    """A gunicorn subprocess and everything it printed."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.url = ""
        self._listening = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            found = re.search(r"Listening at: (https?://\S+)", line)
            if found and not self.url:
                self.url = found[1]
                self._listening.set()
        self._listening.set()

    def output(self) -> str:
        return "".join(self.lines)

    def wait_ready(self, verify: str | bool = True) -> None:
        """Until gunicorn listens and a worker answers /healthz (fails early if gunicorn exits)."""
        deadline = time.monotonic() + START_TIMEOUT
        self._listening.wait(START_TIMEOUT)
        assert self.url, f"gunicorn did not start:\n{self.output()}"
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"gunicorn exited with {self.proc.returncode}:\n{self.output()}"
            try:
                if requests.get(self.url + "/healthz", timeout=2, verify=verify).status_code == 200:
                    return
            except (requests.ConnectionError, requests.Timeout):
                pass  # not listening yet, or the worker is still booting (the master holds the socket): retry
            time.sleep(0.05)
        raise AssertionError(f"no worker answered /healthz within {START_TIMEOUT} s:\n{self.output()}")

    def stop(self) -> int:
        """SIGTERM, as Kubernetes does; gunicorn should finish in-flight requests and exit 0."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._reader.join(timeout=5)
        return code


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(verify: str | bool = True, **env: str) -> Server:
        full_env = {k: v for k, v in os.environ.items() if k not in ("PORT", "HOOK_AUTH_TOKEN", "TLS_CERT_FILE")}
        if "HOOK_AUTH_TOKEN" not in env:
            full_env["HOOK_AUTH_DISABLED"] = "true"  # these tests call the hooks directly, without a token
        full_env.update(
            {
                "BIND": "127.0.0.1:0",
                "GUNICORN_WORKERS": "2",
                "GUNICORN_THREADS": "4",
                "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
                "LOG_LEVEL": "INFO",
                "PYTHONUNBUFFERED": "1",
                **env,
            }
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "hooks.app:create_app()"],
            cwd=REPO,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        server = Server(proc)
        servers.append(server)
        server.wait_ready(verify=verify)
        return server

    yield start
    for server in servers:
        server.stop()


def hook_request() -> tuple[str, bytes, int]:
    """The hook to call and what it should answer: /machine/sync with a valid request when both exist.

    Otherwise any registered hook with an empty object, which a hook refuses with 400: still proof that the
    request got past authentication.
    """
    app = create_app(Settings())
    posts = sorted(rule.rule for rule in app.url_map.iter_rules() if "POST" in (rule.methods or ()))
    if "/machine/sync" in posts and MACHINE_SYNC_FIXTURE.exists():
        return "/machine/sync", MACHINE_SYNC_FIXTURE.read_bytes(), 200
    if not posts:
        pytest.skip("no hook route is registered yet")
    return posts[0], b"{}", 400


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def test_gunicorn_serves_probes_metrics_and_authenticated_hooks(
    start_server: Callable[..., Server], metal_sim: Any, tmp_path: Path
) -> None:
    server = start_server(HOOK_AUTH_TOKEN=HOOK_TOKEN, METAL_API_URL=metal_sim.url)
    assert requests.get(server.url + "/healthz", timeout=5).json() == {"status": "ok"}
    assert requests.get(server.url + "/readyz", timeout=5).status_code == 200

    route, body, expected = hook_request()
    headers = {"Content-Type": "application/json"}
    refused = requests.post(server.url + route, data=body, headers=headers, timeout=5)
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert "Authorization" in refused.json()["error"]
    wrong = requests.post(
        server.url + route, data=body, headers={**headers, "Authorization": "Bearer not-the-token"}, timeout=5
    )
    assert wrong.status_code == 401
    accepted = requests.post(
        server.url + route,
        data=body,
        headers={**headers, "Authorization": f"Bearer {HOOK_TOKEN}", "X-Request-Id": "server-test-1"},
        timeout=10,
    )
    assert accepted.status_code == expected, accepted.text
    assert accepted.headers["X-Request-Id"] == "server-test-1"

    # Each scrape is a new connection that either worker may take; every one must see the sum over both.
    outcome = "ok" if expected == 200 else "bad_request"
    for _ in range(4):
        text = requests.get(server.url + "/metrics", timeout=5).text
        counts = {
            (labels["hook"], labels["outcome"]): value for labels, value in samples(text, HOOK_COUNT + "_count")
        }
        assert counts.get((route, outcome), 0) >= 1, text
        assert counts.get((route, "bad_request"), 0) >= 2, text
        if expected == 200:
            assert sum(value for _, value in samples(text, "metal_machine_hooks_api_calls_total")) >= 1, text
    assert list((tmp_path / "prometheus").glob("*.db")), "workers did not use prometheus multiprocess mode"

    # Nothing in flight: SIGTERM must not wait out graceful_timeout (10 s) for a thread stuck on a refused request.
    stopping = time.monotonic()
    assert server.stop() == 0, server.output()
    assert time.monotonic() - stopping < 8, server.output()
    output = server.output()
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    ours = [line for line in lines if line.get("request_id") == "server-test-1"]
    access = [line for line in ours if line["logger"] == "gunicorn.access"]
    assert [(a["method"], a["path"], a["status"]) for a in access] == [("POST", route, expected)]
    hook_lines = [line for line in ours if line.get("hook") == route]
    assert hook_lines, output
    assert HOOK_TOKEN not in output
    assert metal_sim.token not in output  # the Metal API token of the fixture's credentials Secret
    assert "bootstrap-secret-4f9a2c" not in output  # the userData of the fixture's Secret
    assert any(line["message"].startswith("Handling signal: term") for line in lines)


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1, made with `cryptography` when installed, else the openssl command."""
    cert, key = directory / "tls.crt", directory / "tls.key"
    try:
        import datetime
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        if not shutil.which("openssl"):
            pytest.skip("neither the cryptography package nor the openssl command is available")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1"],
            check=True,
            capture_output=True,
            timeout=30,
        )  # fmt: skip
        return cert, key
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert, key


def test_https_when_certificate_and_key_are_set(start_server: Callable[..., Server], tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    server = start_server(verify=str(cert), TLS_CERT_FILE=str(cert), TLS_KEY_FILE=str(key), GUNICORN_WORKERS="1")
    assert server.url.startswith("https://127.0.0.1:")
    assert requests.get(server.url + "/healthz", timeout=5, verify=str(cert)).json() == {"status": "ok"}
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url.replace("https://", "http://") + "/healthz", timeout=5)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TLS_CERT_FILE": "/nonexistent/tls.crt"}, "set both TLS_CERT_FILE and TLS_KEY_FILE"),
        ({"TLS_CERT_FILE": "/nonexistent/tls.crt", "TLS_KEY_FILE": "/nonexistent/tls.key"}, "not a readable file"),
        ({"GUNICORN_WORKERS": "two"}, "GUNICORN_WORKERS='two' is not an integer"),
        ({"GUNICORN_THREADS": "0"}, "GUNICORN_THREADS='0' must be at least 1"),
    ],
)
def test_bad_server_settings_stop_start_up_with_a_clear_message(env: dict[str, str], message: str) -> None:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("TLS_", "GUNICORN_"))}
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "hooks.app:create_app()"],
        cwd=REPO,
        env={**full_env, "BIND": "127.0.0.1:0", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert message in result.stderr + result.stdout


# -- bearer authentication, through the Flask test client ---------------------------------------------------------


def echo_hook(body: dict[str, Any], ctx: HookContext) -> dict[str, Any]:
    return {"seen": sorted(body)}


@pytest.fixture
def auth_client(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(app_module, "_routes", lambda: {"/test/sync": echo_hook})
    return create_app(Settings(hook_auth_token=HOOK_TOKEN)).test_client()


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer wrong-token", f"Basic {HOOK_TOKEN}", HOOK_TOKEN, f"Bearer {HOOK_TOKEN}x"],
)
def test_hook_routes_refuse_a_missing_or_wrong_token(auth_client: Any, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    response = auth_client.post("/test/sync", json={"a": 1}, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert set(response.json) == {"error"}
    assert HOOK_TOKEN not in response.get_data(as_text=True)


@pytest.mark.parametrize("header", [f"Bearer {HOOK_TOKEN}", f"bearer {HOOK_TOKEN}", f"  Bearer   {HOOK_TOKEN}  "])
def test_hook_routes_accept_the_configured_token(auth_client: Any, header: str) -> None:
    response = auth_client.post("/test/sync", json={"a": 1}, headers={"Authorization": header})
    assert response.status_code == 200
    assert response.json == {"seen": ["a"]}


def test_probes_and_metrics_need_no_token(auth_client: Any) -> None:
    assert auth_client.get("/healthz").status_code == 200
    assert auth_client.get("/readyz").status_code == 200
    assert auth_client.get("/metrics").status_code == 200


def test_without_a_configured_token_hooks_are_open(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app_module, "_routes", lambda: {"/test/sync": echo_hook})
    client = create_app(Settings()).test_client()
    assert client.post("/test/sync", json={"b": 2}).json == {"seen": ["b"]}


# -- the image ------------------------------------------------------------------------------------------------------


def test_image_holds_the_product_only_and_runs_gunicorn_as_uid_10001() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    ignored = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    runtime = dockerfile.split("\nFROM ")[-1]  # the last stage is the image that ships
    copied = [
        source
        for line in runtime.splitlines()
        if line.startswith("COPY ") and "--from=" not in line
        for source in line.split()[1:-1]
    ]
    assert copied, "the runtime stage copies no product files"
    for source in copied:
        assert (REPO / source).exists(), f"Dockerfile copies {source}, which is not in the repository"
        assert f"!{source}" in ignored, f".dockerignore keeps {source} out of the build context"
    assert not {"tests/", "emulator/", "bench/", "."} & set(copied)
    assert "USER 10001:10001" in runtime
    assert 'CMD ["gunicorn", "-c", "gunicorn.conf.py", "hooks.app:create_app()"]' in runtime
    assert "PYTHONDONTWRITEBYTECODE=1" in runtime
    assert "gcc" not in runtime and "build-essential" not in runtime and "apt-get" not in runtime


def _seconds(duration: str) -> float:
    """A Go duration as the controller YAMLs write it ("10s", "1m30s", "500ms")."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"unparsable duration {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


def test_server_time_limits_fit_the_controllers_and_the_deployment(tmp_path: Path) -> None:
    """The coupling documented in gunicorn.conf.py: worker timeout, graceful timeout, webhook timeouts, grace period."""
    import yaml

    result = subprocess.run(
        [sys.executable, "-c", "import json, runpy; c = runpy.run_path('gunicorn.conf.py'); "
         "print(json.dumps({k: c[k] for k in ('timeout', 'graceful_timeout', 'workers', 'threads', 'worker_class')}))"],
        cwd=REPO,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith(("GUNICORN_", "PROMETHEUS_"))},
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )  # fmt: skip
    conf = json.loads(result.stdout)
    assert (conf["workers"], conf["threads"]) == (2, 8)
    # gthread, with a read deadline per request (hooks/server/worker.py).
    from gunicorn.workers.gthread import ThreadWorker

    from hooks.server.worker import BoundedReadWorker

    assert conf["worker_class"] == "hooks.server.worker.BoundedReadWorker"
    assert issubclass(BoundedReadWorker, ThreadWorker)

    def webhook_timeouts(node: Any) -> Iterator[float]:
        if isinstance(node, dict):
            webhook = node.get("webhook")
            if isinstance(webhook, dict):
                yield _seconds(str(webhook.get("timeout", "10s")))
            for value in node.values():
                yield from webhook_timeouts(value)
        elif isinstance(node, list):
            for value in node:
                yield from webhook_timeouts(value)

    timeouts = [
        t
        for path in sorted((REPO / "metacontroller").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        for t in webhook_timeouts(doc)
    ]
    if not timeouts:
        pytest.skip("no controller webhooks in metacontroller/ yet")
    assert conf["timeout"] < min(timeouts)
    # Waiting on SIGTERM longer than Metacontroller waits for any call would only delay the shutdown.
    assert conf["graceful_timeout"] <= max(timeouts)
    deployment = REPO / "kubernetes" / "deploy" / "deployment.yaml"
    if deployment.exists():
        pod = yaml.safe_load(deployment.read_text())["spec"]["template"]["spec"]
        assert conf["graceful_timeout"] < pod.get("terminationGracePeriodSeconds", 30)
