"""MachineClass hooks (DecoratorController `metal-machineclasses`): in-use protection and orphan collection.

- In use: while any Machine references the class (deleting ones too: their finalizer still needs the class's
  credentials to delete the device), finalize answers `finalized: false`, and the annotation
  `metal-machine-hooks/in-use-by` says which Machines hold it (MachineClass has no status subresource).
- Orphans: a device is deleted only if it carries our ownership tags AND the class's cluster tag, no Machine of the
  namespace has its owner UID (whatever class that Machine uses now) or records its device id, and it was created
  longer ago than the creation timeout. Anything else — untagged, another cluster's, fresh — is never touched.
  The count and time of a run that deleted something are written as annotations; a run that deleted nothing
  changes nothing, so an idle class gets an unchanged response.
- Every Machine change re-syncs the class (they are related objects), so devices are listed at most once per
  SCAN_INTERVAL per class and hook process; the rate limit is the only state kept, and losing it costs one listing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from hooks import decorator_request, mcm, metrics, providerspec, tags
from hooks.config import CREDENTIALS_LABEL, CREDENTIALS_LABEL_VALUE
from hooks.context import BadRequest, HookContext
from hooks.exceptions import MetalError, NotFound
from hooks.machineset import names_list, plural
from hooks.timefmt import format_time, parse_time

log = logging.getLogger("hooks.machineclass")

MACHINE_KEY = f"Machine.{mcm.API_VERSION}"
IN_USE_ANNOTATION = "metal-machine-hooks/in-use-by"
ORPHANS_ANNOTATION = "metal-machine-hooks/orphans-collected"
ORPHANS_AT_ANNOTATION = "metal-machine-hooks/orphans-collected-at"
SCAN_PROBLEM_ANNOTATION = "metal-machine-hooks/orphan-scan-problem"
DEVICE_ID_ANNOTATION = "metal-machine-hooks/device-id"
PROVIDER_ID_SCHEME = "equinixmetal://"
SCAN_INTERVAL = 240.0  # seconds; below the controller's 300 s resync period, so every periodic resync may scan
FINALIZE_RESYNC = 30.0
GONE_STATES = ("deprovisioning", "deleted")
_SCANS = "machineclass.last_scan"


# ------------------------------------------------------------------------------------------------------ requests


def _object(body: Any, key: str) -> dict[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.get(key), dict):
        raise BadRequest(f"request has no {key} object")
    obj = body[key]
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or not meta.get("name") or not meta.get("namespace"):
        raise BadRequest(f"{key}.metadata must have a name and a namespace")
    return obj


def _decorated(body: Any) -> dict[str, Any]:
    """The MachineClass of a sync/finalize request: `object`, in v1 and v2 requests alike."""
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return _object(body, decorator_request.decorated_object(body)[1])


def _related(body: dict[str, Any]) -> Mapping[str, Any]:
    related = body.get("related")
    if related is None:
        return {}
    if not isinstance(related, dict):
        raise BadRequest("related must be a map")
    return related


def customize(body: dict[str, Any], ctx: HookContext) -> dict[str, Any]:
    """Every Machine of the class's namespace, and the labelled credentials Secrets there (as the Machine hooks)."""
    namespace = _object(body, "parent")["metadata"]["namespace"]
    return {"relatedResources": [
        {"apiVersion": mcm.API_VERSION, "resource": "machines", "namespace": namespace},
        {"apiVersion": "v1", "resource": "secrets", "namespace": namespace,
         "labelSelector": {"matchLabels": {CREDENTIALS_LABEL: CREDENTIALS_LABEL_VALUE}}},
    ]}


# ------------------------------------------------------------------------------------------------------ in use


def users(machine_class: dict[str, Any], machines: Iterable[Any]) -> list[str]:
    """Names of the Machines (in the class's namespace) whose spec.class names this class."""
    meta = machine_class["metadata"]
    found = []
    for machine in machines:
        if not isinstance(machine, dict):
            continue
        mmeta = machine.get("metadata") if isinstance(machine.get("metadata"), dict) else {}
        ref = (machine.get("spec") or {}).get("class") if isinstance(machine.get("spec"), dict) else None
        if not isinstance(ref, dict) or mmeta.get("namespace") != meta["namespace"]:
            continue
        if ref.get("name") == meta["name"] and ref.get("kind") in (None, "", "MachineClass"):
            found.append(str(mmeta.get("name")))
    return sorted(found)


