"""The four Kubernetes API calls a drain makes, over HTTPS with the pod's ServiceAccount token or a kubeconfig.

With KUBECONFIG set (a file in a Secret volume: the target cluster's kubeconfig when Nodes live in another cluster,
docs/operations.md "Two clusters") the calls go to that cluster with its token or client certificate instead of the
pod's own cluster; the same rules as the hooks apply (hooks/target/kubeconfig.py: no exec plugins, no file paths).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote

import requests

from hooks.target import kubeconfig as target_kubeconfig
from hooks.target.tls import session_for

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
MERGE_PATCH = "application/merge-patch+json"


class KubeError(RuntimeError):
    """An API answer the drain cannot work with; `status` is the HTTP code (0 for a transport failure)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status

    @property
    def retryable(self) -> bool:
        """Transport failures, throttling and server errors pass; a 4xx like 403 (missing RBAC) will not."""
        return self.status == 0 or self.status == 429 or self.status >= 500


@dataclass(frozen=True)
class Eviction:
    """The answer to one eviction: done (accepted or pod already gone) or blocked, with the API's reason."""

    done: bool
    message: str = ""


class KubeApi:
    """A minimal API client; the token is read on every request because projected tokens rotate during long drains."""

    def __init__(
        self,
        base_url: str,
        token: Callable[[], str],
        *,
        verify: str | bool = True,
        session: requests.Session | None = None,
        timeout: tuple[float, float] = (5.0, 30.0),
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._verify = verify
        self._session = session or requests.Session()
        self._timeout = timeout

    @classmethod
    def in_cluster(cls, env: Mapping[str, str] | None = None, root: Path = SERVICE_ACCOUNT_DIR) -> Self:
        """The API server a pod is given: KUBERNETES_SERVICE_HOST/PORT, the mounted token and CA.

        KUBE_TOKEN_FILE and KUBE_CA_FILE move the token and CA (defaults: `token` and `ca.crt` in `root`, the
        ServiceAccount mount). KUBE_API_SCHEME=http talks plain HTTP, for the emulator's loopback API only; it
        must be asked for, the default is HTTPS verified against the CA.
        """
        env = os.environ if env is None else env
        host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise KubeError("not running in a cluster: KUBERNETES_SERVICE_HOST is not set")
        scheme = (env.get("KUBE_API_SCHEME") or "https").strip().lower()
        if scheme not in ("https", "http"):
            raise KubeError(f"KUBE_API_SCHEME={scheme!r}: must be https (or http, for a local emulator only)")
        token_file = Path(env.get("KUBE_TOKEN_FILE") or root / "token")
        if not token_file.is_file():
            raise KubeError(f"no ServiceAccount token at {token_file} (is automountServiceAccountToken off?)")
        host = f"[{host}]" if ":" in host else host
        ca = Path(env.get("KUBE_CA_FILE") or root / "ca.crt")
        if env.get("KUBE_CA_FILE") and not ca.is_file():
            raise KubeError(f"KUBE_CA_FILE={ca}: no such file")
        verify: str | bool = str(ca) if ca.is_file() else True
        return cls(f"{scheme}://{host}:{port}", lambda: token_file.read_text().strip(), verify=verify)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, root: Path = SERVICE_ACCOUNT_DIR) -> Self:
        """KUBECONFIG when set (the target cluster), else the pod's own cluster (in_cluster)."""
        env = os.environ if env is None else env
        path = (env.get("KUBECONFIG") or "").strip()
        return cls.from_kubeconfig(Path(path)) if path else cls.in_cluster(env, root)

    @classmethod
    def from_kubeconfig(cls, path: Path) -> Self:
        """The cluster a kubeconfig file names. Its token is read again on every request, so a rotated Secret
        (the kubelet refreshes Secret volumes) takes effect during a long drain; TLS settings are read once."""

        def load() -> target_kubeconfig.TargetConfig:
            try:
                text = path.read_text()
            except OSError as exc:
                raise KubeError(f"KUBECONFIG={path}: {exc.strerror or exc}") from None
            try:
                return target_kubeconfig.parse(text, source=str(path))
            except target_kubeconfig.TargetConfigError as exc:
                raise KubeError(str(exc)) from None

        config = load()
        return cls(config.server, lambda: load().token or "", verify=True, session=session_for(config))

    def _call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Accept": "application/json"}
        token = self._token()
        if token:  # a client-certificate kubeconfig has none
            headers["Authorization"] = f"Bearer {token}"
        headers.update(kwargs.pop("headers", {}))
        try:
            return self._session.request(
                method, self.base_url + path, headers=headers, verify=self._verify, timeout=self._timeout, **kwargs
            )
        except requests.RequestException as exc:
            raise KubeError(f"{method} {path}: {type(exc).__name__}: {exc}") from None

    @staticmethod
    def _failure(method: str, path: str, response: requests.Response) -> KubeError:
        try:
            body = response.json()
        except ValueError:
            body = None
        message = str(body.get("message") or "") if isinstance(body, dict) else ""
        message = message or response.text or response.reason or ""
        return KubeError(f"{method} {path}: HTTP {response.status_code}: {message[:300]}", response.status_code)

    def get_node(self, name: str) -> dict[str, Any] | None:
        """The Node, or None when it no longer exists (then there is nothing to drain)."""
        path = f"/api/v1/nodes/{quote(name, safe='')}"
        response = self._call("GET", path)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._failure("GET", path, response)
        return response.json()

    def cordon(self, name: str) -> None:
        """Mark the Node unschedulable, so nothing evicted lands on it again."""
        path = f"/api/v1/nodes/{quote(name, safe='')}"
        response = self._call(
            "PATCH", path, json={"spec": {"unschedulable": True}}, headers={"Content-Type": MERGE_PATCH}
        )
        if response.status_code != 200:
            raise self._failure("PATCH", path, response)

    def pods_on_node(self, name: str, page_size: int = 500) -> list[dict[str, Any]]:
        """Every pod bound to the Node, in all namespaces, following `continue` tokens."""
        pods: list[dict[str, Any]] = []
        params: dict[str, Any] = {"fieldSelector": f"spec.nodeName={name}", "limit": page_size}
        while True:
            response = self._call("GET", "/api/v1/pods", params=params)
            if response.status_code != 200:
                raise self._failure("GET", "/api/v1/pods", response)
            body = response.json()
            pods.extend(p for p in body.get("items") or [] if isinstance(p, dict))
            token = (body.get("metadata") or {}).get("continue")
            if not token:
                return pods
            params = {**params, "continue": token}

    def evict(self, namespace: str, name: str) -> Eviction:
        """Ask for one pod's eviction; 429 means a PodDisruptionBudget does not allow it right now."""
        path = f"/api/v1/namespaces/{quote(namespace, safe='')}/pods/{quote(name, safe='')}/eviction"
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": namespace},
        }
        response = self._call("POST", path, json=body)
        if response.status_code in (200, 201, 404):
            return Eviction(True)
        if response.status_code == 429:
            return Eviction(False, str(self._failure("POST", path, response)))
        raise self._failure("POST", path, response)
