"""The target kubeconfig's credentials never reach a log line: the server registers the related Secret's values and
the hook's read registers the parsed token and key (hooks/target/node_read.py), so even a short token an echo
prints alone is scrubbed (canary test)."""

from __future__ import annotations

import base64
import json

from hooks.server import logs
from hooks.server.app import _secret_values
from hooks.target.api import TargetUnavailable
from hooks.target.kubeconfig import TARGET_LABEL, TargetConfig
from hooks.target.node_read import read_node

SHORT_TOKEN = "c4n4ry7t0k"  # shorter than redact's word threshold: only explicit registration catches it alone
KEY = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIcanaryKEYmaterialABCDEFGHIJKLMNOP\n-----END EC PRIVATE KEY-----\n"
CERT = "-----BEGIN CERTIFICATE-----\nMIIBcanaryCERTmaterial0123456789abcdef\n-----END CERTIFICATE-----\n"


def body(user: dict[str, str]) -> dict[str, object]:
    text = json.dumps({"clusters": [{"name": "t", "cluster": {"server": "https://t.example"}}],
                       "contexts": [{"name": "c", "context": {"cluster": "t", "user": "u"}}],
                       "current-context": "c", "users": [{"name": "u", "user": user}]})
    secret = {"apiVersion": "v1", "kind": "Secret",
              "metadata": {"name": "target-kubeconfig", "namespace": "ns", "labels": {TARGET_LABEL: "true"}},
              "data": {"kubeconfig": base64.b64encode(text.encode()).decode()}}
    return {"object": {"kind": "Machine", "metadata": {"name": "m1", "namespace": "ns"}},
            "related": {"Secret.v1": {"ns/target-kubeconfig": secret}}}


class Echo:
    """A reader whose error quotes its credentials back, as a chatty proxy might."""

    def __init__(self, config: TargetConfig) -> None:
        self.config = config

    def get_node(self, name: str, *, deadline: float) -> None:
        raise TargetUnavailable(f"proxy said: bad token {self.config.token} / key {self.config.client_key!r}")

    def close(self) -> None:
        pass


def scrubbed(request: dict[str, object], text: str) -> str:
    with logs.request_scope("req-1", "/machine/sync"):
        for value in _secret_values(request):
            logs.register_secret(value)
        read_node(request["related"], "ns", "m1", deadline=1, reader=Echo,  # type: ignore[arg-type]
                  register_secret=logs.register_secret)
        return logs.scrub(text)


def test_a_short_token_printed_alone_is_scrubbed() -> None:
    out = scrubbed(body({"token": SHORT_TOKEN}), f"target said {SHORT_TOKEN} and token: {SHORT_TOKEN}")
    assert SHORT_TOKEN not in out


def test_the_client_key_and_certificate_are_scrubbed_in_every_form() -> None:
    request = body({"client-certificate-data": base64.b64encode(CERT.encode()).decode(),
                    "client-key-data": base64.b64encode(KEY.encode()).decode()})
    text = f"{KEY} | {CERT} | {base64.b64encode(KEY.encode()).decode()} | {KEY!r}"
    out = scrubbed(request, text)
    assert "canaryKEY" not in out and "canaryCERT" not in out


def test_the_server_alone_registers_the_parsed_credentials_of_a_target_secret() -> None:
    request = body({"token": SHORT_TOKEN})
    with logs.request_scope("req-3", "/machine/sync"):
        for value in _secret_values(request):
            logs.register_secret(value)
        assert SHORT_TOKEN not in logs.scrub(f"echo: {SHORT_TOKEN}")


def test_the_read_message_an_echo_produces_is_clean_once_scrubbed() -> None:
    request = body({"token": SHORT_TOKEN})
    with logs.request_scope("req-2", "/machine/sync"):
        read = read_node(request["related"], "ns", "m1", deadline=1, reader=Echo,  # type: ignore[arg-type]
                         register_secret=logs.register_secret)
        assert read is not None and not read.reachable
        assert SHORT_TOKEN not in logs.scrub(read.message)
