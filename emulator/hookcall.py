"""How Metacontroller talks to a webhook: URL resolution, auth headers, timeouts, and strict/loose decoding.

Split from the controller loop because this is the part that decides whether a hook answer is accepted at all,
and it must match v4.17 exactly: only HTTP 200 is success, 429 asks for a delayed retry (Retry-After), and
v2 hooks are decoded strictly (an unknown or duplicate field anywhere in a typed part of the response is an error),
while v1 hooks silently drop unknown fields. Field names are case-sensitive in both modes.
"""

from __future__ import annotations

import email.utils
import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests

Obj = dict[str, Any]

DEFAULT_TIMEOUT = 10.0

# Top-level fields each response type decodes into (Go struct json tags).
RESPONSE_FIELDS: dict[str, dict[str, str]] = {
    "composite": {"status": "map", "children": "objects", "resyncAfterSeconds": "number", "finalized": "bool"},
    "decorator": {
        "labels": "stringmap",
        "annotations": "stringmap",
        "status": "map",
        "attachments": "objects",
        "resyncAfterSeconds": "number",
        "finalized": "bool",
    },
    "customize": {"relatedResources": "rules"},
}
_RULE_FIELDS = {"apiVersion", "resource", "labelSelector", "namespaceSelector", "namespace", "names"}
_SELECTOR_FIELDS = {"matchLabels", "matchExpressions"}
_REQUIREMENT_FIELDS = {"key", "operator", "values"}


class HookError(Exception):
    """The hook call failed; the sync is retried with exponential backoff."""


