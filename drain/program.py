"""What every Job program of this repository (`python -m drain`, `python -m nodejobs`) does the same way around its
step: RFC 3339 arguments, and the exit code, where 1 comes with the reason printed and written to the pod's
termination message (TERMINATION_MESSAGE_PATH, default /dev/termination-log: `kubectl describe pod` shows it, and
the hooks read it into the Machine's lastOperation). Exit 2 for bad arguments is argparse's.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

TERMINATION_LOG = Path("/dev/termination-log")


def instant(text: str) -> datetime:
    """An RFC 3339 time argument; one without a zone is UTC."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an RFC 3339 time such as 2026-01-02T03:04:05Z") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def termination_log(env: Mapping[str, str], given: Path | None = None) -> Path:
    """Where the termination message goes: `given` (tests), else the container's terminationMessagePath."""
    return given if given is not None else Path(env.get("TERMINATION_MESSAGE_PATH") or TERMINATION_LOG)


def run(step: Callable[[], object], errors: tuple[type[Exception], ...], failure: Callable[[Exception], str],
        log_path: Path) -> int:
    """0 once `step` is done; 1 when it raises one of `errors`, with `failure(exc)` printed and written to
    `log_path`. Any other exception is a defect and goes up as a traceback."""
    try:
        step()
    except errors as exc:
        message = failure(exc)
        print(message, file=sys.stderr)
        _report(message, log_path)
        return 1
    return 0


def _report(message: str, path: Path) -> None:
    """Best effort: the termination message is a convenience, the log line is the record."""
    with contextlib.suppress(OSError):
        path.write_text(message[:4000])
