"""Settings read once from the environment, so every hook sees the same validated configuration.

`Settings.from_env` runs at create_app; a value that cannot be used is a ConfigError there, which the app reports
on /readyz (the pod never becomes ready) instead of on every hook call that would read it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from hooks import __version__

if TYPE_CHECKING:  # hooks.mcm.node_jobs imports this module: read it lazily (Settings.from_env)
    from hooks.mcm.node_jobs import NodeJobSettings

DEFAULT_API_URL = "https://api.equinix.com/metal/v1"
# Label the credentials Secrets must carry: Metacontroller can only hand us Secrets it selects by label.
CREDENTIALS_LABEL = "metal-machine-hooks/credentials"
CREDENTIALS_LABEL_VALUE = "true"
DEFAULT_DRAIN_IMAGE = f"ghcr.io/metal-machine-hooks/metal-machine-hooks:{__version__}"
DEFAULT_DRAIN_SERVICE_ACCOUNT = "metal-machine-drain"
DEFAULT_DRAIN_TIMEOUT = 2 * 60 * 60.0
# Orphaned devices one MachineClass scan may delete; the rest wait for the next scan (a mistake costs at most this).
DEFAULT_ORPHAN_DELETIONS_PER_SCAN = 10
# What may be used as an installation id (it becomes part of a device tag: no spaces, no commas).
_INSTALLATION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_SA_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class ConfigError(ValueError):
    """A setting in the environment cannot be used; the message names the variable."""


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} must be at least {minimum}")
    return value


def env_bool(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    """One spelling of on/off for every setting (also hooks/mcm/drain.py), and a typo is an error, not "off"."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use true or false)")


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} must be at least {minimum}")
    return value


def _installation_id(env: Mapping[str, str]) -> str:
    """INSTALLATION_ID: "" when unset (the hooks then use the kube-system Namespace UID), else a checked id."""
    raw = (env.get("INSTALLATION_ID") or "").strip()
    if raw and not _INSTALLATION_ID.match(raw):
        raise ConfigError(f"INSTALLATION_ID={raw!r} must be 1-128 letters, digits, '.', '_', ':' or '-'")
    return raw


def _blank_is_unset_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    """env_bool, except that a blank value (spaces only) counts as unset rather than as a typo (DRAIN_ENABLED)."""
    if not (env.get(name) or "").strip():
        return default
    return env_bool(env, name, default)


def _drain_env(env: Mapping[str, str]) -> tuple[bool, str, str]:
    """(DRAIN_ENABLED, DRAIN_IMAGE, DRAIN_SERVICE_ACCOUNT), checked: a Job built from them must be accepted."""
    image = (env.get("DRAIN_IMAGE") or DEFAULT_DRAIN_IMAGE).strip()
    account = (env.get("DRAIN_SERVICE_ACCOUNT") or DEFAULT_DRAIN_SERVICE_ACCOUNT).strip()
    if not _SA_NAME.match(account) or len(account) > 253:
        raise ConfigError(f"DRAIN_SERVICE_ACCOUNT={account!r} is not a valid ServiceAccount name")
    if any(ch.isspace() for ch in image):
        raise ConfigError(f"DRAIN_IMAGE={image!r} must not contain spaces")
    return _blank_is_unset_bool(env, "DRAIN_ENABLED", True), image, account


@dataclass(frozen=True)
class DrainSettings:
    """How drains run (hooks/mcm/drain.py): on or off, which image and ServiceAccount, the default drain timeout."""

    enabled: bool = True
    image: str = DEFAULT_DRAIN_IMAGE
    service_account: str = DEFAULT_DRAIN_SERVICE_ACCOUNT
    timeout: float = DEFAULT_DRAIN_TIMEOUT

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, settings: Settings | None = None) -> DrainSettings:
        """DRAIN_ENABLED, DRAIN_IMAGE, DRAIN_SERVICE_ACCOUNT from `env`; timeout and target cluster from `settings`
        (read from `env` when not given). The hooks use Settings.drain, read once; this is for tools and tests."""
        env = os.environ if env is None else env
        settings = settings or Settings.from_env(env)
        enabled, image, account = _drain_env(env)
        return cls(enabled=enabled and not settings.no_target_cluster, image=image, service_account=account,
                   timeout=settings.drain_timeout)


