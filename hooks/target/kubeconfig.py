"""A target cluster's kubeconfig, read from a labelled Secret in the Machine's namespace (issue 17).

Why here and this strict: the hooks are stateless web handlers. They cannot run an exec credential plugin or an
auth-provider, and must not read files named by a user (`tokenFile`, `certificate-authority`, `client-key`): a
kubeconfig that needs any of those is refused with a message that says why. A static bearer token or an inline
client certificate works. The runtime image has no YAML library, so this reads JSON and the plain block-YAML that
`kubectl config view --raw --minify --flatten` writes (mappings, sequences, plain and quoted scalars, `{}`/`[]`);
anything else is refused with the JSON alternative named.

API:

    config = from_related(related, namespace)   # None: no Secret, the target is the control cluster
    config = parse(text)                        # TargetConfig: server, ca_data, token, client_cert/key
    config.secrets()                            # strings to register for redaction (never logged)
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from hooks import objects

TARGET_LABEL = "metal-machine-hooks/target-kubeconfig"
TARGET_LABEL_VALUE = "true"
KUBECONFIG_KEY = "kubeconfig"
SECRET_KEY = "Secret.v1"  # Metacontroller's related key for core Secrets

STATELESS = "the hooks are stateless web handlers: they cannot run plugins or read files"


class TargetConfigError(ValueError):
    """The kubeconfig cannot be used; the message names the field and why (never a secret value)."""


@dataclass(frozen=True)
class TargetConfig:
    """What a call to the target API needs. Secret fields are left out of repr."""

    server: str
    ca_data: bytes | None = None  # PEM
    token: str | None = field(default=None, repr=False)
    client_cert: bytes | None = field(default=None, repr=False)  # PEM
    client_key: bytes | None = field(default=None, repr=False)  # PEM
    tls_server_name: str | None = None
    source: str = ""  # "namespace/name" of the Secret, for messages

    def secrets(self) -> list[str]:
        """Every form of the credentials that could be echoed: raw, PEM text, base64 (register for redaction)."""
        out: list[str] = []
        if self.token:
            out.append(self.token)
        for blob in (self.client_cert, self.client_key):
            if blob:
                text = blob.decode(errors="replace")
                out += [text, base64.b64encode(blob).decode()]
        return out


# ---------------------------------------------------------------------------------------------------- the Secret


def customize_rule(namespace: str) -> dict[str, Any]:
    """The relatedResources rule the Machine's customize hook adds: labelled Secrets of its own namespace only."""
    return {"apiVersion": "v1", "resource": "secrets", "namespace": namespace,
            "labelSelector": {"matchLabels": {TARGET_LABEL: TARGET_LABEL_VALUE}}}


def from_related(related: Mapping[str, Any] | None, namespace: str) -> TargetConfig | None:
    """The target of a Machine in `namespace`: None when no labelled Secret exists there (the control cluster).

    Secrets of another namespace are never used, whatever Metacontroller hands over; two labelled Secrets in one
    namespace are ambiguous and refused.
    """
    group = (related or {}).get(SECRET_KEY)
    found = []
    for secret in (group.values() if isinstance(group, dict) else ()):
        meta = secret.get("metadata") if isinstance(secret, dict) else None
        if not isinstance(meta, dict) or meta.get("namespace") != namespace:
            continue
        labels = objects.labels(secret)
        if labels.get(TARGET_LABEL) == TARGET_LABEL_VALUE and not meta.get("deletionTimestamp"):
            found.append(secret)
    if not found:
        return None
    names = sorted(f"{namespace}/{s['metadata'].get('name')}" for s in found)
    if len(found) > 1:
        raise TargetConfigError(f"more than one Secret labelled {TARGET_LABEL}={TARGET_LABEL_VALUE} in namespace "
                                f"{namespace} ({', '.join(names)}): keep exactly one per namespace")
    secret = found[0]
    source = names[0]
    data = secret.get("data") if isinstance(secret.get("data"), dict) else {}
    raw = data.get(KUBECONFIG_KEY)
    if not isinstance(raw, str) or not raw:
        raise TargetConfigError(f"Secret {source} has no data key {KUBECONFIG_KEY!r}")
    try:
        text = base64.b64decode(raw, validate=True).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise TargetConfigError(f"Secret {source}: data.{KUBECONFIG_KEY} is not base64 of UTF-8 text") from None
    return parse(text, source=source)


# ---------------------------------------------------------------------------------------------------- the file


def parse(text: str, *, source: str = "") -> TargetConfig:
    """The current context's server and credentials; refuses what stateless hooks cannot use."""
    where = f"kubeconfig in Secret {source}" if source else "kubeconfig"
    doc = _load(text, where)
    if not isinstance(doc, dict):
        raise TargetConfigError(f"{where} is not a mapping")
    _, context = _pick(doc, "contexts", "context", doc.get("current-context"), where)
    cluster_name, user_name = context.get("cluster"), context.get("user")
    _, cluster = _pick(doc, "clusters", "cluster", cluster_name, where, required=True)
    _, user = _pick(doc, "users", "user", user_name, where, required=bool(user_name))
    return _config(cluster, user or {}, where, source)


