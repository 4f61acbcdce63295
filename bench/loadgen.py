"""A small in-process load generator: threads, each with one keep-alive HTTP/1.1 connection (http.client).

Kept minimal on purpose: every target is measured by the same client code, so the client's own cost is the same
for all of them and cancels out in ratios.
"""

from __future__ import annotations

import http.client
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Target:
    """One kind of request: method, path, body and headers against a loopback port."""

    name: str
    port: int
    method: str
    path: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    check: Callable[[int, bytes], str | None] | None = None  # returns a problem, or None when the answer is right


@dataclass
class Batch:
    latencies: list[float]
    seconds: float  # wall time of the whole batch

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds > 0 else 0.0


def _connection(target: Target) -> http.client.HTTPConnection:
    conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=30)
    conn.connect()
    return conn


def run(target: Target, requests: int, concurrency: int = 1) -> Batch:
    """Send `requests` requests with `concurrency` threads; raise on any unexpected answer."""
    per_thread = [requests // concurrency + (1 if i < requests % concurrency else 0) for i in range(concurrency)]
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    problems: list[str] = []
    conns = [_connection(target) for _ in range(concurrency)]
    start = threading.Barrier(concurrency + 1)

    def work(index: int) -> None:
        conn, out = conns[index], latencies[index]
        headers = {"Content-Type": "application/json", **target.headers}
        start.wait()
        try:
            for _ in range(per_thread[index]):
                t0 = time.perf_counter()
                conn.request(target.method, target.path, body=target.body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                out.append(time.perf_counter() - t0)
                problem = f"HTTP {response.status}" if response.status != 200 else None
                if problem is None and target.check is not None:
                    problem = target.check(response.status, data)
                if problem:
                    problems.append(f"{target.name}: {problem}: {data[:300]!r}")
                    return
        except Exception as exc:  # reported below; a benchmark must not hang on one broken thread
            problems.append(f"{target.name}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    start.wait()
    t0 = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - t0
    for conn in conns:
        conn.close()
    if problems:
        raise RuntimeError(problems[0])
    return Batch([x for chunk in latencies for x in chunk], seconds)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary(latencies: list[float], rps: list[float]) -> dict[str, float]:
    """Milliseconds for latencies; the median over rounds for requests per second."""
    return {
        "p50_ms": round(statistics.median(latencies) * 1000, 3),
        "p99_ms": round(percentile(latencies, 99) * 1000, 3),
        "rps": round(statistics.median(rps), 1),
        "requests": len(latencies),
    }
