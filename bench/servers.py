"""The processes a benchmark talks to: the Metal simulator and gunicorn serving an app with the project's config.

Each runs in its own process so that the load generator, the server under test and the simulator do not share one
interpreter lock; all listen on loopback ports picked by the OS. Processes are stopped by their own pid only.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get_json(url: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # loopback only
        return json.loads(response.read())


class Process:
    """A child process serving HTTP on `port`; its output goes to a log file named in errors."""

    def __init__(self, name: str, argv: list[str], port: int, ready_path: str, env: dict[str, str] | None = None):
        self.name = name
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = Path(tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".log")[1])
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(argv, cwd=REPO, env={**os.environ, **(env or {})}, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {self.proc.returncode}; see {self.log_path}")
            try:
                _get_json(self.base_url + ready_path, timeout=1.0)
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{name} not ready after {START_TIMEOUT} s; see {self.log_path}") from None
                time.sleep(0.05)

    def cpu_seconds(self) -> float | None:
        """User+system CPU of this process and its direct children (gunicorn workers); None off Linux."""
        try:
            pids = [self.proc.pid]
            for stat in Path("/proc").glob("[0-9]*/stat"):
                fields = stat.read_text().rsplit(")", 1)[-1].split()
                if int(fields[1]) == self.proc.pid:
                    pids.append(int(stat.parent.name))
            ticks = 0
            for pid in pids:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
                ticks += int(fields[11]) + int(fields[12])  # utime, stime
            return ticks / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._log.close()

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Simulator(Process):
    """`python -m emulator.metal` with zero provisioning delay and room for every device a bench creates."""

    def __init__(self, token: str, projects: list[str], *, capacity: int = 5000) -> None:
        port = free_port()
        argv = [sys.executable, "-m", "emulator.metal", "--host", "127.0.0.1", "--port", str(port),
                "--token", f"{token}={','.join(projects)}", "--capacity", str(capacity)]
        super().__init__("simulator", argv, port, "/_sim/calls")
        self.url = f"{self.base_url}/metal/v1"

    def calls(self) -> dict[str, int]:
        return dict(_get_json(self.base_url + "/_sim/calls")["calls"])

    def devices(self) -> list[dict[str, Any]]:
        return list(_get_json(self.base_url + "/_sim/state", timeout=10.0)["devices"])


class Gunicorn(Process):
    """gunicorn with the repository's gunicorn.conf.py (workers, threads, logging as deployed)."""

    def __init__(self, app: str, *, env: dict[str, str] | None = None, name: str = "gunicorn") -> None:
        port = free_port()
        settings = {"BIND": f"127.0.0.1:{port}", **(env or {})}
        argv = [sys.executable, "-m", "gunicorn", "-c", str(REPO / "gunicorn.conf.py"), app]
        super().__init__(name, argv, port, "/healthz", env=settings)


def calls_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in sorted(set(before) | set(after))
            if after.get(k, 0) != before.get(k, 0)}
