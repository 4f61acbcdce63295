"""Drain one Node: cordon it, evict what runs on it until nothing is left, or give up at the deadline.

Like `kubectl drain --ignore-daemonsets --delete-emptydir-data --force`, and like MCM: DaemonSet pods stay (their
controller would put them right back, and they go with the server), mirror pods stay (the API cannot remove them),
finished pods don't count, and everything else is evicted, unmanaged pods and pods with local data included,
because the server they run on is about to be deleted. Evictions a PodDisruptionBudget refuses (429) are asked
again every few seconds until the deadline.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from drain.kube import Eviction, KubeError

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
T = TypeVar("T")


class NodeApi(Protocol):
    """The calls a drain makes; drain.kube.KubeApi over HTTPS, or a stand-in over an emulated cluster."""

    def get_node(self, name: str) -> dict[str, Any] | None: ...

    def cordon(self, name: str) -> None: ...

    def pods_on_node(self, name: str) -> list[dict[str, Any]]: ...

    def evict(self, namespace: str, name: str) -> Eviction: ...


class DrainFailed(RuntimeError):
    """The drain did not finish; the message says what was left and why."""


def pod_key(pod: dict[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def kept_because(pod: dict[str, Any], own_pod: str = "") -> str:
    """Why a pod on the Node is left alone, or "" when it must be evicted."""
    meta = pod.get("metadata") or {}
    if MIRROR_ANNOTATION in (meta.get("annotations") or {}):
        return "mirror pod"
    if any(ref.get("kind") == "DaemonSet" and ref.get("controller") for ref in meta.get("ownerReferences") or []):
        return "DaemonSet pod"
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return "finished"
    if own_pod and pod_key(pod) == own_pod:
        return "the drain itself"
    return ""


def drain_node(
    api: NodeApi,
    node_name: str,
    *,
    deadline: float,
    retry_interval: float = 5.0,
    own_pod: str = "",
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] = print,
) -> None:
    """Return once no pod that must go is left on the Node; raise DrainFailed otherwise. `deadline` is monotonic."""

    def pause() -> None:
        sleep(max(0.0, min(retry_interval, deadline - monotonic())))

    def patiently(what: str, call: Callable[[], T]) -> T:
        """Transient API trouble (network, 429, 5xx) is retried until the deadline; anything else ends the drain."""
        while True:
            try:
                return call()
            except KubeError as exc:
                if not exc.retryable or monotonic() >= deadline:
                    raise DrainFailed(f"{what} failed: {exc}") from None
                log(f"{what} failed, will retry: {exc}")
                pause()

    node = patiently(f"reading node {node_name}", lambda: api.get_node(node_name))
    if node is None:
        log(f"node {node_name} does not exist: nothing to drain")
        return
    if (node.get("spec") or {}).get("unschedulable"):
        log(f"node {node_name} is already cordoned")
    else:
        patiently(f"cordoning node {node_name}", lambda: api.cordon(node_name))
        log(f"node {node_name} cordoned")

    reported: set[str] = set()
    blocked: dict[str, str] = {}
    while True:
        pods = patiently(f"listing pods on {node_name}", lambda: api.pods_on_node(node_name))
        remaining: list[dict[str, Any]] = []
        for pod in pods:
            reason = kept_because(pod, own_pod)
            if not reason:
                remaining.append(pod)
            elif pod_key(pod) not in reported:
                reported.add(pod_key(pod))
                log(f"leaving {pod_key(pod)}: {reason}")
        if not remaining:
            log(f"node {node_name} drained")
            return
        for pod in remaining:
            key = pod_key(pod)
            if (pod.get("metadata") or {}).get("deletionTimestamp"):
                blocked[key] = "terminating"
                continue
            meta = pod["metadata"]
            answer = patiently(f"evicting {key}", functools.partial(api.evict, meta["namespace"], meta["name"]))
            if answer.done:
                blocked[key] = "evicted, terminating"
                log(f"evicted {key}")
            else:
                if blocked.get(key) != answer.message:
                    log(f"eviction of {key} refused, will retry: {answer.message}")
                blocked[key] = answer.message
        if monotonic() >= deadline:
            left = ", ".join(f"{pod_key(p)} ({blocked.get(pod_key(p), 'not evicted')})" for p in remaining)
            raise DrainFailed(f"timed out with {len(remaining)} pod(s) left on node {node_name}: {left}")
        pause()