class RetryAfter(Exception):
    """HTTP 429: requeue after `seconds`, without backoff and without an error event."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"too many requests, retry after {seconds}s")
        self.seconds = seconds


@dataclass(frozen=True)
class Hook:
    """One configured hook (customize, sync or finalize) of one controller."""

    name: str
    version: str
    webhook: Obj

    @property
    def strict(self) -> bool:
        mode = self.webhook.get("responseUnMarshallMode")
        return mode == "strict" if mode else self.version == "v2"

    @property
    def etag(self) -> tuple[bool, float | None]:
        """(enabled, cacheTimeoutSeconds) of webhook.etag; unset timeout means entries never expire."""
        config = self.webhook.get("etag") or {}
        timeout = config.get("cacheTimeoutSeconds")
        return bool(config.get("enabled")), float(timeout) if timeout is not None else None

    @property
    def timeout(self) -> float:
        seconds = parse_duration(self.webhook.get("timeout"))
        return seconds if seconds and seconds > 0 else DEFAULT_TIMEOUT


def parse_hook(name: str, spec: Obj | None) -> Hook | None:
    if not spec or not spec.get("webhook"):
        return None
    return Hook(name=name, version=spec.get("version") or "v1", webhook=spec["webhook"])


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: Any) -> float | None:
    """Go `time.ParseDuration` for the forms controller YAML uses ("10s", "1m30s", "500ms")."""
    if text is None or text == "":
        return None
    if isinstance(text, int | float):
        return float(text)
    value = str(text).strip()
    sign = -1.0 if value.startswith("-") else 1.0
    value = value.lstrip("+-")
    if value == "0":
        return 0.0
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise ValueError(f"invalid duration {text!r}")
    return sign * sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float:
    """Seconds from a Retry-After header: integer seconds or an HTTP date; unparsable or missing → 0."""
    if not value:
        return 0.0
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0.0
    return max(0.0, moment.timestamp() - now())


class HookClient:
    """Posts hook requests; one requests.Session per thread (workers call concurrently)."""

    def __init__(
        self,
        *,
        service_urls: Mapping[str, str] | None = None,
    ) -> None:
        self._service_urls = dict(service_urls or {})
        self._local = threading.local()

    def url_for(self, hook: Hook) -> str:
        webhook = hook.webhook
        if webhook.get("url"):
            return str(webhook["url"])
        service = webhook.get("service") or {}
        path = webhook.get("path")
        if not service.get("name") or not service.get("namespace") or not path:
            raise HookError("must specify either a full 'url', or both 'service' and 'path'")
        host = f"{service['name']}.{service['namespace']}"
        port = service.get("port", 80)
        base = self._service_urls.get(f"{host}:{port}") or self._service_urls.get(host)
        if base is None:
            protocol = service.get("protocol") or "http"
            raise HookError(
                f'http error: Post "{protocol}://{host}:{port}{path}": dial tcp: lookup {host}: no such host '
                f"(no service_urls entry for {host!r})"
            )
        return base.rstrip("/") + path

    def post(self, hook: Hook, body: Obj, headers: Mapping[str, str], url: str,
             etags: EtagCache | None = None, root: tuple[str, str, str] | None = None) -> str:
        """POST and return the body text of a 200; raise RetryAfter on 429 and HookError otherwise.

        With `etags` (webhook.etag.enabled), a cached ETag for the root object is sent as If-None-Match and
        a 304/412 answer reuses the cached body; a 200 with an ETag header refreshes the cache.
        """
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        headers = dict(headers)
        cached = etags.get(root) if etags is not None and root is not None else None
        if cached is not None:
            headers["If-None-Match"] = cached[0]
        try:
            response = session.post(url, data=json.dumps(body, sort_keys=True), headers=headers,
                                    timeout=hook.timeout)
        except requests.Timeout as exc:
            raise HookError(f'http error: Post "{url}": context deadline exceeded (Client.Timeout exceeded '
                            f"while awaiting headers): {type(exc).__name__}") from exc
        except requests.RequestException as exc:
            raise HookError(f'http error: Post "{url}": {type(exc).__name__}: {exc}') from exc
        if response.status_code == 429:
            raise RetryAfter(parse_retry_after(response.headers.get("Retry-After")))
        if etags is not None and "If-None-Match" in headers and response.status_code in (304, 412):
            if cached is None:
                raise HookError("cannot find cached response")
            return cached[1]
        if response.status_code != 200:
            raise HookError(f"unsupported status code: {response.status_code} body: {response.text[:500]}")
        if etags is not None and root is not None and response.headers.get("ETag"):
            etags.put(root, response.headers["ETag"], response.text)
        return response.text


class EtagCache:
    """Per-hook (ETag, body) by root object (kind, namespace, name); entries expire after cacheTimeoutSeconds."""

    def __init__(self, timeout_seconds: float | None, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._timeout = timeout_seconds
        self._now = monotonic
        self._entries: dict[tuple[str, str, str], tuple[str, str, float]] = {}
        self._lock = threading.Lock()

    def get(self, root: tuple[str, str, str]) -> tuple[str, str] | None:
        with self._lock:
            entry = self._entries.get(root)
            if entry is None:
                return None
            if self._timeout is not None and self._now() - entry[2] > self._timeout:
                del self._entries[root]
                return None
            return entry[0], entry[1]

    def put(self, root: tuple[str, str, str], etag: str, text: str) -> None:
        with self._lock:
            self._entries[root] = (etag, text, self._now())


def decode_response(text: str, response_type: str, *, strict: bool) -> Obj:
    """Decode like sigs.k8s.io/json UnmarshalStrict: types always checked; unknown/duplicate fields fatal if strict."""
    duplicates: list[str] = []

    def pairs_hook(pairs: list[tuple[str, Any]]) -> Obj:
        out: Obj = {}
        for key, value in pairs:
            if key in out:
                duplicates.append(key)
            out[key] = value
        return out

    try:
        body = json.loads(text, object_pairs_hook=pairs_hook)
    except ValueError as exc:
        raise HookError(f"can't unmarshal response: {exc}") from exc
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise HookError(f"can't unmarshal response: json: cannot unmarshal {type(body).__name__} into Go value")
    if strict and duplicates:
        raise HookError(f'can\'t unmarshal response: json: duplicate field "{duplicates[0]}"')
    fields = RESPONSE_FIELDS[response_type]
    out: Obj = {}
    for key, value in body.items():
        kind = fields.get(key)
        if kind is None:
            if strict:
                raise HookError(f'can\'t unmarshal response: json: unknown field "{key}"')
            continue
        out[key] = _check(key, value, kind, strict)
    return out


def _check(field: str, value: Any, kind: str, strict: bool) -> Any:
    def fail(want: str) -> HookError:
        got = type(value).__name__ if value is not None else "null"
        return HookError(f"can't unmarshal response: json: cannot unmarshal {got} into field {field} of type {want}")

    if value is None:
        return None
    if kind == "map" and not isinstance(value, dict):
        raise fail("map[string]interface {}")
    if kind == "number" and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise fail("float64")
    if kind == "bool" and not isinstance(value, bool):
        raise fail("bool")
    if kind == "stringmap":
        if not isinstance(value, dict):
            raise fail("map[string]*string")
        for key, item in value.items():
            if item is not None and not isinstance(item, str):
                raise HookError(f"can't unmarshal response: json: cannot unmarshal {type(item).__name__} into "
                                f"field {field}[{key}] of type string")
    if kind == "objects" and (not isinstance(value, list) or not all(isinstance(i, dict) for i in value)):
        raise fail("[]*unstructured.Unstructured")
    if kind == "rules":
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise fail("[]*v1alpha1.RelatedResourceRule")
        return [_check_rule(rule, strict) for rule in value]
    return value


def _check_rule(rule: Obj, strict: bool) -> Obj:
    out = {}
    for key, value in rule.items():
        if key not in _RULE_FIELDS:
            if strict:
                raise HookError(f'can\'t unmarshal response: json: unknown field "relatedResources[].{key}"')
            continue
        if key in ("labelSelector", "namespaceSelector") and value is not None:
            value = _check_selector(key, value, strict)
        if key == "names" and value is not None and (
            not isinstance(value, list) or not all(isinstance(n, str) for n in value)
        ):
            raise HookError("can't unmarshal response: json: relatedResources[].names must be a list of strings")
        if key in ("apiVersion", "resource", "namespace") and value is not None and not isinstance(value, str):
            raise HookError(f"can't unmarshal response: json: relatedResources[].{key} must be a string")
        out[key] = value
    return out


def _check_selector(field: str, selector: Any, strict: bool) -> Obj:
    if not isinstance(selector, dict):
        raise HookError(f"can't unmarshal response: json: relatedResources[].{field} must be an object")
    out = {}
    for key, value in selector.items():
        if key not in _SELECTOR_FIELDS:
            if strict:
                raise HookError(f'can\'t unmarshal response: json: unknown field "{field}.{key}"')
            continue
        if key == "matchExpressions":
            exprs = []
            for expr in value or []:
                if strict and set(expr) - _REQUIREMENT_FIELDS:
                    unknown = sorted(set(expr) - _REQUIREMENT_FIELDS)[0]
                    raise HookError(
                        f'can\'t unmarshal response: json: unknown field "{field}.matchExpressions.{unknown}"'
                    )
                exprs.append({k: v for k, v in expr.items() if k in _REQUIREMENT_FIELDS})
            value = exprs
        out[key] = value
    return out