def _pick(doc: dict[str, Any], key: str, inner: str, name: Any, where: str,
          required: bool = True) -> tuple[str, dict[str, Any]]:
    items = doc.get(key) or []
    if not isinstance(items, list):
        raise TargetConfigError(f"{where}: {key} is not a list")
    entries = [(str(i.get("name") or ""), i.get(inner) or {}) for i in items if isinstance(i, dict)]
    if name:
        entries = [e for e in entries if e[0] == name]
        if not entries:
            if not required:
                return "", {}
            raise TargetConfigError(f"{where}: no {inner} named {name!r} in {key}")
    elif len(entries) != 1:
        if not required and not entries:
            return "", {}
        raise TargetConfigError(f"{where}: no current-context, and {len(entries)} {key} to choose from")
    chosen = entries[0]
    if not isinstance(chosen[1], dict):
        raise TargetConfigError(f"{where}: {inner} {chosen[0]!r} is not a mapping")
    return chosen


REFUSED_USER = {
    "exec": f"an exec credential plugin: {STATELESS}; use a ServiceAccount token or a client certificate",
    "auth-provider": f"an auth-provider plugin: {STATELESS}; use a ServiceAccount token or a client certificate",
    "tokenFile": f"tokenFile names a file: {STATELESS}; put the token itself in `token`",
    "client-certificate": f"client-certificate names a file: {STATELESS}; use client-certificate-data "
                          "(kubectl config view --raw --flatten inlines it)",
    "client-key": f"client-key names a file: {STATELESS}; use client-key-data (kubectl config view --raw --flatten)",
    "username": "basic authentication (username/password) is not supported by Kubernetes API servers since 1.19",
    "password": "basic authentication (username/password) is not supported by Kubernetes API servers since 1.19",
    "as": "impersonation (as) is not supported: give the kubeconfig's own identity the permissions instead",
}
REFUSED_CLUSTER = {
    "certificate-authority": f"certificate-authority names a file: {STATELESS}; use certificate-authority-data "
                             "(kubectl config view --raw --flatten inlines it)",
    "insecure-skip-tls-verify": "insecure-skip-tls-verify would send the credentials to any server that answers; "
                                "give certificate-authority-data instead",
}


