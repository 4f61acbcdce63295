"""Credentials Secrets held while a MachineClass uses them (DecoratorController `metal-credentials`).

MCM's rule (`reconcileClusterSecret` and `findMachineClassForSecret` in MCM's
pkg/util/provider/machinecontroller/secret.go and secret_util.go): a Secret keeps its finalizer while any
MachineClass names it in `secretRef` or `credentialsSecretRef`; MCM matches by name among the classes of its one
namespace, whatever namespace the reference spells. Here the Secrets are the labelled ones
(`metal-machine-hooks/credentials: "true"`, the only Secrets the hooks can see), the classes are those of the
Secret's namespace, matched by name the same way, deleting classes included: their Machines' finalizers still need
the token to delete servers.

- customize asks for the MachineClasses of the Secret's namespace;
- sync writes the annotation `metal-machine-hooks/used-by` naming the classes that hold the Secret (removed when
  none does);
- finalize answers `finalized: false` while any class holds the Secret, and `true` once none does.

A Secret's values come to these hooks with every request (the Secret is the decorated object); they are
registered for redaction at once and nothing here reads or answers them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from hooks import decorator_request
from hooks.context import BadRequest, HookContext
from hooks.mcm import vocabulary as mcm

USED_BY_ANNOTATION = "metal-machine-hooks/used-by"
REFERENCE_KEYS = ("secretRef", "credentialsSecretRef")
FINALIZE_RESYNC = 30.0
NAMES_SHOWN = 10


def _secret(body: Any) -> dict[str, Any]:
    """The decorated Secret (its values are registered for redaction by the server, hooks.server.app)."""
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    obj, key = decorator_request.decorated_object(body)
    if not isinstance(obj, dict):
        raise BadRequest(f"request has no {key} object")
    meta = obj.get("metadata")
    if obj.get("kind") not in (None, "Secret") or not isinstance(meta, dict) or not meta.get("name") \
            or not meta.get("namespace"):
        raise BadRequest(f"{key} must be a Secret with a name and a namespace")
    return obj


def _classes(body: dict[str, Any]) -> list[Any]:
    related = body.get("related")
    if related is None:
        return []
    if not isinstance(related, dict):
        raise BadRequest("related must be a map")
    group = related.get(mcm.MACHINECLASS_KEY)
    if group is None:
        return []
    if not isinstance(group, dict):
        raise BadRequest(f"related[{mcm.MACHINECLASS_KEY!r}] must be a map")
    return list(group.values())


def holders(secret: Mapping[str, Any], classes: Iterable[Any]) -> list[str]:
    """Names of the MachineClasses in the Secret's namespace whose secretRef or credentialsSecretRef names it."""
    meta = secret["metadata"]
    found = set()
    for machine_class in classes:
        if not isinstance(machine_class, dict) or not isinstance(machine_class.get("metadata"), dict):
            continue
        cmeta = machine_class["metadata"]
        if cmeta.get("namespace") != meta["namespace"] or not cmeta.get("name"):
            continue
        for key in REFERENCE_KEYS:
            ref = machine_class.get(key)
            if isinstance(ref, dict) and ref.get("name") == meta["name"]:
                found.add(str(cmeta["name"]))
    return sorted(found)


def used_by_text(names: list[str]) -> str | None:
    """The annotation value: "2 machineclasses: a, b" (None removes the annotation)."""
    if not names:
        return None
    shown = ", ".join(names[:NAMES_SHOWN])
    more = f" and {len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else ""
    word = "machineclass" if len(names) == 1 else "machineclasses"
    return f"{len(names)} {word}: {shown}{more}"


def customize(body: dict[str, Any], ctx: HookContext) -> dict[str, Any]:
    """The MachineClasses of the Secret's namespace."""
    if not isinstance(body, dict) or not isinstance(body.get("parent"), dict):
        raise BadRequest("request has no parent object")
    meta = body["parent"].get("metadata")
    if not isinstance(meta, dict) or not meta.get("namespace"):
        raise BadRequest("parent.metadata must have a namespace")
    return {"relatedResources": [
        {"apiVersion": mcm.API_VERSION, "resource": "machineclasses", "namespace": meta["namespace"]},
    ]}


def sync(body: dict[str, Any], ctx: HookContext) -> dict[str, Any]:
    secret = _secret(body)
    text = used_by_text(holders(secret, _classes(body)))
    return {"labels": {}, "annotations": {USED_BY_ANNOTATION: text}, "status": None}


def finalize(body: dict[str, Any], ctx: HookContext) -> dict[str, Any]:
    """Keep the Secret while a class names it; let it go once none does."""
    secret = _secret(body)
    names = holders(secret, _classes(body))
    response: dict[str, Any] = {"labels": {}, "annotations": {USED_BY_ANNOTATION: used_by_text(names)},
                                "status": None, "finalized": not names}
    if names:
        response["resyncAfterSeconds"] = FINALIZE_RESYNC
    return response
