"""Tags that say which installation and which namespace a device belongs to.

One Equinix project may serve several clusters (installations of these hooks) and, inside one cluster, several
namespaces (teams). A cluster tag is free text that two classes can share by copying an example, so it is no
boundary. These tags are: the installation id is set once per cluster (the `kube-system` Namespace UID, or a
configured value), the namespace is the Machine's, and users cannot write either, since every tag starting with
`metal-machine-hooks:` is refused in a providerSpec. A class collects only devices that carry both of its own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from hooks.equinix.tags import MAX_TAG_LENGTH, PREFIX

INSTALLATION_TAG_PREFIX = f"{PREFIX}:installation:"
NAMESPACE_TAG_PREFIX = f"{PREFIX}:namespace:"
HASH_MARK = "sha256-"


def _bounded(prefix: str, value: str) -> str:
    """`prefix + value`, or `prefix + sha256-<hex>` cut to the API's 80-character tag limit when that is longer."""
    tag = f"{prefix}{value}"
    if len(tag) <= MAX_TAG_LENGTH:
        return tag
    digest = hashlib.sha256(value.encode()).hexdigest()
    return f"{prefix}{HASH_MARK}{digest}"[:MAX_TAG_LENGTH]


def installation_tag(installation_id: str) -> str:
    return _bounded(INSTALLATION_TAG_PREFIX, installation_id)


def namespace_tag(namespace: str) -> str:
    return _bounded(NAMESPACE_TAG_PREFIX, namespace)


def tenant_tags(installation_id: str, namespace: str) -> list[str]:
    """The two tags every device of a Machine in `namespace` carries, created by this installation."""
    return [installation_tag(installation_id), namespace_tag(namespace)]


def missing_tenant_tags(tags: Iterable[str], installation_id: str, namespace: str) -> list[str]:
    """Tenant tags a device lacks (devices made before tenancy existed get them added by their Machine's sync)."""
    present = set(tags)
    return [tag for tag in tenant_tags(installation_id, namespace) if tag not in present]


def in_tenant(tags: Iterable[str], installation_id: str, namespace: str) -> bool:
    """Whether a device carries this installation's and this namespace's tags, and no other installation's or
    namespace's (a device claiming two tenants is nobody's to collect)."""
    present = [t for t in tags if isinstance(t, str)]
    installs = {t for t in present if t.startswith(INSTALLATION_TAG_PREFIX)}
    namespaces = {t for t in present if t.startswith(NAMESPACE_TAG_PREFIX)}
    return installs == {installation_tag(installation_id)} and namespaces == {namespace_tag(namespace)}
