"""Structured JSON logs, one object per line, with a request id per hook call and secrets scrubbed.

Log collectors parse one JSON object per line without multi-line stitching, and the request id ties a
Metacontroller sync error to the hook server's lines for that call. Secrets (API tokens, userdata) are known only
while a request runs, so hooks register them in a request-local set that the redaction filter reads.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from hooks import events
from hooks.redact import REDACTED, redact, secret_strings

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
REQUEST_ID_HEADER = "X-Request-Id"
# What we accept from a caller's X-Request-Id: enough for UUIDs and tracing ids, nothing that could forge a log line.
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
# Credentials in header form ("X-Auth-Token: abc", "'Authorization': 'Bearer abc'", "x-auth-token=abc").
_HEADER_SECRET_RE = re.compile(
    r"(?i)\b(x-auth-token|authorization)(['\"]?\s*[:=]\s*['\"]?)((?:bearer|basic|token)\s+)?([^\s'\",;}\]]+)"
)

_request_id: ContextVar[str | None] = ContextVar("hooks_request_id", default=None)
_hook: ContextVar[str | None] = ContextVar("hooks_hook", default=None)
_secrets: ContextVar[set[str] | None] = ContextVar("hooks_secrets", default=None)
_subject: ContextVar[str | None] = ContextVar("hooks_subject", default=None)

# Attributes every LogRecord has; anything else on a record came from `extra=` and is emitted as a field.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


def new_request_id(incoming: str | None = None) -> str:
    """The caller's id when it is a plain token, so its logs and ours correlate; otherwise a fresh one."""
    if incoming and _REQUEST_ID_RE.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


@contextlib.contextmanager
def request_scope(request_id: str, hook: str | None = None) -> Iterator[None]:
    """Binds the request id, hook name and an empty secret set to everything logged inside."""
    tokens = begin_request(request_id, hook)
    try:
        yield
    finally:
        end_request(tokens)


def begin_request(request_id: str, hook: str | None = None) -> tuple[Any, ...]:
    """`request_scope` for frameworks that enter and leave in separate callbacks; give the result to end_request."""
    return (_request_id.set(request_id), _hook.set(hook), _secrets.set(set()), _subject.set(None))


def end_request(tokens: tuple[Any, ...]) -> None:
    # Worker threads are reused, so a request's id and secrets must not leak into the next request on the thread.
    try:
        variables: tuple[ContextVar[Any], ...] = (_request_id, _hook, _secrets, _subject)
        for var, token in zip(variables, tokens, strict=True):
            var.reset(token)
    except ValueError:  # left from another context than the one entered: clear instead of restoring
        _request_id.set(None)
        _hook.set(None)
        _secrets.set(None)
        _subject.set(None)


def set_subject(subject: str | None) -> None:
    """Names the object the current hook call is about (e.g. "Machine shoot--dev/worker-a-1") on every line."""
    _subject.set(subject)


def current_request_id() -> str | None:
    return _request_id.get()


def register_secret(value: object) -> None:
    """Never log `value` (a token, userdata, customdata) for the rest of the current request.

    Outside a request there is nowhere to keep it, so the call does nothing; the header patterns still apply.
    """
    secrets = _secrets.get()
    if secrets is not None:
        secrets.update(s for s in secret_strings(value) if s)


def _on_secret_seen(_count: int, value: object = None, **_labels: object) -> None:
    """The MCM logic may not import the server (tests/test_architecture.py): it reports secrets through hooks.events."""
    register_secret(value)


events.subscribe(events.SECRET_SEEN, _on_secret_seen)


def current_secrets() -> frozenset[str]:
    return frozenset(_secrets.get() or ())


def scrub(text: str, secrets: frozenset[str] | None = None) -> str:
    """`text` without the current request's secrets and without credential header values."""
    text = redact(text, current_secrets() if secrets is None else secrets)
    return _HEADER_SECRET_RE.sub(lambda m: f"{m[1]}{m[2]}{m[3] or ''}{REDACTED}", text)


