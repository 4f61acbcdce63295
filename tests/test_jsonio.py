"""The hook server's JSON provider (orjson underneath) answers exactly as Flask's default provider would."""

from __future__ import annotations

import json

import pytest
from flask import Flask
from flask.json.provider import DefaultJSONProvider

from hooks.config import Settings
from hooks.server import jsonio
from hooks.server.app import create_app

pytestmark = pytest.mark.skipif(jsonio.orjson is None, reason="orjson not installed")


@pytest.fixture
def providers() -> tuple[jsonio.FastJSONProvider, DefaultJSONProvider]:
    app = Flask("t")
    return jsonio.FastJSONProvider(app), DefaultJSONProvider(app)


@pytest.mark.parametrize("text", [
    '{"b": 1, "a": [1.5, null, true, "x\\u00e9"]}',
    '{"n": NaN}',                       # not JSON, but Python's json accepts it: so must we
    '{"s": "\\ud800"}',                 # a lone surrogate: orjson refuses, the fallback does not
    '{"int64": -9223372036854775808, "u": 18446744073709551615}',
])
def test_decodes_like_the_standard_library(providers, text: str) -> None:
    fast, default = providers
    assert repr(fast.loads(text)) == repr(default.loads(text))
    assert repr(fast.loads(text.encode())) == repr(default.loads(text.encode()))


def test_malformed_input_fails_the_same_way(providers) -> None:
    fast, _ = providers
    with pytest.raises(ValueError):
        fast.loads('{"a": ')


@pytest.mark.parametrize("value", [
    {"b": 1, "a": {"z": [1, 2.5, None], "y": "é"}},
    {"big": 2**70},
    {1: "non-string key"},
])
def test_encodes_to_the_same_json(providers, value) -> None:
    fast, default = providers
    assert json.loads(fast.dumps(value)) == json.loads(default.dumps(value))
    assert list(json.loads(fast.dumps(value))) == sorted(json.loads(default.dumps(value)))  # keys sorted


def test_the_hook_server_uses_it_and_answers_the_same_bytes_twice() -> None:
    app = create_app(Settings(), metal=lambda token: None)
    assert isinstance(app.json, jsonio.FastJSONProvider)
    client = app.test_client()
    body = {"parent": {"metadata": {"name": "x"}}}  # not a Machine: a 400 with a JSON error, either way
    first = client.post("/machine/sync", json=body)
    second = client.post("/machine/sync", json=body)
    assert first.status_code == 400 and first.get_data() == second.get_data()
    assert "error" in first.get_json()
