"""Fault injection for the Metal simulator: which requests fail, how, and reproducibly.

Each API request gets its own random stream derived from (seed, request number), and always draws the same
values in the same order whatever knobs are set. So with a given seed and request sequence the same requests
fail the same way, and turning one knob on never reshuffles the outcome of another.
"""

from __future__ import annotations

import fnmatch
import random
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

RATE_KNOBS = (
    "rate_429", "rate_5xx", "html_fraction", "rate_403_ratelimit", "rate_drop", "rate_lost_create",
    "lost_create_drop_fraction",
)


@dataclass(frozen=True)
class Faults:
    """Fault knobs. Rates are fractions of API requests in [0, 1]."""

    rate_429: float = 0.0  # answered 429 with Retry-After: retry_after
    retry_after: float = 1.0  # seconds, sent rounded up to a whole number as HTTP requires
    rate_5xx: float = 0.0  # answered 500, 502 or 503 before anything happens
    html_fraction: float = 0.25  # of those 5xx, answered by a "load balancer": HTML body, no X-Request-Id
    rate_403_ratelimit: float = 0.0  # answered 403 {"error": "Rate limit exceeded"}
    latency_seconds: float = 0.0  # added before every faultable answer
    rate_drop: float = 0.0  # connection closed without an answer, request not processed
    rate_lost_create: float = 0.0  # a create succeeds but its answer is lost
    lost_create_drop_fraction: float = 0.5  # of lost creates, dropped connection (the rest: 503)
    only_methods: tuple[str, ...] = ()  # if set, only these HTTP methods are faulted
    only_paths: tuple[str, ...] = ()  # if set, only these route templates or path globs are faulted

    def updated(self, **knobs: Any) -> Faults:
        """A copy with `knobs` changed; ValueError names any unknown knob or bad value."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(knobs) - known)
        if unknown:
            raise ValueError(f"unknown fault knob(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        clean: dict[str, Any] = {}
        for name, value in knobs.items():
            if name in ("only_methods", "only_paths"):
                clean[name] = _string_list(name, value, upper=name == "only_methods")
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"fault knob {name} must be a number, got {value!r}")
            value = float(value)
            if value < 0 or (name in RATE_KNOBS and value > 1):
                raise ValueError(f"fault knob {name} must be {'in [0, 1]' if name in RATE_KNOBS else '>= 0'}")
            clean[name] = value
        return replace(self, **clean)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["only_methods"] = list(self.only_methods)
        data["only_paths"] = list(self.only_paths)
        return data

    def applies_to(self, method: str, route: str, path: str) -> bool:
        if self.only_methods and method.upper() not in self.only_methods:
            return False
        if self.only_paths:
            return any(p == route or fnmatch.fnmatchcase(path, p) for p in self.only_paths)
        return True


def _string_list(name: str, value: Any, *, upper: bool) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"fault knob {name} must be a list of strings")
    return tuple(v.strip().upper() if upper else v.strip() for v in value)


@dataclass(frozen=True)
class FaultDecision:
    """What happens to one request. `before` short-circuits it; `lose_create` hides a successful create."""

    latency: float = 0.0
    before: str | None = None  # "drop", "429", "403", "5xx"
    status_5xx: int = 503
    html: bool = False
    lose_create: str | None = None  # "drop" or "503"


NO_FAULT = FaultDecision()


def decide(faults: Faults, seed: int, number: int, method: str, route: str, path: str) -> FaultDecision:
    """The fate of API request `number` (counted from 0) under `faults` and `seed`."""
    rng = random.Random(f"metal-sim:{seed}:{number}")
    u_drop, u_429, u_403, u_5xx, u_html, u_code, u_lost, u_mode = (rng.random() for _ in range(8))
    if not faults.applies_to(method, route, path):
        return NO_FAULT
    before = None
    if u_drop < faults.rate_drop:
        before = "drop"
    elif u_429 < faults.rate_429:
        before = "429"
    elif u_403 < faults.rate_403_ratelimit:
        before = "403"
    elif u_5xx < faults.rate_5xx:
        before = "5xx"
    lose = None
    if u_lost < faults.rate_lost_create:
        lose = "drop" if u_mode < faults.lost_create_drop_fraction else "503"
    return FaultDecision(
        latency=faults.latency_seconds,
        before=before,
        status_5xx=(500, 502, 503)[int(u_code * 3) % 3],
        html=u_html < faults.html_fraction,
        lose_create=lose,
    )
