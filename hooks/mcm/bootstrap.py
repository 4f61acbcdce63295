"""Bootstrap tokens for `<<BOOTSTRAP_TOKEN>>` in userData, as MCM makes them, without the hook reading a Secret.

MCM replaces `<<BOOTSTRAP_TOKEN>>` in a Machine's userData with a fresh kubeadm bootstrap token (a
`bootstrap.kubernetes.io/token` Secret `bootstrap-token-<id>` in `kube-system`, expiring after the creation timeout)
and deletes the token once the Node has joined. A hook answers in seconds and holds no state, so here the token is
derived: `HMAC-SHA256(key, machine UID)` gives the token id and secret, with a key that only the hook server and the
token Job can read (BOOTSTRAP_TOKEN_KEY_FILE, a file mounted from a Secret). The hook renders the userData from the
derivation; a Job (`python -m nodejobs token create`, hooks/mcm/node_jobs.py) derives the same token from the same
key, mounted into its pod, and creates the Secret. So the token's secret half is written nowhere but the userData
and that Secret: not in the Machine, not in the Job's spec (which names only the Machine's UID), not in a log.

Tokens are never shared: each Machine UID gives another token. Lifetime: the token expires at the Machine's
creationTimestamp + its creation timeout, the moment the hooks mark a Machine that has not joined Failed (MCM uses
"now + creation timeout" when it creates the token; ours is never later, and it is the same on every call, so the
Job is too). A Machine that never got a server leaves no usable token: it expires with the creation window, and a
deleted Machine's token is deleted by a `token delete` Job (as is a joined Machine's, as MCM does on join).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

from hooks.config import ConfigError
from hooks.mcm.timefmt import format_time, parse_duration, parse_time

PLACEHOLDER = "<<BOOTSTRAP_TOKEN>>"
MACHINE_NAME_PLACEHOLDER = "<<MACHINE_NAME>>"
TOKEN_NAMESPACE = "kube-system"
SECRET_TYPE = "bootstrap.kubernetes.io/token"
SECRET_PREFIX = "bootstrap-token-"
# MCM's --bootstrap-token-auth-extra-groups default is empty: the token authenticates as system:bootstrappers only.
DEFAULT_EXTRA_GROUPS = ""
KEY_FILE_ENV = "BOOTSTRAP_TOKEN_KEY_FILE"
# The Secret (in every Machine namespace) whose `key` the token Jobs mount, and where they mount it.
DEFAULT_KEY_SECRET = "metal-machine-bootstrap-token-key"
KEY_MOUNT_DIR = "/etc/metal-machine-hooks/bootstrap-token-key"
KEY_FILE_NAME = "key"
MIN_KEY_BYTES = 32
# Labels on the Secret: who made it and for which Machine (the UID is no secret; it ties the token to one Machine).
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "metal-machine-hooks"
MACHINE_UID_LABEL = "metal-machine-hooks/machine-uid"

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_GROUP = re.compile(r"^system:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]$")
TOKEN_PATTERN = re.compile(r"^[a-z0-9]{6}\.[a-z0-9]{16}$")


class BootstrapTokenError(ConfigError):
    """The userData asks for a bootstrap token that cannot be made (no key, unreadable key, bad settings)."""


@dataclass(frozen=True)
class BootstrapToken:
    """A kubeadm bootstrap token `<id>.<secret>`; the secret half never appears in a repr."""

    token_id: str
    secret: str = field(repr=False)

    @property
    def value(self) -> str:
        return f"{self.token_id}.{self.secret}"

    @property
    def secret_name(self) -> str:
        return SECRET_PREFIX + self.token_id


def _base36(digest: bytes, length: int) -> str:
    """`length` characters of [a-z0-9] from a digest; 256 bits over 36**16 leaves no measurable bias."""
    number = int.from_bytes(digest, "big")
    chars = []
    for _ in range(length):
        number, digit = divmod(number, 36)
        chars.append(_ALPHABET[digit])
    return "".join(chars)


def derive(key: bytes, machine_uid: str) -> BootstrapToken:
    """The Machine's token: id and secret from two HMACs of its UID (domain-separated, so the public id says
    nothing about the secret)."""
    if len(key) < MIN_KEY_BYTES:
        raise BootstrapTokenError(f"the bootstrap token key must have at least {MIN_KEY_BYTES} bytes")
    if not machine_uid:
        raise BootstrapTokenError("a bootstrap token needs the Machine's UID")
    uid = machine_uid.encode()
    token_id = _base36(hmac.new(key, b"metal-machine-hooks/bootstrap-token-id\x00" + uid, hashlib.sha256).digest(), 6)
    secret = _base36(hmac.new(key, b"metal-machine-hooks/bootstrap-token-secret\x00" + uid, hashlib.sha256).digest(),
                     16)
    return BootstrapToken(token_id, secret)


def token_id(key: bytes, machine_uid: str) -> str:
    return derive(key, machine_uid).token_id


def read_key(path: str | Path) -> bytes:
    """The key from its file (surrounding whitespace dropped: `kubectl create secret --from-file` keeps a newline)."""
    try:
        key = Path(path).read_bytes().strip()
    except OSError as exc:
        raise BootstrapTokenError(
            f"{KEY_FILE_ENV}={path}: cannot read the bootstrap token key ({exc.strerror})") from None
    if len(key) < MIN_KEY_BYTES:
        raise BootstrapTokenError(f"{KEY_FILE_ENV}={path}: the bootstrap token key must have at least "
                                  f"{MIN_KEY_BYTES} bytes, it has {len(key)}")
    return key


def uses_placeholder(user_data: str | None) -> bool:
    """Whether the userData asks for a token (raw, or URL-encoded as in ignition)."""
    return bool(user_data) and (PLACEHOLDER in user_data or quote_plus(PLACEHOLDER) in user_data)  # type: ignore[operator]


def render_user_data(user_data: str, machine_name: str, token: BootstrapToken | None) -> str:
    """userData with both placeholders replaced, as MCM does (raw form first, else the URL-encoded one).

    Without `<<BOOTSTRAP_TOKEN>>` nothing about tokens changes; with it and no token, BootstrapTokenError (never
    create a server whose userData cannot join).
    """
    if uses_placeholder(user_data):
        if token is None:
            raise BootstrapTokenError(f"the userData asks for a bootstrap token ({PLACEHOLDER}) but none was made")
        if PLACEHOLDER in user_data:
            user_data = user_data.replace(PLACEHOLDER, token.value)
        else:
            user_data = user_data.replace(quote_plus(PLACEHOLDER), quote_plus(token.value))
    if MACHINE_NAME_PLACEHOLDER in user_data:
        return user_data.replace(MACHINE_NAME_PLACEHOLDER, machine_name)
    return user_data.replace(quote_plus(MACHINE_NAME_PLACEHOLDER), quote_plus(machine_name))


def parse_groups(raw: str) -> str:
    """auth-extra-groups as the API server accepts it: comma-separated `system:bootstrappers:...` groups, or ""."""
    groups = [g.strip() for g in raw.split(",") if g.strip()]
    bad = [g for g in groups if not _GROUP.match(g)]
    if bad:
        raise BootstrapTokenError(f"BOOTSTRAP_TOKEN_AUTH_EXTRA_GROUPS: {', '.join(bad)}: every group must match "
                                  f"system:bootstrappers:[a-z0-9:-]{{0,255}}[a-z0-9]")
    return ",".join(groups)


@dataclass(frozen=True)
class TokenSettings:
    """Where the key is (for the hook server), the extra groups, and the Secret the token Jobs mount."""

    key_file: str = ""
    extra_groups: str = DEFAULT_EXTRA_GROUPS
    key_secret: str = DEFAULT_KEY_SECRET

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TokenSettings:
        """BOOTSTRAP_TOKEN_KEY_FILE, BOOTSTRAP_TOKEN_AUTH_EXTRA_GROUPS, BOOTSTRAP_TOKEN_KEY_SECRET."""
        env = os.environ if env is None else env
        return cls(
            key_file=(env.get(KEY_FILE_ENV) or "").strip(),
            extra_groups=parse_groups(env.get("BOOTSTRAP_TOKEN_AUTH_EXTRA_GROUPS") or DEFAULT_EXTRA_GROUPS),
            key_secret=(env.get("BOOTSTRAP_TOKEN_KEY_SECRET") or DEFAULT_KEY_SECRET).strip(),
        )

    def token_for(self, machine_uid: str) -> BootstrapToken:
        """Fail closed: no key configured means no token, with a message that says what to set."""
        if not self.key_file:
            raise BootstrapTokenError(
                f"the userData contains {PLACEHOLDER} but no bootstrap token key is configured: set {KEY_FILE_ENV} "
                f"on the hook server to a file mounted from the Secret {self.key_secret} (key {KEY_FILE_NAME!r})")
        return derive(read_key(self.key_file), machine_uid)


def creation_timeout(machine: Mapping[str, Any], default: float) -> float:
    """The Machine's `spec.creationTimeout` when it parses, else the hook server's default (as machine.py reads it)."""
    value = parse_duration((machine.get("spec") or {}).get("creationTimeout"))
    return value if value is not None and value > 0 else default


def expiration(machine: Mapping[str, Any], default_timeout: float) -> datetime | None:
    """creationTimestamp + creation timeout: when the Machine would be Failed for not joining. None without a
    creationTimestamp (then no token is made: a Machine the API server has not stored has no server either)."""
    created = parse_time((machine.get("metadata") or {}).get("creationTimestamp"))
    if created is None:
        return None
    return created + timedelta(seconds=creation_timeout(machine, default_timeout))


def token_secret(token: BootstrapToken, machine_name: str, machine_uid: str, expires: datetime,
                 extra_groups: str = DEFAULT_EXTRA_GROUPS) -> dict[str, Any]:
    """The `bootstrap.kubernetes.io/token` Secret as MCM writes it (its description, both usages), plus labels."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": token.secret_name,
            "namespace": TOKEN_NAMESPACE,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY, MACHINE_UID_LABEL: machine_uid},
        },
        "type": SECRET_TYPE,
        "stringData": {
            "description": f'A bootstrap token for machine "{machine_name}" generated by MachineControllerManager.',
            "token-id": token.token_id,
            "token-secret": token.secret,
            "expiration": format_time(expires),
            "usage-bootstrap-authentication": "true",
            "usage-bootstrap-signing": "true",
            "auth-extra-groups": extra_groups,
        },
    }
