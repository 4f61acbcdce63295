"""The API token and the userData never leave the Secret and the device: not in a log line, an answer, a status,
an exception message or a metric.

A Machine goes through the whole flow (sync → Running → finalize → finalized) through the Flask app, with the real
Metal client against the simulator, carrying a canary token and canary userData. Every log record (captured raw,
before any redaction filter), every answer, every status Metacontroller would store, every exception the client
raised and the /metrics page are searched for the canaries. The device in the simulator does carry the userData:
that is where it belongs, and the only place it may appear.

The error paths put a "chatty" API in front of the simulator that quotes secrets back: a 401 and a 403 whose
bodies echo the token, a 422 whose body echoes the userData (raw and JSON-escaped), and a proxy's HTML 500 page that
echoes the request headers and body.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from emulator.metal import SimResponse, SimulatorServer
from hooks.config import Settings
from hooks.server import app as hook_app
from tests.conftest import TEST_PROJECT, MetalSim
from tests.machine_support import (
    DECORATOR_KEYS,
    NAME,
    Clock,
    apply,
    decorated,
    finalize_request,
    node_of,
    provider_spec,
    set_secret_value,
    sync_request,
    with_node,
)

CANARY_TOKEN = "canary-token-7f1e2d"
CANARY_USERDATA = "#!/bin/sh\necho canary-userdata-55aa"
CANARIES = (
    CANARY_TOKEN,
    "canary-userdata-55aa",
    base64.b64encode(CANARY_TOKEN.encode()).decode(),
    base64.b64encode(CANARY_USERDATA.encode()).decode(),
)


class RawRecords(logging.Handler):
    """Keeps every record's text as it was emitted, before another handler's filter could scrub it."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string still has its parts searched
            message = f"{record.msg} {record.args}"
        extras = {k: v for k, v in vars(record).items() if k not in ("msg", "args", "exc_info")}
        exc = logging.Formatter().formatException(record.exc_info) if record.exc_info else ""
        self.texts.append(f"{message} {record.msg} {record.args!r} {extras!r} {exc}")


@pytest.fixture
def raw_records(caplog: pytest.LogCaptureFixture) -> Iterator[RawRecords]:
    handler = RawRecords()
    root = logging.getLogger()
    root.handlers.insert(0, handler)  # first, so it sees each record before any redacting filter touches it
    try:
        yield handler
    finally:
        root.removeHandler(handler)


class Recorder:
    """Everything the flow produced that a user, a log collector or a scraper could see."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.errors: list[str] = []

    def metal(self, settings: Settings) -> Callable[[str], Any]:
        """The app's own client factory (token registration, metrics observer), with raised errors recorded."""
        build = hook_app._default_metal_factory(settings)
        errors = self.errors

        class Recording:
            def __init__(self, client: Any) -> None:
                self._client = client

            def __getattr__(self, name: str) -> Any:
                attr = getattr(self._client, name)
                if not callable(attr):
                    return attr

                def call(*args: Any, **kwargs: Any) -> Any:
                    try:
                        return attr(*args, **kwargs)
                    except Exception as exc:
                        errors.append(f"{exc} {exc!r} {getattr(exc, 'messages', '')} {exc.args!r} {exc.__cause__}")
                        raise

                return call

        return lambda token: Recording(build(token))


def _request(metal_sim: MetalSim) -> dict[str, Any]:
    body = sync_request()
    provider_spec(body)["projectID"] = metal_sim.project
    provider_spec(body)["metro"] = "da"
    set_secret_value(body, "apiToken", CANARY_TOKEN)
    set_secret_value(body, "userData", CANARY_USERDATA)
    return body


