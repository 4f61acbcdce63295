"""Hook server logs are JSON lines with a request id per call, and never show a token or userdata."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from gunicorn.glogging import SafeAtoms

from hooks.config import Settings
from hooks.context import BadRequest, HookContext
from hooks.server import app as app_module
from hooks.server import logs
from hooks.server.app import create_app

SECRET = "s3cr3t-api-token-0123456789"
USERDATA = "#cloud-config\nruncmd:\n  - echo bootstrap-secret-4f9a2c > /etc/join-token\n"


@pytest.fixture(autouse=True)
def _root_level() -> Iterator[None]:
    """create_app sets the root level from LOG_LEVEL; leave it as found for the next test."""
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line the handler wrote, parsed; a line that is not one JSON object fails the test."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def leaky_hook(body: dict[str, Any], ctx: HookContext) -> dict[str, Any]:
    """A hook that registers its secrets, then logs and fails with them in the message."""
    logs.register_secret(SECRET)
    logs.register_secret(USERDATA)
    logging.getLogger("hooks.test").warning("calling the API with token %s and userdata %s", SECRET, USERDATA)
    if body.get("fail"):
        raise RuntimeError(f"API rejected token {SECRET}")
    if body.get("bad"):
        raise BadRequest("spec.class.name is missing")
    return {"ok": True}


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv("LOG_LEVEL", raising=False)
    monkeypatch.setattr(app_module, "_routes", lambda: {"/test/leaky": leaky_hook})
    return create_app(Settings()).test_client()


def test_every_line_is_json_with_the_callers_request_id(client: Any, capsys: pytest.CaptureFixture[str]) -> None:
    machine = {"kind": "Machine", "metadata": {"name": "worker-a-1", "namespace": "shoot--dev"}}
    response = client.post("/test/leaky", json={"object": machine}, headers={"X-Request-Id": "mc-req-42"})
    assert response.status_code == 200
    assert response.headers["X-Request-Id"] == "mc-req-42"
    lines = json_lines(capsys.readouterr().err)
    hook_lines = [line for line in lines if line.get("hook") == "/test/leaky"]
    assert {line["request_id"] for line in hook_lines} == {"mc-req-42"}
    assert {line["object"] for line in hook_lines} == {"Machine shoot--dev/worker-a-1"}
    summary = next(line for line in hook_lines if line["logger"] == "hooks.access")
    assert summary["status"] == 200
    assert summary["outcome"] == "ok"
    assert summary["duration_ms"] >= 0
    assert summary["level"] == "INFO"
    assert summary["time"].endswith("Z")


def test_request_id_is_generated_when_missing_or_unsafe(client: Any, capsys: pytest.CaptureFixture[str]) -> None:
    first = client.post("/test/leaky", json={}).headers["X-Request-Id"]
    second = client.post("/test/leaky", json={}).headers["X-Request-Id"]
    forged = client.post("/test/leaky", json={}, headers={"X-Request-Id": 'x" level=ERROR {'}).headers["X-Request-Id"]
    assert len({first, second, forged}) == 3
    assert all(len(rid) == 32 for rid in (first, second, forged))
    ids = {line.get("request_id") for line in json_lines(capsys.readouterr().err) if line.get("hook")}
    assert ids == {first, second, forged}


def test_registered_secrets_are_redacted_from_messages_and_tracebacks(
    client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert client.post("/test/leaky", json={}).status_code == 200
    failed = client.post("/test/leaky", json={"fail": True})
    assert failed.status_code == 500
    assert SECRET not in failed.get_data(as_text=True)
    err = capsys.readouterr().err
    assert SECRET not in err
    assert "bootstrap-secret-4f9a2c" not in err
    lines = json_lines(err)
    warnings = [line for line in lines if line["logger"] == "hooks.test"]
    assert len(warnings) == 2
    assert all("[redacted]" in line["message"] for line in warnings)
    crash = next(line for line in lines if "exception" in line)
    assert "RuntimeError: API rejected token [redacted]" in crash["exception"]
    assert crash["level"] == "ERROR"


def test_secrets_of_one_request_do_not_stick_to_the_next() -> None:
    with logs.request_scope("a"):
        logs.register_secret(SECRET)
        assert SECRET in logs.current_secrets()
    assert logs.current_secrets() == frozenset()
    with logs.request_scope("b"):
        assert logs.current_secrets() == frozenset()
        assert logs.current_request_id() == "b"
    assert logs.current_request_id() is None


@pytest.mark.parametrize(
    "text",
    [
        "sending X-Auth-Token: abcdef0123456789 to the API",
        "headers {'X-Auth-Token': 'abcdef0123456789', 'Accept': 'application/json'}",
        'header "Authorization: Bearer abcdef0123456789"',
        "authorization=Basic abcdef0123456789",
    ],
)
def test_credential_headers_are_redacted_without_registration(text: str) -> None:
    scrubbed = logs.scrub(text)
    assert "abcdef0123456789" not in scrubbed
    assert "[redacted]" in scrubbed


def test_the_metal_client_factory_registers_the_token() -> None:
    settings = Settings(metal_api_url="http://127.0.0.1:9/metal/v1")
    with logs.request_scope("r1"):
        app_module._default_metal_factory(settings)(SECRET)
        assert SECRET in logs.current_secrets()


def test_gunicorn_access_records_become_fields() -> None:
    atoms = SafeAtoms(
        {"h": "10.0.0.7", "m": "POST", "U": "/machine/sync", "s": "200", "B": 512, "D": 12345}
        | {"a": "Go-http-client/1.1", "{x-request-id}o": "rid-7", "{authorization}i": f"Bearer {SECRET}"}
    )
    record = logging.LogRecord(
        "gunicorn.access", logging.INFO, __file__, 1, '%(h)s "%(m)s %(U)s" %(s)s request_id=%({x-request-id}o)s',
        (atoms,), None,
    )
    assert logs.RedactingFilter().filter(record)
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["message"] == '10.0.0.7 "POST /machine/sync" 200 request_id=rid-7'
    assert (line["method"], line["path"], line["status"], line["request_id"]) == ("POST", "/machine/sync", 200, "rid-7")
    assert line["duration_ms"] == 12.345
    assert SECRET not in json.dumps(line)


def test_log_level_is_respected_and_logging_is_configured_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "warning")
    create_app(Settings())
    create_app(Settings())
    root = logging.getLogger()
    assert root.level == logging.WARNING
    assert sum(isinstance(h.formatter, logs.JsonFormatter) for h in root.handlers) == 1


def test_unknown_log_level_makes_the_server_not_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "chatty")
    response = create_app(Settings()).test_client().get("/readyz")
    assert response.status_code == 503
    assert "LOG_LEVEL='chatty'" in response.json["error"]
    assert logging.getLogger().level == logging.INFO


def test_bad_request_is_logged_as_warning(client: Any, capsys: pytest.CaptureFixture[str]) -> None:
    response = client.post("/test/leaky", json={"bad": True})
    assert response.status_code == 400
    assert response.json == {"error": "spec.class.name is missing"}
    summary = next(line for line in json_lines(capsys.readouterr().err) if line["logger"] == "hooks.access")
    assert (summary["level"], summary["status"], summary["outcome"]) == ("WARNING", 400, "bad_request")


def secret_echo_hook(body: dict[str, Any], ctx: HookContext) -> dict[str, Any]:
    """A careless hook: it logs what it decoded from the request's Secret without registering anything."""
    secret = body["related"]["Secret.v1"]["ns/metal-credentials"]
    token = base64.b64decode(secret["data"]["apiToken"]).decode()
    logging.getLogger("hooks.test").info("using token %s", token)
    raise RuntimeError("boot script was: " + base64.b64decode(secret["data"]["userData"]).decode())


