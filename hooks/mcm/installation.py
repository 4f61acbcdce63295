"""Which installation (cluster) of the hooks this is, so a device can say whose it is.

One provider project may serve several clusters, and a cluster tag is free text that two of them can share. The
installation id is set once per install: the configured `INSTALLATION_ID`, else the UID of the cluster's
`kube-system` Namespace, which the Machine and MachineClass customize hooks relate (it never changes while the
cluster lives). Without either, the hooks refuse to create or collect devices (fail closed): a device without the
mark could later be taken for another installation's orphan, and a scan without it cannot tell whose a device is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hooks import objects
from hooks.config import Settings

NAMESPACE_KEY = "Namespace.v1"
KUBE_SYSTEM = "kube-system"
MISSING = ("this installation has no id: set INSTALLATION_ID in the hooks' environment, or let Metacontroller "
           f"relate the {KUBE_SYSTEM} Namespace (its UID is the id); no device is created or collected without one")


def related_rules(settings: Settings) -> list[dict[str, Any]]:
    """The customize rule that relates the kube-system Namespace, when no installation id is configured."""
    if settings.installation_id:
        return []
    return [{"apiVersion": "v1", "resource": "namespaces", "names": [KUBE_SYSTEM]}]


def installation_id(settings: Settings, related: Mapping[str, Any]) -> str:
    """The configured id, else the related kube-system Namespace's UID, else "" (the caller refuses to act)."""
    if settings.installation_id:
        return settings.installation_id
    namespace = objects.mapping(related, NAMESPACE_KEY).get(KUBE_SYSTEM)
    if not isinstance(namespace, dict) or objects.name(namespace) not in ("", KUBE_SYSTEM):
        return ""
    return objects.uid(namespace)
