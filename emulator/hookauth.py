"""Webhook credentials as Metacontroller v4.17.2 resolves them: once, when the controller is created.

Sources: pkg/hooks/endpoint_config.go (ResolveEndpointConfig, matchEndpointConfig), pkg/hooks/webhook.go
(webhookURL), pkg/hooks/auth.go and cabundle.go. Why it matters: the hooks' own auth check must pass against the
header Metacontroller really sends, and a misconfigured Secret must show up the way it does in a cluster: the
controller is not created (a "Cannot create new controller" event, retried with backoff), rather than each sync
failing. The emulator talks plain HTTP, so a CA bundle or client certificate is only checked for presence.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

Obj = dict[str, Any]
# (kind, namespace, name) -> the object, or None when it does not exist.
Reader = Callable[[str, str, str], Obj | None]


class ResolveError(Exception):
    """The controller can't be created: its hook configuration or a referenced Secret is wrong or missing."""


def webhook_url(webhook: Obj) -> str:
    """webhookURL: the full `url`, else `protocol://name.namespace:port/path` (port 80, protocol http default)."""
    if webhook.get("url"):
        return str(webhook["url"])
    service, path = webhook.get("service"), webhook.get("path")
    if not service or path is None:
        raise ResolveError("invalid webhook config: must specify either a full 'url', or both 'service' and 'path'")
    if not service.get("name") or not service.get("namespace"):
        raise ResolveError("invalid webhook config: 'service' must specify both 'name' and 'namespace'")
    port = service.get("port") if service.get("port") is not None else 80
    protocol = service.get("protocol") or "http"
    return f"{protocol}://{service['name']}.{service['namespace']}:{port}{path}"


