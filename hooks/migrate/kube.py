"""The Kubernetes API calls the migration makes: reads of one namespace's objects and guarded JSON patches.

Built on drain.kube.KubeApi (the same in-cluster settings: KUBERNETES_SERVICE_HOST/PORT, KUBE_TOKEN_FILE,
KUBE_CA_FILE, KUBE_API_SCHEME; the token re-read for every request), so both programs talk to the API server alike.
"""

from __future__ import annotations

import builtins  # MigrationApi.list shadows `list` in the class body
from typing import Any
from urllib.parse import quote

from drain.kube import KubeApi, KubeError

JSON_PATCH = "application/json-patch+json"
MACHINE_API = "/apis/machine.sapcloud.io/v1alpha1"
PLURALS = {
    "Machine": "machines",
    "MachineClass": "machineclasses",
    "MachineSet": "machinesets",
    "MachineDeployment": "machinedeployments",
}

__all__ = ["JSON_PATCH", "KubeError", "MigrationApi", "object_path"]


def object_path(kind: str, namespace: str, name: str = "") -> str:
    """The REST path of a kind's collection in `namespace` (or of one object, with `name`)."""
    tail = f"/{quote(name, safe='')}" if name else ""
    ns = quote(namespace, safe="")
    if kind == "Node":
        return f"/api/v1/nodes{tail}"
    if kind == "Secret":
        return f"/api/v1/namespaces/{ns}/secrets{tail}"
    if kind == "Deployment":
        return f"/apis/apps/v1/namespaces/{ns}/deployments{tail}"
    return f"{MACHINE_API}/namespaces/{ns}/{PLURALS[kind]}{tail}"


class MigrationApi(KubeApi):
    """get, list and JSON patch over drain.kube.KubeApi's transport."""

    def read(self, kind: str, namespace: str, name: str) -> tuple[dict[str, Any] | None, int]:
        """(the object or None, the HTTP code): 404 and 403 are answers here, not failures (the caller decides)."""
        path = object_path(kind, namespace, name)
        response = self._call("GET", path)
        if response.status_code in (403, 404):
            return None, response.status_code
        if response.status_code != 200:
            raise self._failure("GET", path, response)
        return response.json(), 200

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        found, status = self.read(kind, namespace, name)
        if status == 403:
            raise KubeError(f"GET {object_path(kind, namespace, name)}: HTTP 403: forbidden (see kubernetes/migrate/ "
                            "for the rights this program needs)", 403)
        return found

    def list(self, kind: str, namespace: str, page_size: int = 500) -> builtins.list[dict[str, Any]]:
        """Every object of the kind in the namespace, following `continue` tokens."""
        path = object_path(kind, namespace)
        items: builtins.list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": page_size}
        while True:
            response = self._call("GET", path, params=params)
            if response.status_code != 200:
                raise self._failure("GET", path, response)
            body = response.json()
            items.extend(i for i in body.get("items") or [] if isinstance(i, dict))
            token = (body.get("metadata") or {}).get("continue")
            if not token:
                return items
            params = {**params, "continue": token}

    def patch(self, kind: str, namespace: str, name: str,
              operations: builtins.list[dict[str, Any]]) -> dict[str, Any] | None:
        """Apply a JSON patch; None when its resourceVersion test failed or the object changed meanwhile (409/422:
        read it again and decide again) or it is gone (404)."""
        path = object_path(kind, namespace, name)
        response = self._call("PATCH", path, json=operations, headers={"Content-Type": JSON_PATCH})
        if response.status_code in (404, 409, 422):
            return None
        if response.status_code != 200:
            raise self._failure("PATCH", path, response)
        return response.json()
