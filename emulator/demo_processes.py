"""The demo's two server processes: the Metal simulator and the hook server under gunicorn.

Why subprocesses: the demo should run the hooks exactly as the image does (gunicorn, its config, several
workers) and talk to the simulator over real HTTP. Each child gets its own session (a terminal's Ctrl-C reaches
only the demo, which then stops them in order) and dies with the demo even if the demo is killed outright
(Linux parent-death signal). Readiness is polled over HTTP, never assumed after a sleep.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
_LISTENING = re.compile(r"listening on (http://\S+)")
_PR_SET_PDEATHSIG = 1


class StartError(RuntimeError):
    """A child did not come up; the message carries the end of its log."""


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when the demo process goes away, however that happens."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    url: str = ""

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def stop(self, grace: float = 8.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds; always reaps the process."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                self.process.wait()


def _spawn(name: str, args: list[str], workdir: Path, *, env: dict[str, str] | None = None,
           pass_fds: tuple[int, ...] = ()) -> Child:
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, *args], cwd=REPO, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True, pass_fds=pass_fds,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
    return Child(name, process, log)


def _wait(child: Child, ready: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if child.process.poll() is not None:
            raise StartError(f"{child.name} exited with {child.process.returncode} before {what}:\n{child.tail()}")
        if ready():
            return
        if time.monotonic() > deadline:
            raise StartError(f"{child.name} not {what} within {timeout:.0f} s:\n{child.tail()}")
        time.sleep(0.05)


def _http_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=1.0).status_code == 200
    except requests.RequestException:
        return False


def start_simulator(workdir: Path, *, token: str, project: str, provision_seconds: float,
                    deprovision_seconds: float, timeout: float = 20.0) -> Child:
    """`python -m emulator.metal` on a free port; `url` is its base (the API lives under /metal/v1)."""
    child = _spawn("simulator", [
        "-m", "emulator.metal", "--host", "127.0.0.1", "--port", "0", "--token", token, "--project", project,
        "--provision-seconds", str(provision_seconds), "--deprovision-seconds", str(deprovision_seconds),
    ], workdir)

    def announced() -> bool:
        match = _LISTENING.search(child.log.read_text(errors="replace"))
        if match:
            child.url = match.group(1).removesuffix("/metal/v1")
        return bool(match)

    try:
        _wait(child, announced, timeout, "listening")
        _wait(child, lambda: _http_ok(child.url + "/_sim/state"), timeout, "answering /_sim/state")
    except BaseException:
        child.stop()
        raise
    return child


def start_hook_server(workdir: Path, *, metal_api_url: str, token: str, timeout: float = 30.0,
                      env: dict[str, str] | None = None) -> Child:
    """gunicorn with the repository's gunicorn.conf.py, on a socket bound here (no free-port race), requiring
    `token` as an installation does (HOOK_AUTH_TOKEN; the emulator sends it from the endpointConfigs Secret); `env`
    adds settings (the demo's bootstrap token key file)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    metrics = workdir / "metrics"
    metrics.mkdir(exist_ok=True)
    try:
        child = _spawn("hooks", ["-m", "gunicorn", "-c", str(REPO / "gunicorn.conf.py"), "hooks.app:create_app()"],
                       workdir, pass_fds=(listener.fileno(),), env={
                           "BIND": f"fd://{listener.fileno()}",
                           "METAL_API_URL": metal_api_url,
                           "HOOK_AUTH_TOKEN": token,
                           "PROMETHEUS_MULTIPROC_DIR": str(metrics),
                           # Ctrl-C should not wait the production 25 s for in-flight calls.
                           "GUNICORN_GRACEFUL_TIMEOUT": "5",
                           **(env or {}),
                       })
    finally:
        listener.close()  # gunicorn holds its own copy
    child.url = f"http://127.0.0.1:{port}"
    try:
        _wait(child, lambda: _http_ok(child.url + "/healthz") and _http_ok(child.url + "/readyz"), timeout,
              "healthy")
    except BaseException:
        child.stop()
        raise
    return child
