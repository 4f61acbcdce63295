"""`python -m drain NODE [--timeout S] [--deadline RFC3339] [--retry-interval S]`: exit 0 once the Node is drained.

Exit 1 when it is not: the reason is printed and written to the pod's termination message (`kubectl describe pod`;
the file is TERMINATION_MESSAGE_PATH, default /dev/termination-log, the container's terminationMessagePath),
and the Job, once out of retries, turns the Machine's lastOperation into "Drain failed due to - ...". Exit 2 on bad
arguments. The API server is the pod's own (ServiceAccount) unless KUBECONFIG names a kubeconfig file (the target
cluster's, mounted from a Secret volume: docs/operations.md "Two clusters").
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from drain import program
from drain.kube import KubeApi, KubeError
from drain.node import DrainFailed, drain_node


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m drain", description="Cordon a Node and evict its pods.")
    parser.add_argument("node", help="name of the Node to drain")
    parser.add_argument("--timeout", type=_seconds, default=7200.0, help="give up after this many seconds")
    parser.add_argument("--deadline", type=program.instant, help="give up at this time (the Machine's drain deadline)")
    parser.add_argument("--retry-interval", type=_seconds, default=5.0, help="seconds between eviction rounds")
    return parser.parse_args(argv)


def main(
    argv: Sequence[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    api: KubeApi | None = None,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    termination_log: Path | None = None,
) -> int:
    args = parse_args(argv)
    env = os.environ if env is None else env
    budget = args.timeout
    if args.deadline is not None:
        budget = min(budget, (args.deadline - wall_clock()).total_seconds())
    own_pod = f"{env.get('POD_NAMESPACE', '')}/{env.get('POD_NAME', '')}" if env.get("POD_NAME") else ""

    def step() -> None:
        drain_node(
            api or KubeApi.from_env(env),
            args.node,
            deadline=monotonic() + max(0.0, budget),
            retry_interval=args.retry_interval,
            own_pod=own_pod,
            monotonic=monotonic,
            sleep=sleep,
        )

    return program.run(step, (DrainFailed, KubeError), lambda exc: f"drain of node {args.node} failed: {exc}",
                       program.termination_log(env, termination_log))


if __name__ == "__main__":
    sys.exit(main())