def in_use_text(names: list[str]) -> str | None:
    return f"{plural(len(names), 'machine')}: {names_list(names)}" if names else None


# ------------------------------------------------------------------------------------------------------ orphans


def known_owners(machines: Iterable[Any]) -> tuple[set[str], set[str]]:
    """(Machine UIDs, device ids recorded on Machines) of every Machine in the namespace, any class."""
    uids: set[str] = set()
    devices: set[str] = set()
    for machine in machines:
        if not isinstance(machine, dict):
            continue
        meta = machine.get("metadata") if isinstance(machine.get("metadata"), dict) else {}
        if meta.get("uid"):
            uids.add(str(meta["uid"]))
        annotations = meta.get("annotations") if isinstance(meta.get("annotations"), dict) else {}
        if annotations.get(DEVICE_ID_ANNOTATION):
            devices.add(str(annotations[DEVICE_ID_ANNOTATION]).strip())
        provider_id = (machine.get("spec") or {}).get("providerID") if isinstance(machine.get("spec"), dict) else None
        if isinstance(provider_id, str) and provider_id.startswith(PROVIDER_ID_SCHEME):
            devices.add(provider_id.rstrip("/").rsplit("/", 1)[-1])
    return uids, devices


def orphans(devices: Iterable[dict[str, Any]], cluster_tag: str, machine_uids: set[str], device_ids: set[str],
            now: datetime, grace_seconds: float) -> list[dict[str, Any]]:
    """The devices that are ours, this cluster's, owned by no existing Machine, and old enough to be sure."""
    found = []
    for device in devices:
        device_tags = device.get("tags") if isinstance(device.get("tags"), list) else []
        owner = tags.owner_uid(device_tags)
        if owner is None or cluster_tag not in device_tags:
            continue
        if owner in machine_uids or str(device.get("id")) in device_ids:
            continue
        if device.get("state") in GONE_STATES:
            continue
        created = parse_time(device.get("created_at"))
        if created is None or (now - created).total_seconds() < grace_seconds:
            continue
        found.append(device)
    return sorted(found, key=lambda d: str(d.get("id")))


def _scan_target(machine_class: dict[str, Any], related: Mapping[str, Any]) -> tuple[Any, str, str] | str:
    """(credentials, project, cluster tag) for a scan, or why this class is not scanned."""
    if machine_class.get("provider") != mcm.PROVIDER:
        return f"not scanned: provider is {machine_class.get('provider')!r}, not {mcm.PROVIDER!r}"
    raw = machine_class.get("providerSpec") if isinstance(machine_class.get("providerSpec"), dict) else {}
    folded, _ = providerspec.fold_keys(raw)
    project = folded.get("projectID")
    class_tags = folded.get("tags") if isinstance(folded.get("tags"), list) else []
    cluster = tags.cluster_tag(t for t in class_tags if isinstance(t, str))
    if not isinstance(project, str) or not project:
        return "not scanned: providerSpec.projectID is missing"
    if not cluster:
        return (f"not scanned: providerSpec.tags has no {tags.CLUSTER_TAG_MARKER} tag, so this cluster's devices "
                "cannot be told apart from others'")
    namespace = machine_class["metadata"]["namespace"]
    creds, access, _ = providerspec.credentials(machine_class, namespace, related.get(mcm.SECRET_KEY) or {})
    if creds is None:
        return "not scanned: " + "; ".join(access or ["no API token"])
    return creds, project, cluster


