"""Target kubeconfigs: what stateless hooks can use works, what they cannot is refused with the reason."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from hooks.target.kubeconfig import (
    TARGET_LABEL,
    TargetConfigError,
    _BlockYaml,
    customize_rule,
    from_related,
    parse,
)

PEM_CA = b"-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
PEM_KEY = b"-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIcanarykeymaterial0123456789\n-----END EC PRIVATE KEY-----\n"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.canary-token-value-0123456789"


def b64(blob: bytes) -> str:
    return base64.b64encode(blob).decode()


KIND_STYLE = f"""apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: {b64(PEM_CA)}
    server: https://shoot.example.com:6443
  name: shoot
contexts:
- context:
    cluster: shoot
    user: hooks
  name: shoot
current-context: shoot
kind: Config
preferences: {{}}
users:
- name: hooks
  user:
    token: {TOKEN}
"""


def kubeconfig(user: dict[str, Any], cluster: dict[str, Any] | None = None) -> str:
    return json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "t", "cluster": cluster or {"server": "https://t.example:443",
                                                         "certificate-authority-data": b64(PEM_CA)}}],
        "contexts": [{"name": "c", "context": {"cluster": "t", "user": "u"}}],
        "users": [{"name": "u", "user": user}],
    })


def secret(name: str, namespace: str, text: str, *, labelled: bool = True) -> dict[str, Any]:
    labels = {TARGET_LABEL: "true"} if labelled else {}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace,
                                                              "labels": labels},
            "data": {"kubeconfig": b64(text.encode())}}


def test_a_kubectl_style_yaml_kubeconfig_with_a_token_works() -> None:
    config = parse(KIND_STYLE)
    assert config.server == "https://shoot.example.com:6443"
    assert config.ca_data == PEM_CA
    assert config.token == TOKEN
    assert TOKEN not in repr(config)
    assert TOKEN in config.secrets()


def test_a_client_certificate_kubeconfig_works_and_keeps_the_key_out_of_repr() -> None:
    config = parse(kubeconfig({"client-certificate-data": b64(PEM_CA), "client-key-data": b64(PEM_KEY)}))
    assert config.client_key == PEM_KEY and config.token is None
    assert "canarykey" not in repr(config)
    assert PEM_KEY.decode() in config.secrets() and b64(PEM_KEY) in config.secrets()


@pytest.mark.parametrize(("user", "words"), [
    ({"exec": {"command": "gke-gcloud-auth-plugin", "apiVersion": "client.authentication.k8s.io/v1"}},
     ["exec credential plugin", "cannot run plugins"]),
    ({"auth-provider": {"name": "oidc"}}, ["auth-provider", "cannot run plugins"]),
    ({"tokenFile": "/var/run/token"}, ["tokenFile names a file", "read files"]),
    ({"client-certificate": "/x.crt", "client-key": "/x.key"}, ["names a file", "client-certificate-data"]),
    ({"username": "admin", "password": "pw"}, ["basic authentication"]),
    ({}, ["neither a token nor"]),
    ({"client-certificate-data": b64(PEM_CA)}, ["must be given together"]),
])
def test_what_stateless_hooks_cannot_use_is_refused_with_the_reason(user: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(TargetConfigError) as caught:
        parse(kubeconfig(user))
    for word in words:
        assert word in str(caught.value)


def test_an_exec_plugin_in_yaml_is_named_even_in_yaml_this_reader_does_not_parse() -> None:
    text = KIND_STYLE.replace(f"    token: {TOKEN}\n", "    exec:\n      args: [\"--x\"]\n      command: aws\n")
    with pytest.raises(TargetConfigError, match="exec credential plugin"):
        parse(text)


@pytest.mark.parametrize(("cluster", "words"), [
    ({"server": "https://t", "certificate-authority": "/ca.crt"}, ["certificate-authority names a file"]),
    ({"server": "https://t", "insecure-skip-tls-verify": True}, ["insecure-skip-tls-verify"]),
    ({"server": "http://api.example.com"}, ["plain http"]),
    ({"server": "ftp://x"}, ["not an https:// URL"]),
    ({"server": "https://t", "proxy-url": "http://proxy:3128"}, ["proxy-url"]),
])
def test_unsafe_or_file_based_cluster_settings_are_refused(cluster: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(TargetConfigError) as caught:
        parse(kubeconfig({"token": TOKEN}, cluster))
    for word in words:
        assert word in str(caught.value)


def test_plain_http_is_accepted_on_loopback_only_for_emulators() -> None:
    assert parse(kubeconfig({"token": TOKEN}, {"server": "http://127.0.0.1:8001"})).server == "http://127.0.0.1:8001"


def test_no_error_message_carries_the_token() -> None:
    with pytest.raises(TargetConfigError) as caught:
        parse(kubeconfig({"token": TOKEN, "tokenFile": "/t"}))
    assert TOKEN[:12] not in str(caught.value)


def test_unsupported_yaml_is_refused_with_the_json_alternative() -> None:
    with pytest.raises(TargetConfigError, match="-o json"):
        parse(KIND_STYLE.replace("kind: Config", "kind: &anchor Config"))


def test_the_secret_comes_from_the_machines_namespace_only() -> None:
    related = {"Secret.v1": {"other/k": secret("k", "other", KIND_STYLE),
                             "ns/plain": secret("plain", "ns", KIND_STYLE, labelled=False)}}
    assert from_related(related, "ns") is None
    related["Secret.v1"]["ns/target"] = secret("target", "ns", KIND_STYLE)
    config = from_related(related, "ns")
    assert config is not None and config.source == "ns/target"


def test_two_labelled_secrets_in_a_namespace_are_ambiguous() -> None:
    related = {"Secret.v1": {f"ns/{n}": secret(n, "ns", KIND_STYLE) for n in ("a", "b")}}
    with pytest.raises(TargetConfigError, match="more than one"):
        from_related(related, "ns")


def test_the_customize_rule_selects_labelled_secrets_of_the_namespace() -> None:
    rule = customize_rule("ns")
    assert rule["namespace"] == "ns" and rule["labelSelector"] == {"matchLabels": {TARGET_LABEL: "true"}}


_plain = st.from_regex(r"[A-Za-z][A-Za-z0-9.\-_/]{0,20}", fullmatch=True).filter(
    lambda s: s not in ("true", "false", "null", "True", "False") and not s.replace(".", "").isdigit()
    and s[:1] != "e")
_printable = st.characters(min_codepoint=32, max_codepoint=126, exclude_characters="\\\"'")
_scalar = st.one_of(_plain, st.text(_printable, max_size=20))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(_plain, _scalar, _scalar), min_size=1, max_size=4))
def test_the_block_yaml_reader_agrees_with_pyyaml_on_kubeconfig_shapes(entries: list[tuple[str, str, str]]) -> None:
    doc = {"clusters": [{"name": n, "cluster": {"server": s, "certificate-authority-data": c}}
                        for n, s, c in entries],
           "preferences": {}, "current-context": entries[0][0]}
    for style in ({"default_flow_style": False}, {"default_flow_style": False, "indent": 4}):
        text = yaml.safe_dump(doc, **style)  # type: ignore[arg-type]
        assert _BlockYaml(text).document() == yaml.safe_load(text)
