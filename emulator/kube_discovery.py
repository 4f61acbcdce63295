"""The API server's discovery documents for what the emulator's store serves (a pure function of its kinds).

Why: clients such as kubectl ask `/api`, `/apis` and `/api/v1` before anything else, to learn which resources
exist, whether they are namespaced and which subresources they have. `emulator/kube_handlers.py` answers those
paths with `discover`; anything else is routed to a resource.
"""

from __future__ import annotations

from typing import Any

from emulator.store import ResourceType

Obj = dict[str, Any]
VERSION = {"major": "1", "minor": "33", "gitVersion": "v1.33.0-emulator", "platform": "linux/amd64"}


def discover(types: list[ResourceType], path: str) -> Obj | None:
    """`/version`, `/api`, `/apis`, `/api/v1`, `/apis/GROUP/VERSION`: what clients such as kubectl ask first."""
    if path == "/version":
        return VERSION
    if path == "/api":
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
    if path == "/apis":
        groups: dict[str, list[str]] = {}
        for rt in types:
            if rt.group:
                groups.setdefault(rt.group, [rt.version])  # the storage version first: the preferred one
                for version in rt.versions or (rt.version,):
                    if version not in groups[rt.group]:
                        groups[rt.group].append(version)
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            {"name": group, "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
             "preferredVersion": {"groupVersion": f"{group}/{versions[0]}", "version": versions[0]}}
            for group, versions in sorted(groups.items())]}
    parts = path.split("/")[1:]
    if parts == ["api", "v1"]:
        group_version = "v1"
    elif len(parts) == 3 and parts[0] == "apis":
        group_version = f"{parts[1]}/{parts[2]}"
    else:
        return None
    served = [rt for rt in types if rt.serves(group_version)]
    if not served:
        return None
    resources = []
    for rt in served:
        verbs = ["create", "delete", "get", "list", "patch", "update"]
        resources.append({"name": rt.plural, "singularName": rt.kind.lower(), "namespaced": rt.namespaced,
                          "kind": rt.kind, "verbs": verbs})
        if rt.status_subresource:
            resources.append({"name": f"{rt.plural}/status", "singularName": "", "namespaced": rt.namespaced,
                              "kind": rt.kind, "verbs": ["get", "patch", "update"]})
        if rt.kind == "Pod":
            resources.append({"name": "pods/eviction", "singularName": "", "namespaced": True,
                              "group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"]})
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
            "resources": resources}

