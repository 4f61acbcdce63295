"""Fail closed: a server built from the environment never serves hooks with a configuration it could not read, nor
without a bearer token unless that is switched off explicitly; a body larger than its route allows is refused
before any of it is read."""

from __future__ import annotations

import io
import json

import pytest

from hooks.config import Settings
from hooks.server.app import BODY_LIMITS, MIB, create_app

HOOK_ENV = ("HOOK_AUTH_TOKEN", "HOOK_AUTH_TOKEN_NEXT", "HOOK_AUTH_DISABLED", "METAL_READ_TIMEOUT", "LOG_LEVEL")
EMPTY_SYNC = {"object": {"kind": "Machine", "metadata": {"name": "m", "namespace": "ns"}}}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in HOOK_ENV:
        monkeypatch.delenv(name, raising=False)


def test_an_invalid_setting_closes_the_hook_routes_even_with_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """The door the issue found: a token and METAL_READ_TIMEOUT=abc used to fall back to defaults without the token."""
    monkeypatch.setenv("HOOK_AUTH_TOKEN", "s3cret-token-value")
    monkeypatch.setenv("METAL_READ_TIMEOUT", "abc")
    client = create_app().test_client()
    for headers in ({}, {"Authorization": "Bearer s3cret-token-value"}):
        answer = client.post("/machine/sync", json=EMPTY_SYNC, headers=headers)
        assert answer.status_code == 503
        assert "METAL_READ_TIMEOUT" in answer.json["error"]
    ready = client.get("/readyz")
    assert ready.status_code == 503 and "METAL_READ_TIMEOUT" in ready.json["error"]


def test_without_a_token_the_server_is_not_ready_and_says_how_to_configure_it() -> None:
    client = create_app().test_client()
    answer = client.post("/machineset/sync", json=EMPTY_SYNC)
    assert answer.status_code == 503
    assert "HOOK_AUTH_TOKEN" in answer.json["error"] and "HOOK_AUTH_DISABLED=true" in answer.json["error"]
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200  # alive, just not ready: no restart loop


def test_auth_can_be_switched_off_only_explicitly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_AUTH_DISABLED", "true")
    client = create_app().test_client()
    assert client.get("/readyz").status_code == 200
    assert client.post("/machine/sync", data=b"[]").status_code == 400  # served: the body is just not an object
    monkeypatch.setenv("HOOK_AUTH_DISABLED", "maybe")
    assert create_app().test_client().get("/readyz").status_code == 503


def test_current_and_next_token_are_both_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_AUTH_TOKEN", "current-token-1")
    monkeypatch.setenv("HOOK_AUTH_TOKEN_NEXT", "next-token-2")
    client = create_app().test_client()
    assert client.get("/readyz").status_code == 200
    for token in ("current-token-1", "next-token-2"):
        answer = client.post("/machine/sync", data=b"[]", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 400, token  # past the token check
    refused = client.post("/machine/sync", data=b"[]", headers={"Authorization": "Bearer old-token-0"})
    assert refused.status_code == 401


class CountingBody(io.RawIOBase):
    """A request body that counts how much of it the server read."""

    def __init__(self, size: int) -> None:
        self.size, self.read_bytes = size, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self.size - self.read_bytes)
        buffer[:n] = b" " * n
        self.read_bytes += n
        return n


@pytest.mark.parametrize("token", ["", "right"])
def test_an_oversized_body_is_refused_before_it_is_read(token: str) -> None:
    settings = Settings(hook_auth_token="right") if token else Settings()
    client = create_app(settings).test_client()
    size = 300 * MIB
    body = CountingBody(size)
    headers = {"Authorization": "Bearer right"} if token else {}
    answer = client.post("/machine/sync", headers=headers, content_type="application/json",
                         environ_overrides={"wsgi.input": body, "CONTENT_LENGTH": str(size)})
    assert answer.status_code == 413
    assert answer.headers["Connection"] == "close"
    assert body.read_bytes == 0, f"read {body.read_bytes} bytes of a refused body"


def test_an_unauthenticated_large_body_is_not_read_either() -> None:
    client = create_app(Settings(hook_auth_token="right")).test_client()
    body = CountingBody(50 * MIB)
    answer = client.post("/machineset/sync",
                         environ_overrides={"wsgi.input": body, "CONTENT_LENGTH": str(50 * MIB)})
    assert answer.status_code == 401
    assert body.read_bytes == 0


def test_set_and_class_syncs_fit_a_thousand_machines() -> None:
    """bench: a MachineSet of 1000 Machines is a 3 MB request; set, class and deployment syncs take far more."""
    for route in ("/machineset/sync", "/machineclass/sync", "/machinedeployment/sync"):
        assert BODY_LIMITS[route] >= 1000 * 3 * 1024 * 10
    client = create_app(Settings()).test_client()
    big = {"parent": {"kind": "MachineSet", "metadata": {"name": "s", "namespace": "ns"}},
           "padding": "x" * (12 * MIB)}
    answer = client.post("/machineset/sync", data=json.dumps(big), content_type="application/json")
    assert answer.status_code != 413
    assert client.post("/machine/sync", data=json.dumps(big), content_type="application/json").status_code == 413


def test_a_chunked_body_is_capped_as_it_streams_in() -> None:
    """No Content-Length to check up front: reading stops at the route's limit instead of at the body's end."""
    from werkzeug.test import EnvironBuilder, run_wsgi_app

    app = create_app(Settings())
    body = CountingBody(300 * MIB)
    environ = EnvironBuilder(path="/machine/sync", method="POST", content_type="application/json",
                             headers={"Transfer-Encoding": "chunked"}).get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ.update({"wsgi.input": body, "wsgi.input_terminated": True})
    _, status, _ = run_wsgi_app(app, environ)
    assert status.startswith("413")
    assert body.read_bytes <= BODY_LIMITS["/machine/sync"] + MIB, f"read {body.read_bytes} bytes"