def collect(client: Any, project: str, cluster: str, machines: list[Any], now: datetime,
            grace_seconds: float) -> tuple[list[dict[str, Any]], str | None]:
    """Delete this cluster's orphaned devices; return (deleted devices, first problem met)."""
    uids, device_ids = known_owners(machines)
    try:
        listed = client.list_devices(project, tag=tags.MANAGED_TAG)
    except MetalError as exc:
        return [], f"listing devices of project {project} failed: {exc}"
    deleted: list[dict[str, Any]] = []
    problem = None
    for device in orphans(listed, cluster, uids, device_ids, now, grace_seconds):
        try:
            client.delete_device(str(device["id"]))
        except NotFound:
            continue
        except MetalError as exc:
            problem = problem or f"deleting orphaned device {device.get('id')} failed: {exc}"
            continue
        log.info("deleted orphaned device %s (hostname %s, owner uid %s)", device.get("id"), device.get("hostname"),
                 tags.owner_uid(device.get("tags") or []))
        deleted.append(device)
    metrics.orphans_collected(len(deleted))
    return deleted, problem


def _scan_due(ctx: HookContext, uid: str, now: datetime) -> bool:
    scans: dict[str, datetime] = ctx.extras.setdefault(_SCANS, {})
    last = scans.get(uid)
    if last is not None and 0 <= (now - last).total_seconds() < SCAN_INTERVAL:
        return False
    scans[uid] = now
    return True


def orphan_annotations(machine_class: dict[str, Any], related: Mapping[str, Any], machines: list[Any],
                       ctx: HookContext, now: datetime) -> dict[str, str | None]:
    """The annotation changes of one orphan scan (a class that cannot be scanned says why, every time)."""
    meta = machine_class["metadata"]
    target = _scan_target(machine_class, related)
    if isinstance(target, str):
        return {SCAN_PROBLEM_ANNOTATION: target}
    if not _scan_due(ctx, str(meta.get("uid") or f"{meta['namespace']}/{meta['name']}"), now):
        # Not due: repeat what the last scan wrote, so a quiet class gets the same answer every time.
        observed = meta.get("annotations") if isinstance(meta.get("annotations"), dict) else {}
        last = observed.get(SCAN_PROBLEM_ANNOTATION)
        return {SCAN_PROBLEM_ANNOTATION: last if isinstance(last, str) else None}
    creds, project, cluster = target
    deleted, problem = collect(ctx.metal(creds.token), project, cluster, machines, now,
                               ctx.settings.creation_timeout)
    out: dict[str, str | None] = {SCAN_PROBLEM_ANNOTATION: problem}
    if deleted:
        out[ORPHANS_ANNOTATION] = str(len(deleted))
        out[ORPHANS_AT_ANNOTATION] = format_time(now)
    return out


# ------------------------------------------------------------------------------------------------------ hooks


def _machines(related: Mapping[str, Any]) -> list[Any]:
    group = related.get(MACHINE_KEY) or {}
    if not isinstance(group, dict):
        raise BadRequest(f"related[{MACHINE_KEY!r}] must be a map")
    return list(group.values())


def sync(body: dict[str, Any], ctx: HookContext) -> dict[str, Any]:
    machine_class = _decorated(body)
    related = _related(body)
    machines = _machines(related)
    now = ctx.clock()
    annotations: dict[str, str | None] = {IN_USE_ANNOTATION: in_use_text(users(machine_class, machines))}
    annotations.update(orphan_annotations(machine_class, related, machines, ctx, now))
    return {"labels": {}, "annotations": annotations, "status": None}


def finalize(body: dict[str, Any], ctx: HookContext) -> dict[str, Any]:
    """Hold the class while Machines use it; a last orphan scan before it goes (its devices would leak)."""
    machine_class = _decorated(body)
    related = _related(body)
    machines = _machines(related)
    holders = users(machine_class, machines)
    annotations: dict[str, str | None] = {IN_USE_ANNOTATION: in_use_text(holders)}
    if holders:
        return {"labels": {}, "annotations": annotations, "status": None, "resyncAfterSeconds": FINALIZE_RESYNC,
                "finalized": False}
    annotations.update(orphan_annotations(machine_class, related, machines, ctx, ctx.clock()))
    return {"labels": {}, "annotations": annotations, "status": None, "finalized": True}