class RedactingFilter(logging.Filter):
    """Scrubs a record's message, extra fields and traceback before any handler formats it.

    Attach it to handlers (not loggers): handler filters see records propagated from every logger.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = current_secrets()
        if isinstance(record.args, dict):
            # gunicorn's access log passes its own dict of atoms (which answers "-" for missing keys): scrub it in
            # place so the formatter still gets the fields and the access format still renders.
            for key, value in list(record.args.items()):
                if isinstance(value, str):
                    dict.__setitem__(record.args, key, scrub(value, secrets))
            record.msg = scrub(str(record.msg), secrets)
        else:
            try:
                message = record.getMessage()
            except Exception:  # a bad format string must not lose the line
                message = f"{record.msg} {record.args}"
            record.msg, record.args = scrub(message, secrets), None
        for key, value in list(vars(record).items()):
            if key not in _RECORD_ATTRS and isinstance(value, str):
                setattr(record, key, scrub(value, secrets))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text, secrets)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info, secrets)
        return True


def _access_fields(atoms: Mapping[str, Any]) -> dict[str, Any]:
    """Named fields from gunicorn's access-log atoms (see gunicorn.glogging.Logger.atoms)."""

    def atom(key: str) -> Any:
        value = atoms.get(key)
        return None if value in (None, "-") else value

    fields: dict[str, Any] = {
        "remote": atom("h"),
        "method": atom("m"),
        "path": atom("U"),
        "status": int(atoms["s"]) if str(atom("s") or "").isdigit() else atom("s"),
        "bytes": atom("B"),
        "duration_ms": round(atoms["D"] / 1000, 3) if isinstance(atom("D"), int) else None,
        "request_id": atom("{x-request-id}o") or atom("{x-request-id}i"),
        "user_agent": atom("a"),
    }
    return {k: v for k, v in fields.items() if v is not None}


_base_record_factory = logging.getLogRecordFactory()


def _record_with_context(*args: Any, **kwargs: Any) -> logging.LogRecord:
    """Every record carries the hook route it was logged under (as `hook`), whatever handler formats it: a line from
    the driver or the client names the route although neither knows it."""
    record = _base_record_factory(*args, **kwargs)
    hook = _hook.get()
    if hook and "hook" not in vars(record):
        record.hook = hook
    return record


logging.setLogRecordFactory(_record_with_context)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, request context, extra fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _iso_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        request_id, hook = _request_id.get(), _hook.get()
        if request_id:
            entry["request_id"] = request_id
        if hook:
            entry["hook"] = hook
        subject = _subject.get()
        if subject:
            entry["object"] = subject
        if record.name == "gunicorn.access" and isinstance(record.args, Mapping):
            entry.update(_access_fields(record.args))
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, default=str, ensure_ascii=False)


def _iso_time(created: float) -> str:
    millis = int(created * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{millis:03d}Z"


class StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at emit time, so a replaced stream (tests, CLI capture) is followed."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def parse_level(raw: str | None) -> tuple[int, str]:
    """LOG_LEVEL as a logging level, and an error message ("" when fine); unknown names fall back to INFO."""
    name = (raw or "INFO").strip().upper() or "INFO"
    if name == "WARN":
        name = "WARNING"
    if name not in LEVELS:
        return logging.INFO, f"LOG_LEVEL={raw!r} is not a log level (use one of {', '.join(LEVELS)})"
    return getattr(logging, name), ""


def configure_logging(level: str | None = None) -> str:
    """Sends every log record as JSON to stderr, once per process; sets the root level on every call.

    gunicorn.conf.py may already have installed the same formatter on the root logger; then only the level
    changes. Returns an error message for an unusable level (the caller reports it), else "".
    """
    number, error = parse_level(level)
    root = logging.getLogger()
    if not any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        handler = StderrHandler()
        handler.setFormatter(JsonFormatter())
        handler.addFilter(RedactingFilter())
        root.addHandler(handler)
    root.setLevel(number)
    return error