def _config(cluster: dict[str, Any], user: dict[str, Any], where: str, source: str) -> TargetConfig:
    for key, why in REFUSED_CLUSTER.items():
        if cluster.get(key) not in (None, "", False):
            raise TargetConfigError(f"{where}: cluster uses {why}")
    for key, why in REFUSED_USER.items():
        if user.get(key) not in (None, "", {}, []):
            raise TargetConfigError(f"{where}: user uses {why}")
    if cluster.get("proxy-url"):
        raise TargetConfigError(f"{where}: proxy-url is not supported; the hooks must reach the API server directly")
    server = str(cluster.get("server") or "")
    parts = urlsplit(server)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise TargetConfigError(f"{where}: cluster server {server!r} is not an https:// URL")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise TargetConfigError(f"{where}: server {server} is plain http: credentials would travel unencrypted "
                                "(http is accepted for a loopback address only, for local emulators)")
    token: Any = user.get("token")
    cert_data, key_data = user.get("client-certificate-data"), user.get("client-key-data")
    if token is not None and not isinstance(token, str):
        raise TargetConfigError(f"{where}: user token is not a string")
    if bool(cert_data) != bool(key_data):
        raise TargetConfigError(f"{where}: client-certificate-data and client-key-data must be given together")
    if not token and not cert_data:
        raise TargetConfigError(f"{where}: the user has neither a token nor client-certificate-data/client-key-data")
    name = cluster.get("tls-server-name")
    return TargetConfig(
        server=server.rstrip("/"),
        ca_data=_pem(cluster.get("certificate-authority-data"), "certificate-authority-data", where),
        token=token or None,
        client_cert=_pem(cert_data, "client-certificate-data", where),
        client_key=_pem(key_data, "client-key-data", where),
        tls_server_name=str(name) if name else None,
        source=source,
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _pem(value: Any, key: str, where: str) -> bytes | None:
    if value in (None, ""):
        return None
    try:
        blob = base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        raise TargetConfigError(f"{where}: {key} is not base64") from None
    if b"-----BEGIN" not in blob:
        raise TargetConfigError(f"{where}: {key} does not hold PEM data")
    return blob


# ---------------------------------------------------------------------------------------------------- the format


def _load(text: str, where: str) -> Any:
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            return json.loads(stripped)
        except ValueError as exc:
            raise TargetConfigError(f"{where} is not valid JSON: {exc}") from None
    for key in ("exec", "auth-provider", "tokenFile"):  # name the real problem even if its section is exotic YAML
        if re.search(rf"^\s*(- )?{re.escape(key)}\s*:", text, re.MULTILINE):
            what = REFUSED_USER[key]
            raise TargetConfigError(f"{where}: user uses {what}")
    try:
        return _BlockYaml(text).document()
    except _YamlUnsupported as exc:
        raise TargetConfigError(f"{where}: {exc}; store it as JSON instead "
                                "(kubectl config view --raw --minify --flatten -o json)") from None


class _YamlUnsupported(ValueError):
    pass


_PLAIN_SPECIAL = {"null": None, "~": None, "true": True, "True": True, "false": False, "False": False}


class _BlockYaml:
    """The block-YAML subset kubectl writes: indentation-nested mappings and `- ` sequences of scalars/mappings."""

    def __init__(self, text: str) -> None:
        self.lines: list[tuple[int, str, int]] = []  # (indent, content, line number)
        for number, raw in enumerate(text.splitlines(), 1):
            if "\t" in raw[: len(raw) - len(raw.lstrip())]:
                raise _YamlUnsupported(f"line {number}: tab indentation")
            content = _strip_comment(raw).rstrip()
            if not content.strip() or content.strip() in ("---", "..."):
                continue
            self.lines.append((len(content) - len(content.lstrip(" ")), content.strip(), number))
        self.pos = 0

    def document(self) -> Any:
        if not self.lines:
            return None
        value = self._node(self.lines[0][0])
        if self.pos != len(self.lines):
            raise _YamlUnsupported(f"line {self.lines[self.pos][2]}: unexpected indentation")
        return value

    def _node(self, indent: int) -> Any:
        _, content, _ = self.lines[self.pos]
        if content == "-" or content.startswith("- "):
            return self._sequence(indent)
        return self._mapping(indent)

    def _sequence(self, indent: int) -> list[Any]:
        items: list[Any] = []
        while self.pos < len(self.lines):
            ind, content, number = self.lines[self.pos]
            if ind != indent or not (content == "-" or content.startswith("- ")):
                if ind > indent:
                    raise _YamlUnsupported(f"line {number}: unexpected indentation")
                break
            rest = content[1:].lstrip()
            if not rest:
                self.pos += 1
                items.append(self._child(indent, number))
            elif _key_value(rest) is not None:
                # "- key: value" opens a mapping whose further keys sit where "key" sits.
                self.lines[self.pos] = (indent + (len(content) - len(rest)), rest, number)
                items.append(self._mapping(self.lines[self.pos][0]))
            else:
                self.pos += 1
                items.append(_scalar(rest, number))
        return items

    def _mapping(self, indent: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        while self.pos < len(self.lines):
            ind, content, number = self.lines[self.pos]
            if ind < indent:
                break
            if ind > indent:
                raise _YamlUnsupported(f"line {number}: unexpected indentation")
            pair = _key_value(content)
            if pair is None:
                if content.startswith("- "):
                    break
                raise _YamlUnsupported(f"line {number}: expected `key: value`")
            key, rest = pair
            if key in out:
                raise _YamlUnsupported(f"line {number}: duplicate key {key!r}")
            self.pos += 1
            out[key] = _scalar(rest, number) if rest else self._child(indent, number, same_indent_list=True)
        return out

    def _child(self, indent: int, number: int, same_indent_list: bool = False) -> Any:
        if self.pos >= len(self.lines):
            return None
        ind, content, _ = self.lines[self.pos]
        is_list = content == "-" or content.startswith("- ")
        if ind > indent or (same_indent_list and ind == indent and is_list):
            return self._node(ind)
        return None


def _strip_comment(line: str) -> str:
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


def _key_value(content: str) -> tuple[str, str] | None:
    if content[:1] in ("'", '"'):
        end = content.find(content[0], 1)
        if end < 0 or not content[end + 1:].startswith(":"):
            return None
        key, rest = content[1:end], content[end + 2:]
    else:
        match = re.match(r"^([^\s:#'\"\[\]{},&*!|>%@`][^:#]*?|[A-Za-z0-9_.\-/]+):(?:\s+(.*))?$", content)
        if match is None:
            return None
        key, rest = match.group(1), match.group(2) or ""
        if rest and not content[len(key) + 1:].startswith((" ", "\t")):
            return None
    return key.strip(), rest.strip()


def _scalar(text: str, number: int) -> Any:
    if text in ("{}", "[]"):
        return {} if text == "{}" else []
    first = text[:1]
    if first in "&*!|>[{%@`":
        raise _YamlUnsupported(f"line {number}: {first!r} (anchors, tags, block or flow collections) is not read")
    if first == '"':
        if not text.endswith('"') or len(text) < 2:
            raise _YamlUnsupported(f"line {number}: unterminated double-quoted string")
        try:
            return json.loads(text)
        except ValueError:
            raise _YamlUnsupported(f"line {number}: escapes in this double-quoted string are not read") from None
    if first == "'":
        if not text.endswith("'") or len(text) < 2:
            raise _YamlUnsupported(f"line {number}: unterminated single-quoted string")
        return text[1:-1].replace("''", "'")
    if text in _PLAIN_SPECIAL:
        return _PLAIN_SPECIAL[text]
    return text
