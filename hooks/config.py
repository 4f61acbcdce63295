"""Settings read once from the environment, so every hook sees the same validated configuration."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_API_URL = "https://api.equinix.com/metal/v1"
# Label the credentials Secrets must carry: Metacontroller can only hand us Secrets it selects by label.
CREDENTIALS_LABEL = "metal-machine-hooks/credentials"
CREDENTIALS_LABEL_VALUE = "true"


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
    drain_timeout: float = 2 * 60 * 60.0
    # MCM's "--target-kubeconfig=none": an active device makes the Machine Available, no Node is awaited.
    no_target_cluster: bool = False
    # Seconds a worker may answer device looks from one listing (hooks/equinix/device_cache.py); 0 = off.
    device_cache_seconds: float = 0.0
    hook_auth_token: str = field(default="", repr=False)
    extra: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        url = (env.get("METAL_API_URL") or DEFAULT_API_URL).rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"METAL_API_URL={url!r} must start with http:// or https://")
        return cls(
            metal_api_url=url,
            connect_timeout=_float(env, "METAL_CONNECT_TIMEOUT", 3.0, 0.1),
            read_timeout=_float(env, "METAL_READ_TIMEOUT", 5.0, 0.1),
            retry_budget=_float(env, "METAL_RETRY_BUDGET", 6.0, 0.0),
            creation_timeout=_float(env, "MACHINE_CREATION_TIMEOUT", 20 * 60.0, 1.0),
            health_timeout=_float(env, "MACHINE_HEALTH_TIMEOUT", 10 * 60.0, 1.0),
            drain_timeout=_float(env, "MACHINE_DRAIN_TIMEOUT", 2 * 60 * 60.0, 1.0),
            no_target_cluster=env_bool(env, "NO_TARGET_CLUSTER"),
            device_cache_seconds=_float(env, "METAL_DEVICE_CACHE_SECONDS", 0.0, 0.0),
            hook_auth_token=env.get("HOOK_AUTH_TOKEN", "").strip(),
            extra={k: v for k, v in env.items() if k.startswith("MMH_")},
        )