@dataclass(frozen=True)
class Settings:
    """Everything the hooks read from outside the request."""

    metal_api_url: str = DEFAULT_API_URL
    connect_timeout: float = 3.0
    read_timeout: float = 5.0
    # Total time one hook call may spend retrying GET/DELETE; well under Metacontroller's 10 s webhook timeout.
    retry_budget: float = 6.0
    creation_timeout: float = 20 * 60.0
    health_timeout: float = 10 * 60.0
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    drain_enabled: bool = True
    drain_image: str = DEFAULT_DRAIN_IMAGE
    drain_service_account: str = DEFAULT_DRAIN_SERVICE_ACCOUNT
    # MCM's "--target-kubeconfig=none": an active device makes the Machine Available, no Node is awaited.
    no_target_cluster: bool = False
    # Seconds a worker may answer device looks from one listing (hooks/equinix/device_cache.py); 0 = off.
    device_cache_seconds: float = 0.0
    # Which cluster's devices are ours, set once per install (INSTALLATION_ID); "" = the kube-system Namespace UID,
    # which the Machine and MachineClass hooks relate. Devices carry it as a tag (hooks/equinix/tenancy.py).
    installation_id: str = ""
    # At most this many orphaned devices deleted per MachineClass scan (ORPHAN_DELETIONS_PER_SCAN).
    orphan_deletions_per_scan: int = DEFAULT_ORPHAN_DELETIONS_PER_SCAN
    hook_auth_token: str = field(default="", repr=False)
    # The token that replaces hook_auth_token in a rotation (HOOK_AUTH_TOKEN_NEXT): both are accepted meanwhile.
    hook_auth_token_next: str = field(default="", repr=False)
    # Whether the hook routes refuse to serve without a token. The environment path requires one unless
    # HOOK_AUTH_DISABLED=true; a Settings built in code (tests, tools) states it explicitly.
    hook_auth_required: bool = False
    extra: Mapping[str, str] = field(default_factory=dict, repr=False)
    # The Node-side Jobs (docs/nodes.md): image, ServiceAccounts, bootstrap token settings; read once, here.
    node_jobs: NodeJobSettings = field(default_factory=lambda: _node_jobs({}))

    @cached_property
    def drain(self) -> DrainSettings:
        """The drain settings: without a target cluster (NO_TARGET_CLUSTER) there are no Nodes to drain, as in MCM."""
        return DrainSettings(enabled=self.drain_enabled and not self.no_target_cluster, image=self.drain_image,
                             service_account=self.drain_service_account, timeout=self.drain_timeout)

    @property
    def hook_tokens(self) -> list[str]:
        """The bearer tokens the hook routes accept (current, then next); empty means no check."""
        return [token for token in (self.hook_auth_token, self.hook_auth_token_next) if token]

    def auth_problem(self) -> str:
        """Why the hook routes must stay closed ("" when they may serve): every request carries cloud credentials."""
        if self.hook_auth_required and not self.hook_tokens:
            return ("hook authentication is not configured: set HOOK_AUTH_TOKEN (the key `token` of the Secret "
                    "metal-machine-hooks-auth, which Metacontroller's endpointConfigs also read; see "
                    "docs/operations.md), or HOOK_AUTH_DISABLED=true for a throwaway local setup")
        return ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and check every setting; a hook server built from the environment requires a token by default."""
        env = os.environ if env is None else env
        url = (env.get("METAL_API_URL") or DEFAULT_API_URL).rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"METAL_API_URL={url!r} must start with http:// or https://")
        drain_enabled, drain_image, drain_account = _drain_env(env)
        return cls(
            metal_api_url=url,
            connect_timeout=_float(env, "METAL_CONNECT_TIMEOUT", 3.0, 0.1),
            read_timeout=_float(env, "METAL_READ_TIMEOUT", 5.0, 0.1),
            retry_budget=_float(env, "METAL_RETRY_BUDGET", 6.0, 0.0),
            creation_timeout=_float(env, "MACHINE_CREATION_TIMEOUT", 20 * 60.0, 1.0),
            health_timeout=_float(env, "MACHINE_HEALTH_TIMEOUT", 10 * 60.0, 1.0),
            drain_timeout=_float(env, "MACHINE_DRAIN_TIMEOUT", DEFAULT_DRAIN_TIMEOUT, 1.0),
            drain_enabled=drain_enabled,
            drain_image=drain_image,
            drain_service_account=drain_account,
            no_target_cluster=env_bool(env, "NO_TARGET_CLUSTER"),
            device_cache_seconds=_float(env, "METAL_DEVICE_CACHE_SECONDS", 0.0, 0.0),
            installation_id=_installation_id(env),
            orphan_deletions_per_scan=_int(env, "ORPHAN_DELETIONS_PER_SCAN", DEFAULT_ORPHAN_DELETIONS_PER_SCAN, 1),
            hook_auth_token=env.get("HOOK_AUTH_TOKEN", "").strip(),
            hook_auth_token_next=env.get("HOOK_AUTH_TOKEN_NEXT", "").strip(),
            hook_auth_required=not env_bool(env, "HOOK_AUTH_DISABLED"),
            extra={k: v for k, v in env.items() if k.startswith("MMH_")},
            node_jobs=_node_jobs(env),
        )


def _node_jobs(env: Mapping[str, str]) -> NodeJobSettings:
    """NODE_JOBS_*, BOOTSTRAP_TOKEN_* (hooks.mcm.node_jobs.NodeJobSettings.from_env); a bad value is a ConfigError."""
    from hooks.mcm.node_jobs import NodeJobSettings

    return NodeJobSettings.from_env(env)
