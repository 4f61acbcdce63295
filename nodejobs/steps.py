"""What each Node-side Job does, over an API client; the decisions are hooks.mcm's pure functions.

Every Node step reads the Node again and proves it is the device's (hooks.mcm.node_proof) before it writes: the Job
was declared from an observation that may be stale, and a Node of the same name may since belong to another server.
A Node that is gone, or not provably the device's, is left alone and the step ends successfully (nothing to do
for this Machine); API trouble ends it with an error, and the Job is retried.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from drain.kube import KubeError
from hooks.driver import Address, Device, DeviceState
from hooks.mcm import bootstrap
from hooks.mcm.node_proof import EXTERNAL, prove
from hooks.mcm.node_side import NodeTemplate, node_template_patch, terminating_condition
from hooks.redact import redact

CONFLICT_RETRIES = 5


class StepFailed(RuntimeError):
    """The step did not do its work; the message says why (never a token's secret half)."""


class SecretApi(Protocol):
    def create_secret(self, namespace: str, body: dict[str, Any]) -> bool: ...

    def delete_secret(self, namespace: str, name: str) -> bool: ...


class NodeApi(Protocol):
    def get_node(self, name: str) -> dict[str, Any] | None: ...

    def patch_node(self, name: str, patch: dict[str, Any]) -> dict[str, Any]: ...

    def patch_node_status(self, name: str, patch: dict[str, Any]) -> dict[str, Any]: ...

    def delete_node(self, name: str, uid: str) -> bool: ...


def device(device_id: str, provider_id: str, addresses: list[str]) -> Device:
    """The device as the Job was told it: enough for node_proof.prove."""
    return Device(id=device_id, provider_id=provider_id, state=DeviceState.GONE,
                  addresses=tuple(Address(a, EXTERNAL) for a in addresses))


# -------------------------------------------------------------------------------------------------- tokens


def create_token(api: SecretApi, key: bytes, machine: str, machine_uid: str, expires: datetime, extra_groups: str,
                 log: Callable[[str], None] = print) -> None:
    token = bootstrap.derive(key, machine_uid)
    body = bootstrap.token_secret(token, machine, machine_uid, expires, extra_groups)
    try:
        created = api.create_secret(bootstrap.TOKEN_NAMESPACE, body)
    except KubeError as exc:
        raise StepFailed(redact(f"creating bootstrap token {token.token_id}: {exc}", [token.secret, token.value])) \
            from None
    state = "created" if created else "already exists"
    log(f"bootstrap token {token.token_id} for machine {machine} {state} in {bootstrap.TOKEN_NAMESPACE} "
        f"(Secret {token.secret_name}, expires {body['stringData']['expiration']})")


def delete_token(api: SecretApi, key: bytes, machine_uid: str, log: Callable[[str], None] = print) -> None:
    token = bootstrap.derive(key, machine_uid)
    try:
        deleted = api.delete_secret(bootstrap.TOKEN_NAMESPACE, token.secret_name)
    except KubeError as exc:
        raise StepFailed(redact(f"deleting bootstrap token {token.token_id}: {exc}", [token.secret])) from None
    log(f"bootstrap token {token.token_id} {'deleted' if deleted else 'was already gone'}")


# --------------------------------------------------------------------------------------------------- nodes


def _proven_node(api: NodeApi, name: str, owner: Device, log: Callable[[str], None]) -> dict[str, Any] | None:
    try:
        node = api.get_node(name)
    except KubeError as exc:
        raise StepFailed(f"reading node {name}: {exc}") from None
    if node is None:
        log(f"No node object found for {name!r}: nothing to do")
        return None
    verdict = prove(node, owner)
    if not verdict.proven:
        log(f"{verdict.reason}: left alone")
        return None
    return node


def _conflicts(what: str, attempt: Callable[[], bool]) -> None:
    """Run `attempt` until it returns True (done), again after a 409; other API errors end the step."""
    for _ in range(CONFLICT_RETRIES):
        try:
            if attempt():
                return
        except KubeError as exc:
            if exc.status != 409:
                raise StepFailed(f"{what}: {exc}") from None
    raise StepFailed(f"{what}: the node kept changing ({CONFLICT_RETRIES} conflicts)")


def sync_node(api: NodeApi, name: str, machine: str, template: Any, owner: Device,
              log: Callable[[str], None] = print) -> None:
    """Apply the Machine's nodeTemplate and machine-name label (hooks.mcm.node_side.node_template_patch)."""
    wanted = NodeTemplate.of(template)

    def attempt() -> bool:
        node = _proven_node(api, name, owner, log)
        if node is None:
            return True
        patch = node_template_patch(node, wanted, machine)
        if patch is None:
            log(f"node {name} already carries machine {machine}'s labels, annotations and taints")
            return True
        api.patch_node(name, patch)
        changed = [k for k in ("labels", "annotations") if k in patch["metadata"]] + list(patch.get("spec", {}))
        log(f"node {name} updated from machine {machine}'s nodeTemplate: {', '.join(changed)}")
        return True

    _conflicts(f"updating node {name}", attempt)


def mark_terminating(api: NodeApi, name: str, machine_phase: str, owner: Device, now: Callable[[], datetime],
                     log: Callable[[str], None] = print) -> None:
    """MCM's Terminating condition on the Node (a strategic merge patch of its status: one condition by type)."""
    node = _proven_node(api, name, owner, log)
    if node is None:
        return
    condition = terminating_condition(node, machine_phase, now())
    try:
        api.patch_node_status(name, {"status": {"conditions": [condition]}})
    except KubeError as exc:
        if exc.status == 404:
            log(f"No node object found for {name!r}: nothing to do")
            return
        raise StepFailed(f"setting condition {condition['type']} on node {name}: {exc}") from None
    log(f"node {name}: condition {condition['type']}=True reason {condition['reason']}: {condition['message']}")


def remove_node(api: NodeApi, name: str, owner: Device, log: Callable[[str], None] = print) -> None:
    """MCM's deleteNodeObject: finalizers removed, then the Node deleted, only while it is provably the device's."""

    def attempt() -> bool:
        node = _proven_node(api, name, owner, log)
        if node is None:
            return True
        meta = node.get("metadata") or {}
        if meta.get("finalizers"):
            api.patch_node(name, {"metadata": {"finalizers": None, "resourceVersion": meta.get("resourceVersion")}})
            log(f"removed finalizers {', '.join(meta['finalizers'])} from node {name}")
        if api.delete_node(name, str(meta.get("uid") or "")):
            log(f'Deletion of Node Object "{name}" is successful')
        else:
            log(f"No node object found for {name!r}: nothing to do")
        return True

    _conflicts(f"deleting node {name}", attempt)
