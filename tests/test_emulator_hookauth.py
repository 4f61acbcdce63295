"""Webhook credentials are resolved as Metacontroller v4.17.2 does: exact host rules, once at controller creation.

A hook that checks its Authorization header must see exactly the header Metacontroller would send, and a missing
Secret must look as it does in a cluster: no controller (and no hook call) until a retry finds the Secret.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from emulator.hookauth import ResolveError, match_endpoint_config, resolve_auth_header, webhook_url
from emulator.store import Store
from tests.emulator_support import HookServer, decorator, running, widget, widget_store

Obj = dict[str, Any]


@pytest.mark.parametrize(("url", "host", "matches"), [
    ("http://hooks.ns:80/sync", "hooks.ns:80", True),
    ("http://hooks.ns:80/sync", "hooks.ns", True),  # bare host matches the scheme's default port
    ("http://HOOKS.ns:80/sync", "hooks.NS", True),  # case-insensitive
    ("http://hooks.ns/sync", "hooks.ns:80", True),  # no port in the URL: the default port is assumed
    ("http://hooks.ns/sync", "hooks.ns", True),
    ("http://hooks.ns:8080/sync", "hooks.ns", False),  # another port is another endpoint
    ("http://hooks.ns:8080/sync", "hooks.ns:8080", True),
    ("https://hooks.ns/sync", "hooks.ns:443", True),
    ("https://hooks.ns:443/sync", "hooks.ns", True),
    ("http://hooks.ns:443/sync", "hooks.ns", False),  # :443 is the default only for https
    ("http://hooks.ns:80/sync", "hooks", False),  # no suffix or prefix matching
    ("http://hooks.ns:80/sync", "hooks.ns.svc", False),
])
def test_endpoint_config_host_matching(url: str, host: str, matches: bool) -> None:
    config = {"host": host}
    assert (match_endpoint_config(url, [config]) is config) is matches


def test_service_webhooks_are_matched_by_their_cluster_dns_url() -> None:
    assert webhook_url({"service": {"name": "h", "namespace": "ns"}, "path": "/s"}) == "http://h.ns:80/s"
    assert webhook_url({"service": {"name": "h", "namespace": "ns", "port": 8443, "protocol": "https"},
                        "path": "/s"}) == "https://h.ns:8443/s"
    with pytest.raises(ResolveError, match="both 'service' and 'path'"):
        webhook_url({"service": {"name": "h", "namespace": "ns"}})


def secrets(**data: dict[str, str]) -> Any:
    stored = {name: {"data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}}
              for name, values in data.items()}
    return lambda kind, namespace, name: stored.get(name) if kind == "Secret" and namespace == "ns" else None


def test_the_webhooks_own_credentials_win_over_endpoint_configs() -> None:
    read = secrets(own={"t": " tok "}, shared={"username": "u", "password": "p"})
    webhook = {"url": "http://hooks.ns/sync", "authorization": {"secretRef": {"name": "own", "namespace": "ns",
                                                                              "key": "t"}}}
    configs = [{"host": "hooks.ns", "basicAuth": {"secretRef": {"name": "shared", "namespace": "ns"}}}]
    assert resolve_auth_header(webhook, configs, read) == "Bearer tok"
    del webhook["authorization"]
    assert resolve_auth_header(webhook, configs, read) == "Basic " + base64.b64encode(b"u:p").decode()
    assert resolve_auth_header({**webhook, "url": "http://other.ns/sync"}, configs, read) == ""


@pytest.mark.parametrize(("spec", "message"), [
    ({"authorization": {"type": "basic", "secretRef": {"name": "s", "namespace": "ns", "key": "k"}}},
     "not supported; use the basicAuth field"),
    ({"authorization": {"secretRef": {"name": "missing", "namespace": "ns", "key": "k"}}},
     'can\'t get authorization secret ns/missing: secrets "missing" not found'),
    ({"authorization": {"secretRef": {"name": "s", "namespace": "ns", "key": "nope"}}}, "does not contain key 'nope'"),
    ({"basicAuth": {"secretRef": {"name": "colon", "namespace": "ns"}}}, "username must not contain ':'"),
    ({"basicAuth": {"secretRef": {"name": "s", "namespace": "ns"}},
      "authorization": {"secretRef": {"name": "s", "namespace": "ns", "key": "k"}}}, "mutually exclusive"),
    ({"caBundle": {}}, "none of inline, secretRef, or configMapRef"),
])
def test_resolution_errors(spec: Obj, message: str) -> None:
    read = secrets(s={"k": "v"}, colon={"username": "a:b", "password": "p"})
    with pytest.raises(ResolveError, match=message.replace("(", r"\(")):
        resolve_auth_header({"url": "http://h/x", **spec}, [], read)


@pytest.fixture
def store() -> Store:
    return widget_store()


@pytest.mark.slow  # waits for two creation retries
def test_a_missing_secret_means_no_controller_until_a_retry_finds_it(store: Store, server: HookServer) -> None:
    server.handlers["/sync"] = lambda body: {"labels": {"synced": "yes"}}
    dc = decorator("dc", server.url)
    dc["spec"]["hooks"]["sync"]["webhook"]["authorization"] = {
        "secretRef": {"name": "hook-auth", "namespace": "default", "key": "token"}}
    store.create(widget("w1"))
    with running(store, [dc], backoff_base=0.05, backoff_cap=0.2) as mc:
        mc.wait_for(lambda s: len([e for e in mc.events if e["outcome"] == "create-error"]) >= 2,
                    message="controller creation retried")
        error = next(e for e in mc.events if e["outcome"] == "create-error")["error"]
        assert error.startswith("Cannot create new controller: can't resolve endpoint config for sync hook: ")
        assert "hook-auth" in error
        assert server.calls("/sync") == []
        store.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hook-auth", "namespace": "default"},
                      "stringData": {"token": "s3cr3t\n"}})
        mc.wait_for(lambda s: s.get("test.example.com/v1", "Widget", "w1", "default")["metadata"]["labels"].get(
            "synced"), message="controller created once the Secret exists")
        assert {h["Authorization"] for h in server.headers("/sync")} == {"Bearer s3cr3t"}