def match_endpoint_config(url: str, configs: list[Obj]) -> Obj | None:
    """matchEndpointConfig: the first entry whose host equals the URL's host (case-insensitive), with or
    without the scheme's default port; a bare host matches an explicit :80 (http) or :443 (https) only."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    host, hostname = parts.netloc.rpartition("@")[2], parts.hostname or ""
    defaults = {"https": 443, "http": 80}
    canonical = host if port is not None or parts.scheme not in defaults else f"{hostname}:{defaults[parts.scheme]}"
    for config in configs:
        wanted = str(config.get("host") or "").lower()
        if wanted in (host.lower(), canonical.lower()):
            return config
        if port is not None and wanted == hostname.lower() and defaults.get(parts.scheme) == port:
            return config
    return None


def resolve_auth_header(webhook: Obj, endpoint_configs: list[Obj], read: Reader) -> str:
    """ResolveEndpointConfig's Authorization header ("" for none); ResolveError when the controller can't start."""
    own = [webhook.get(k) for k in ("caBundle", "clientTLS", "authorization", "basicAuth")]
    if any(v is not None for v in own):
        return _resolve_fields(own[0], own[1], own[2], own[3], read)
    if not endpoint_configs:
        return ""
    try:
        url = webhook_url(webhook)
    except ResolveError:
        return ""  # reported by the hook itself, not here
    config = match_endpoint_config(url, endpoint_configs)
    if config is None:
        return ""
    return _resolve_fields(config.get("caBundle"), config.get("clientTLS"), config.get("authorization"),
                           config.get("basicAuth"), read)


def _resolve_fields(ca_bundle: Obj | None, client_tls: Obj | None, authorization: Obj | None, basic: Obj | None,
                    read: Reader) -> str:
    if authorization is not None and basic is not None:
        raise ResolveError("authorization and basicAuth are mutually exclusive")
    if ca_bundle is not None:
        _check_ca_bundle(ca_bundle, read)
    if client_tls is not None:
        ref = client_tls.get("secretRef") or {}
        data = _secret_data("clientTLS", ref, read)
        for key in (client_tls.get("certKey") or "tls.crt", client_tls.get("privateKeyKey") or "tls.key"):
            _value("clientTLS", ref, data, key)
    if authorization is not None:
        return _authorization(authorization, read)
    if basic is not None:
        return _basic(basic, read)
    return ""


def _authorization(spec: Obj, read: Reader) -> str:
    kind = str(spec.get("type") or "").strip()
    if kind.lower() == "basic":
        raise ResolveError(f"can't resolve authorization: authorization type {spec.get('type')!r} is not "
                           "supported; use the basicAuth field instead")
    ref = spec.get("secretRef") or {}
    data = _secret_data("authorization", ref, read)
    value = _value("authorization", ref, data, ref.get("key") or "")
    return f"{kind or 'Bearer'} {value.strip()}"


def _basic(spec: Obj, read: Reader) -> str:
    ref = spec.get("secretRef") or {}
    data = _secret_data("basicAuth", ref, read)
    user = _value("basicAuth", ref, data, spec.get("usernameKey") or "username")
    password = _value("basicAuth", ref, data, spec.get("passwordKey") or "password")
    if ":" in user:
        raise ResolveError("can't resolve basicAuth: basicAuth username must not contain ':'")
    return "Basic " + base64.b64encode(f"{user.strip()}:{password.strip()}".encode()).decode()


def _check_ca_bundle(spec: Obj, read: Reader) -> None:
    sources = [k for k in ("inline", "secretRef", "configMapRef") if spec.get(k) is not None]
    if not sources:
        raise ResolveError("can't resolve caBundle: caBundle is set but none of inline, secretRef, or configMapRef "
                           "is specified")
    if len(sources) > 1:
        raise ResolveError("can't resolve caBundle: caBundle has more than one source set: exactly one of inline, "
                           "secretRef, or configMapRef must be specified")
    ref = spec.get(sources[0])
    if sources[0] == "configMapRef" and isinstance(ref, dict):
        if read("ConfigMap", ref.get("namespace", ""), ref.get("name", "")) is None:
            raise ResolveError(f"can't resolve caBundle: configmap {ref.get('namespace')}/{ref.get('name')} "
                               "not found")
    elif sources[0] == "secretRef" and isinstance(ref, dict):
        _secret_data("caBundle", ref, read)


def _secret_data(what: str, ref: Obj, read: Reader) -> Obj:
    secret = read("Secret", ref.get("namespace", ""), ref.get("name", ""))
    if secret is None:
        raise ResolveError(f"can't resolve {what}: can't get {what} secret {ref.get('namespace')}/"
                           f"{ref.get('name')}: secrets \"{ref.get('name')}\" not found")
    return secret.get("data") or {}


def _value(what: str, ref: Obj, data: Obj, key: str) -> str:
    if key not in data:
        raise ResolveError(f"can't resolve {what}: {what} secret {ref.get('namespace')}/{ref.get('name')} does not "
                           f"contain key {key!r}")
    return base64.b64decode(data[key]).decode()


def authorization_refs(controllers: list[Obj]) -> list[Obj]:
    """Every `authorization.secretRef` the controllers name, in endpointConfigs and on webhooks, without repeats."""
    refs: list[Obj] = []
    for controller in controllers:
        spec = controller.get("spec") or {}
        holders = list(spec.get("endpointConfigs") or [])
        holders += [(hook or {}).get("webhook") or {} for hook in (spec.get("hooks") or {}).values()]
        for holder in holders:
            ref = (holder.get("authorization") or {}).get("secretRef")
            if isinstance(ref, dict) and ref not in refs:
                refs.append(ref)
    return refs


def auth_secrets(controllers: list[Obj], token: str) -> list[Obj]:
    """The Secrets an installation creates before applying the controllers (docs/operations.md), holding `token`
    under each referenced key: what a demo, chaos run or e2e test puts in the emulator's store."""
    secrets: dict[tuple[str, str], Obj] = {}
    encoded = base64.b64encode(token.encode()).decode()
    for ref in authorization_refs(controllers):
        key = (str(ref.get("namespace") or ""), str(ref.get("name") or ""))
        secret = secrets.setdefault(key, {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                                          "metadata": {"name": key[1], "namespace": key[0]}, "data": {}})
        secret["data"][str(ref.get("key") or "token")] = encoded
    return list(secrets.values())


def seed_auth_secrets(store: Any, controllers: list[Obj], token: str) -> None:
    """Create (or replace) the controllers' authorization Secrets in an emulator Store, before the controllers
    start: Metacontroller refuses to create a controller whose Secret is missing."""
    for secret in auth_secrets(controllers, token):
        namespace = secret["metadata"]["namespace"]
        store.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        store.apply(secret)
