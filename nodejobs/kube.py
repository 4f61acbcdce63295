"""The API calls of the Node-side Jobs, on the drain program's client (same KUBE_* settings, token per request)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from drain.kube import MERGE_PATCH, KubeApi

STRATEGIC_PATCH = "application/strategic-merge-patch+json"


class NodeSideApi(KubeApi):
    """Secrets in one namespace (create, delete by name) and one Node (get, patch, patch status, delete)."""

    def create_secret(self, namespace: str, body: dict[str, Any]) -> bool:
        """True when created, False when a Secret of that name already exists (409 AlreadyExists)."""
        path = f"/api/v1/namespaces/{quote(namespace, safe='')}/secrets"
        response = self._call("POST", path, json=body)
        if response.status_code == 409:
            return False
        if response.status_code not in (200, 201):
            raise self._failure("POST", path, response)
        return True

    def delete_secret(self, namespace: str, name: str) -> bool:
        """True when deleted, False when it did not exist."""
        path = f"/api/v1/namespaces/{quote(namespace, safe='')}/secrets/{quote(name, safe='')}"
        response = self._call("DELETE", path)
        if response.status_code == 404:
            return False
        if response.status_code not in (200, 202):
            raise self._failure("DELETE", path, response)
        return True

    def patch_node(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch of the Node; a pinned, stale resourceVersion raises KubeError with status 409."""
        return self._patch(f"/api/v1/nodes/{quote(name, safe='')}", patch, MERGE_PATCH)

    def patch_node_status(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A strategic merge patch of the Node's status (conditions merge by type, the kubelet's stay)."""
        return self._patch(f"/api/v1/nodes/{quote(name, safe='')}/status", patch, STRATEGIC_PATCH)

    def _patch(self, path: str, patch: dict[str, Any], content_type: str) -> dict[str, Any]:
        response = self._call("PATCH", path, json=patch, headers={"Content-Type": content_type})
        if response.status_code != 200:
            raise self._failure("PATCH", path, response)
        return response.json()

    def delete_node(self, name: str, uid: str) -> bool:
        """Delete exactly the Node read (precondition on its UID): True deleted, False gone; 409 when replaced."""
        path = f"/api/v1/nodes/{quote(name, safe='')}"
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}}
        response = self._call("DELETE", path, json=body)
        if response.status_code == 404:
            return False
        if response.status_code not in (200, 202):
            raise self._failure("DELETE", path, response)
        return True