def test_secrets_in_the_request_are_redacted_without_the_hook_registering_them(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(app_module, "_routes", lambda: {"/test/echo": secret_echo_hook})
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "metal-credentials", "namespace": "ns"},
        "data": {
            "apiToken": base64.b64encode(SECRET.encode()).decode(),
            "userData": base64.b64encode(USERDATA.encode()).decode(),
        },
    }
    body = {"object": {}, "related": {"Secret.v1": {"ns/metal-credentials": secret}}}
    response = create_app(Settings()).test_client().post("/test/echo", json=body)
    assert response.status_code == 500
    err = capsys.readouterr().err
    assert SECRET not in err
    assert "bootstrap-secret-4f9a2c" not in err
    assert "using token [redacted]" in err


def test_a_secret_reported_through_hooks_events_is_redacted_for_the_request() -> None:
    """The MCM logic may not import the server; a bootstrap token it reports via hooks.events is never logged."""
    from hooks import events

    token = "abc123.0123456789abcdef"
    scope = logs.begin_request("req-token")
    try:
        events.emit(events.SECRET_SEEN, value=token)
        assert logs.scrub(f"kubeadm join --token {token}") == f"kubeadm join --token {logs.REDACTED}"
        assert "0123456789abcdef" not in logs.scrub("secret half 0123456789abcdef")
    finally:
        logs.end_request(scope)
    assert token not in logs.current_secrets()  # nothing outlives the request