def _post(client: Any, recorder: Recorder, route: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(route, json=body)
    recorder.texts.append(response.get_data(as_text=True))
    recorder.texts.append(json.dumps(dict(response.headers)))
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    answer = response.get_json()
    assert set(answer) <= DECORATOR_KEYS
    if "status" in answer:
        recorder.texts.append(json.dumps(answer["status"]))  # what Metacontroller stores on the Machine
    return answer


def _app(url: str, recorder: Recorder) -> Any:
    settings = Settings(metal_api_url=url, retry_budget=0.5)
    app = hook_app.create_app(settings, metal=recorder.metal(settings), clock=Clock())
    logging.getLogger().setLevel(logging.DEBUG)  # create_app set LOG_LEVEL's level; we want every record
    return app.test_client()


def _assert_no_canary(recorder: Recorder, raw_records: RawRecords, caplog: pytest.LogCaptureFixture,
                      capsys: pytest.CaptureFixture[str], client: Any) -> None:
    metrics = client.get("/metrics")
    scraped = metrics.get_data(as_text=True) if metrics.status_code == 200 else ""
    captured = capsys.readouterr()
    places = {
        "raw log records": "\n".join(raw_records.texts),
        "caplog": caplog.text,
        "stderr/stdout": captured.err + captured.out,
        "answers and statuses": "\n".join(recorder.texts),
        "exception messages": "\n".join(recorder.errors),
        "/metrics": scraped,
    }
    assert raw_records.texts, "nothing was logged: the capture is not working"
    for where, text in places.items():
        for canary in CANARIES:
            assert canary not in text, f"{canary!r} leaked into {where}"


def test_the_whole_flow_leaks_no_secret(metal_sim_factory: Callable[..., MetalSim], raw_records: RawRecords,
                                        caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    metal_sim = metal_sim_factory(tokens={CANARY_TOKEN: [TEST_PROJECT]})
    recorder = Recorder()
    client = _app(metal_sim.url, recorder)
    body = _request(metal_sim)
    body = apply(body, _post(client, recorder, "/machine/sync", body))
    device = {"id": body["object"]["metadata"]["annotations"]["metal-machine-hooks/device-id"]}
    answer = _post(client, recorder, "/machine/sync", with_node(body, node_of(device)))
    assert answer["status"]["currentStatus"]["phase"] == "Running"
    body = with_node(finalize_request(apply(body, answer)), None)  # the Node is gone: nothing to drain
    for _ in range(4):
        answer = _post(client, recorder, "/machine/finalize", body)
        if answer["finalized"]:
            break
        body = apply(body, answer)
    assert answer["finalized"] is True
    (device,) = metal_sim.sim.devices(include_deleted=True)
    assert device["userdata"] == CANARY_USERDATA  # the one place the userData belongs
    _assert_no_canary(recorder, raw_records, caplog, capsys, client)


def _chatty(metal_sim: MetalSim, how: str) -> Callable[[str, str, Mapping[str, str], bytes], SimResponse]:
    """An API that answers with an error quoting what it was sent; everything else goes to the simulator."""
    api_json = {"Content-Type": "application/json", "X-Request-Id": "req-chatty"}

    def handle(method: str, path: str, headers: Mapping[str, str], body: bytes) -> SimResponse:
        token = headers.get("x-auth-token", "")
        sent = json.loads(body) if body else {}
        userdata = sent.get("userdata", "") if isinstance(sent, dict) else ""
        if how == "401":
            return SimResponse(401, json.dumps({"error": f"token {token} is not valid"}).encode(), api_json)
        if how == "403" and method == "GET":
            return SimResponse(403, json.dumps({"errors": [f"{token} may not read {path}"]}).encode(), api_json)
        if how == "422" and method == "POST":
            quoted = {"errors": [f"userdata is invalid: {userdata}", f"raw: {userdata!r}"], "request": sent}
            return SimResponse(422, json.dumps(quoted).encode(), api_json)
        if how == "500-html" and method == "POST":
            # No <title>: the client's excerpt of the page is its text, so the quoted secrets are in it.
            page = f"<html><body><pre>Error 500 for token={token}\n{body.decode()}</pre></body></html>"
            return SimResponse(500, page.encode(), {"Content-Type": "text/html"})
        return metal_sim.sim.handle(method, path, headers, body)

    return handle


@pytest.mark.parametrize("how", ["401", "403", "422", "500-html"])
def test_error_answers_that_quote_secrets_leak_nothing(
    metal_sim_factory: Callable[..., MetalSim], raw_records: RawRecords, caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str], how: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    metal_sim = metal_sim_factory(tokens={CANARY_TOKEN: [TEST_PROJECT]})
    chatty = SimulatorServer(_chatty(metal_sim, how)).start()
    try:
        recorder = Recorder()
        client = _app(chatty.url, recorder)
        body = _request(metal_sim)
        answer = _post(client, recorder, "/machine/sync", body)
        assert answer["status"]["lastOperation"]["state"] == "Failed"
        assert recorder.errors, "the chatty API's error never reached the client"
        body = with_node(finalize_request(apply(body, answer)), None)
        annotations = decorated(body)["metadata"]["annotations"]
        annotations["metal-machine-hooks/device-id"] = "9c1d2e3f-4a5b-4c6d-8e7f-0a1b2c3d4e5f"  # a GET goes out too
        for _ in range(2):  # the drain outcome, then the device step against the same chatty API
            body = apply(body, _post(client, recorder, "/machine/finalize", body))
    finally:
        chatty.shutdown()
    assert [d for d in metal_sim.sim.devices() if d["hostname"] == NAME] == []
    _assert_no_canary(recorder, raw_records, caplog, capsys, client)


# -- redact, then cut: a secret straddling the cut, or echoed with its whitespace changed ------------------------

FRAGMENT = 8  # no run this long of the token or of the userData canary may survive anywhere (hooks/redact.py)


def _fragments(secret: str) -> set[str]:
    return {secret[i:i + FRAGMENT] for i in range(len(secret) - FRAGMENT + 1)}


def _straddling(metal_sim: MetalSim, how: str) -> Callable[[str, str, Mapping[str, str], bytes], SimResponse]:
    """An API whose error texts put the token or the userData right across the client's cut (300 characters per
    message, 120 of an HTML page), or echo the userData with its spaces collapsed."""
    api_json = {"Content-Type": "application/json", "X-Request-Id": "req-straddle"}

    def handle(method: str, path: str, headers: Mapping[str, str], body: bytes) -> SimResponse:
        token = headers.get("x-auth-token", "")
        sent = json.loads(body) if body else {}
        userdata = sent.get("userdata", "") if isinstance(sent, dict) else ""
        if method != "POST":
            return metal_sim.sim.handle(method, path, headers, body)
        if how == "token-at-cut":
            text = "x" * 285 + token + " was refused"
            return SimResponse(422, json.dumps({"errors": [text]}).encode(), api_json)
        if how == "userdata-collapsed":
            echoed = " ".join(userdata.split())
            text = "y" * 250 + " userdata " + echoed
            return SimResponse(422, json.dumps({"errors": [text, "z" * 280 + userdata]}).encode(), api_json)
        if how == "html-at-cut":
            page = ("<html><body><p>" + "w" * 100 + f"</p><p>{token}</p><p>{' '.join(userdata.split())}"
                    "</p></body></html>")
            return SimResponse(502, page.encode(), {"Content-Type": "text/html"})
        return metal_sim.sim.handle(method, path, headers, body)

    return handle


@pytest.mark.parametrize("how", ["token-at-cut", "userdata-collapsed", "html-at-cut"])
def test_no_fragment_of_a_secret_survives_a_cut(
    metal_sim_factory: Callable[..., MetalSim], raw_records: RawRecords, caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str], how: str,
) -> None:
    import secrets as random_secrets

    caplog.set_level(logging.DEBUG)
    token = "tok" + random_secrets.token_hex(16)
    canary = "cnry" + random_secrets.token_hex(12)
    userdata = f"#!/bin/sh\necho  {canary}  >  /tmp/canary   # doubled  spaces"
    metal_sim = metal_sim_factory(tokens={token: [TEST_PROJECT]})
    api = SimulatorServer(_straddling(metal_sim, how)).start()
    try:
        recorder = Recorder()
        client = _app(api.url, recorder)
        body = _request(metal_sim)
        set_secret_value(body, "apiToken", token)
        set_secret_value(body, "userData", userdata)
        answer = _post(client, recorder, "/machine/sync", body)
        assert answer["status"]["lastOperation"]["state"] == "Failed"
        assert recorder.errors, "the API's error never reached the client"
    finally:
        api.shutdown()
    metrics = client.get("/metrics").get_data(as_text=True)
    captured = capsys.readouterr()
    places = {
        "raw log records": "\n".join(raw_records.texts),
        "caplog": caplog.text,
        "stderr/stdout": captured.err + captured.out,
        "answers and statuses": "\n".join(recorder.texts),
        "exception messages": "\n".join(recorder.errors),
        "/metrics": metrics,
    }
    assert "redacted" in "\n".join(recorder.texts), "the secret never reached the answer: the test proves nothing"
    for where, text in places.items():
        for fragment in _fragments(token) | _fragments(canary):
            assert fragment not in text, f"{fragment!r} of a secret leaked into {where}"
