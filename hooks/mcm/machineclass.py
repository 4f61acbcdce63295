"""MachineClass hooks (DecoratorController `metal-machineclasses`): in-use protection and orphan collection.

- Related Machines: only the class's own. The Machine hook labels every Machine `metal-machine-hooks/class:
  <class>`, and the class relates the Machines with its label plus those with no label yet (a Machine whose first
  sync has not run, or every Machine right after an upgrade), so one Machine change re-syncs one class, not all
  of the namespace's. A class being deleted relates every Machine of its namespace (Kubernetes bumps
  `metadata.generation` when it sets `deletionTimestamp`, so Metacontroller asks customize again): a label that
  is stale or wrong can never let a class go while a Machine still names it.
- In use: while any related Machine's spec.class names the class (deleting ones too: their finalizer still needs
  the class's credentials to delete the device), finalize answers `finalized: false`, and the annotation
  `metal-machine-hooks/in-use-by` says which Machines hold it (MachineClass has no status subresource).
- Orphans, decided here from what the provider driver (`ctx.driver`, hooks.driver) lists: a device is deleted only
  if the driver lists it for this class's installation, it is marked for this class (or for no class yet), no
  related Machine has its owner UID or records its id, it is older than the creation timeout, and it was found
  so on two scans at least ORPHAN_CONFIRM_SECONDS apart (first sightings are kept in the annotation
  `metal-machine-hooks/orphan-candidates`, since hooks keep no state). In between, the class a Machine now uses
  claims its device (re-marks it), so a Machine that moved to another class never loses its device. A class
  claims the devices of its own Machines that carry another class's mark or none.
- Tenancy: the driver lists only devices marked for this installation (hooks.mcm.installation: INSTALLATION_ID or
  the kube-system Namespace UID, related here) and this class's namespace; without an installation id nothing is
  scanned. One scan deletes at most `Settings.orphan_deletions_per_scan` devices (ORPHAN_DELETIONS_PER_SCAN, 10);
  the rest stay candidates for the next scan, and the count and the reason go into annotations and logs.
- Devices are listed at most once per SCAN_INTERVAL per class and hook process; a sync that does not scan repeats
  what the last scan wrote, so an idle class gets an unchanged response.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hooks import decorator_request, events, objects
from hooks.config import CREDENTIALS_LABEL, CREDENTIALS_LABEL_VALUE
from hooks.context import BadRequest, HookContext
from hooks.driver import ClassRequest, Device, DeviceState, Driver, DriverError
from hooks.mcm import installation
from hooks.mcm import vocabulary as mcm
from hooks.mcm.text import names_list, plural
from hooks.mcm.timefmt import format_time, parse_time

log = logging.getLogger("hooks.machineclass")

MACHINE_KEY = mcm.MACHINE_KEY
CLASS_LABEL = "metal-machine-hooks/class"
IN_USE_ANNOTATION = "metal-machine-hooks/in-use-by"
ORPHANS_ANNOTATION = "metal-machine-hooks/orphans-collected"
ORPHANS_AT_ANNOTATION = "metal-machine-hooks/orphans-collected-at"
SCAN_PROBLEM_ANNOTATION = "metal-machine-hooks/orphan-scan-problem"
CANDIDATES_ANNOTATION = "metal-machine-hooks/orphan-candidates"
# Why the last scan deleted what it deleted (and how many it left for the next scan under the per-scan limit).
ORPHANS_REASON_ANNOTATION = "metal-machine-hooks/orphans-collected-reason"
SCAN_INTERVAL = 240.0  # seconds; below the controller's 300 s resync period, so every periodic resync may scan
# Two sightings of an orphan must be this far apart: more than two resync periods of the class a moved Machine
# now uses, which claims its device in between.
ORPHAN_CONFIRM_SECONDS = 600.0
MAX_CANDIDATES = 100  # first sightings kept per class (about 60 bytes each); more wait for a later scan
FINALIZE_RESYNC = 30.0
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


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


def class_label_value(class_name: str) -> str:
    """The value of CLASS_LABEL for Machines of `class_name`: the name itself when it is a valid label value
    (63 characters at most), else a readable prefix and a hash. The Machine hook and customize both use this."""
    if _LABEL_VALUE.match(class_name) and len(class_name) <= 63:
        return class_name
    digest = hashlib.sha256(class_name.encode()).hexdigest()[:10]
    prefix = re.sub(r"[^A-Za-z0-9._-]", "", class_name)[:52].strip("-._")
    return f"{prefix}-{digest}" if prefix else digest


def machine_class_label(machine: Any) -> str:
    """CLASS_LABEL's value for a Machine: its class's, or "" when it names no MachineClass (so it is labelled and
    no class has to relate it as 'not labelled yet')."""
    ref = objects.mapping(machine, "spec", "class")
    name = objects.string(ref, "name")
    if not name or objects.string(ref, "kind") not in ("", "MachineClass"):
        return ""
    return class_label_value(name)


def customize(body: dict[str, Any], ctx: HookContext) -> dict[str, Any]:
    """The class's own Machines (labelled for it, or not labelled yet) — every Machine of the namespace once the
    class is being deleted — and the labelled credentials Secrets of the namespace (as the Machine hooks)."""
    parent = _object(body, "parent")
    namespace = parent["metadata"]["namespace"]
    machines: dict[str, Any] = {"apiVersion": mcm.API_VERSION, "resource": "machines", "namespace": namespace}
    if objects.meta(parent).get("deletionTimestamp"):
        machine_rules = [machines]
    else:
        machine_rules = [
            {**machines, "labelSelector": {"matchLabels": {CLASS_LABEL: class_label_value(objects.name(parent))}}},
            {**machines, "labelSelector": {"matchExpressions": [{"key": CLASS_LABEL, "operator": "DoesNotExist"}]}},
        ]
    return {"relatedResources": [
        *machine_rules,
        {"apiVersion": "v1", "resource": "secrets", "namespace": namespace,
         "labelSelector": {"matchLabels": {CREDENTIALS_LABEL: CREDENTIALS_LABEL_VALUE}}},
        *installation.related_rules(ctx.settings),
    ]}


# ------------------------------------------------------------------------------------------------------ in use


def users(machine_class: dict[str, Any], machines: Iterable[Any]) -> list[str]:
    """Names of the Machines (in the class's namespace) whose spec.class names this class."""
    found = []
    for machine in machines:
        ref = objects.mapping(machine, "spec", "class")
        if not ref or objects.namespace(machine) != objects.namespace(machine_class):
            continue
        if objects.string(ref, "name") == objects.name(machine_class) and ref.get("kind") in (None, "", "MachineClass"):
            found.append(objects.name(machine))
    return sorted(found)


def in_use_text(names: list[str]) -> str | None:
    return f"{plural(len(names), 'machine')}: {names_list(names)}" if names else None


# ------------------------------------------------------------------------------------------------------ orphans


RecordedId = Callable[[Mapping[str, Any]], str | None]


def known_owners(machines: Iterable[Any], recorded_id: RecordedId) -> tuple[set[str], set[str]]:
    """(UIDs, recorded device ids) of the given Machines. Both the hooks' annotation and spec.providerID count
    (they may disagree on a Machine MCM made), each read by the driver, the one place that parses a providerID."""
    uids: set[str] = set()
    devices: set[str] = set()
    for machine in machines:
        if objects.uid(machine):
            uids.add(objects.uid(machine))
        for view in (machine, {"spec": objects.mapping(machine, "spec")}):
            recorded = recorded_id(view) if isinstance(machine, dict) else None
            if recorded:
                devices.add(recorded)
    return uids, devices


def parse_candidates(text: Any) -> dict[str, datetime]:
    """`id=time,...` as CANDIDATES_ANNOTATION holds it; malformed entries are dropped (they are seen again)."""
    found: dict[str, datetime] = {}
    for entry in text.split(",") if isinstance(text, str) else ():
        device_id, _, seen = entry.strip().partition("=")
        moment = parse_time(seen)
        if device_id and moment is not None:
            found[device_id] = moment
    return found


def format_candidates(candidates: Mapping[str, datetime]) -> str | None:
    return ",".join(f"{i}={format_time(t)}" for i, t in sorted(candidates.items())) or None


@dataclass
class ScanPlan:
    """What one scan decided: devices to claim, first sightings to keep, and orphans confirmed for deletion."""

    claims: list[Device] = field(default_factory=list)
    candidates: dict[str, datetime] = field(default_factory=dict)
    confirmed: list[Device] = field(default_factory=list)


def plan_scan(machine_class: dict[str, Any], devices: Iterable[Device], machines: list[Any],
              seen_before: Mapping[str, datetime], now: datetime, grace_seconds: float,
              recorded_id: RecordedId) -> ScanPlan:
    """The pure orphan decision over one listing; see the module docstring for the rules. `recorded_id` is the
    driver's reading of the device id a Machine records."""
    name = objects.name(machine_class)
    own = set(users(machine_class, machines))
    own_uids = {objects.uid(m) for m in machines if objects.name(m) in own and objects.uid(m)}
    uids, device_ids = known_owners(machines, recorded_id)
    plan = ScanPlan()
    found: list[tuple[datetime, Device]] = []
    for device in devices:
        if device.state is DeviceState.GONE or device.owner_uid is None:
            continue
        if device.owner_class != name and device.owner_uid in own_uids:
            plan.claims.append(device)  # by owner UID only: a recorded id whose device is not its own is no claim
        if device.owner_uid in uids or device.id in device_ids or device.owner_class not in (name, None):
            continue
        if device.created_at is None or (now - device.created_at).total_seconds() < grace_seconds:
            continue
        first = seen_before.get(device.id)
        if first is not None and not device.created_at <= first <= now:
            first = None  # a sighting before the device existed, or in the future, is no sighting
        if first is not None and (now - first).total_seconds() >= ORPHAN_CONFIRM_SECONDS:
            plan.confirmed.append(device)
        else:
            found.append((first or now, device))
    for first, device in sorted(found, key=lambda pair: (pair[0], pair[1].id))[:MAX_CANDIDATES]:
        plan.candidates[device.id] = first
    return plan


def _scan_due(ctx: HookContext, uid: str, now: datetime) -> bool:
    scans: dict[str, datetime] = ctx.runtime.scan_times
    last = scans.get(uid)
    if last is not None and 0 <= (now - last).total_seconds() < SCAN_INTERVAL:
        return False
    scans[uid] = now
    return True


def limit_deletions(plan: ScanPlan, seen_before: Mapping[str, datetime], limit: int) -> list[Device]:
    """Keep at most `limit` confirmed orphans (oldest sighting first) in the plan; the others go back to the
    candidates with their first sighting, for the next scan. Returns the deferred devices."""
    ordered = sorted(plan.confirmed, key=lambda d: (seen_before[d.id], d.id))
    plan.confirmed, deferred = ordered[:max(limit, 0)], ordered[max(limit, 0):]
    for device in deferred:
        plan.candidates[device.id] = seen_before[device.id]
    return deferred


def collected_reason(machine_class: Mapping[str, Any], deleted: list[Device], deferred: list[Device],
                     limit: int) -> str | None:
    """The words for ORPHANS_REASON_ANNOTATION and the log: why these devices were deleted, and what waits."""
    if not deleted and not deferred:
        return None
    where = f"{objects.namespace(machine_class)}/{objects.name(machine_class)}"
    text = ""
    if deleted:
        text = (f"deleted {plural(len(deleted), 'device')} ({names_list([d.id for d in deleted])}): marked for this "
                f"installation, namespace and class {where}, no Machine has their owner UID or records their id, "
                f"and they were found so on two scans at least {int(ORPHAN_CONFIRM_SECONDS)} s apart")
    if deferred:
        text += ("; " if text else "") + (f"{plural(len(deferred), 'more orphan')} left for the next scan: at most "
                                          f"{limit} deletions per scan (ORPHAN_DELETIONS_PER_SCAN)")
    return text


def _apply(driver: Driver, request: ClassRequest, plan: ScanPlan, seen_before: Mapping[str, datetime]
           ) -> tuple[list[Device], str | None]:
    """Claims, then deletions; returns (deleted devices, first problem). A failed deletion stays a candidate."""
    problem = None
    for device in plan.claims:
        try:
            driver.claim_machine(request, device)
        except DriverError as exc:
            problem = problem or exc.message
    deleted: list[Device] = []
    for device in plan.confirmed:
        try:
            if driver.delete_orphan(request, device):
                deleted.append(device)
        except DriverError as exc:
            problem = problem or exc.message
            plan.candidates[device.id] = seen_before[device.id]
    events.emit(events.ORPHANS_COLLECTED, len(deleted))
    return deleted, problem


def orphan_annotations(machine_class: dict[str, Any], related: Mapping[str, Any], machines: list[Any],
                       ctx: HookContext, now: datetime) -> dict[str, str | None]:
    """The annotation changes of one orphan scan (a class that cannot be scanned says why, every time)."""
    driver = ctx.driver
    if driver is None:
        return {SCAN_PROBLEM_ANNOTATION: "not scanned: no provider driver is configured", CANDIDATES_ANNOTATION: None}
    if machine_class.get("provider") != driver.provider:
        return {SCAN_PROBLEM_ANNOTATION: f"not scanned: provider is {machine_class.get('provider')!r}, "
                                         f"not {driver.provider!r}", CANDIDATES_ANNOTATION: None}
    observed = objects.annotations(machine_class)
    key = objects.uid(machine_class) or f"{objects.namespace(machine_class)}/{objects.name(machine_class)}"
    if not _scan_due(ctx, key, now):
        # Not due: repeat what the last scan wrote, so a quiet class gets the same answer every time.
        return {k: observed[k] if isinstance(observed.get(k), str) else None
                for k in (SCAN_PROBLEM_ANNOTATION, CANDIDATES_ANNOTATION)}
    install = installation.installation_id(ctx.settings, related)
    if not install:
        return {SCAN_PROBLEM_ANNOTATION: f"not scanned: {installation.MISSING}",
                CANDIDATES_ANNOTATION: observed.get(CANDIDATES_ANNOTATION)
                if isinstance(observed.get(CANDIDATES_ANNOTATION), str) else None}
    request = ClassRequest(machine_class, objects.mapping(related, mcm.SECRET_KEY), installation_id=install)
    try:
        devices = driver.list_machines(request)
    except DriverError as exc:
        return {SCAN_PROBLEM_ANNOTATION: exc.message, CANDIDATES_ANNOTATION: observed.get(CANDIDATES_ANNOTATION)
                if isinstance(observed.get(CANDIDATES_ANNOTATION), str) else None}
    seen_before = parse_candidates(observed.get(CANDIDATES_ANNOTATION))
    plan = plan_scan(machine_class, devices, machines, seen_before, now, ctx.settings.creation_timeout,
                     driver.recorded_device_id)
    limit = ctx.settings.orphan_deletions_per_scan
    deferred = limit_deletions(plan, seen_before, limit)
    deleted, problem = _apply(driver, request, plan, seen_before)
    for device in deleted:
        log.info("class %s/%s collected orphaned device %s (owner uid %s)", objects.namespace(machine_class),
                 objects.name(machine_class), device.id, device.owner_uid)
    reason = collected_reason(machine_class, deleted, deferred, limit)
    if reason:
        log.info("class %s/%s orphan scan: %s", objects.namespace(machine_class), objects.name(machine_class), reason)
    out: dict[str, str | None] = {SCAN_PROBLEM_ANNOTATION: problem,
                                  CANDIDATES_ANNOTATION: format_candidates(plan.candidates)}
    if deleted or deferred:
        out[ORPHANS_ANNOTATION] = str(len(deleted))
        out[ORPHANS_AT_ANNOTATION] = format_time(now)
        out[ORPHANS_REASON_ANNOTATION] = reason
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
    """Hold the class while Machines use it, then until its orphan candidates are confirmed and collected (its
    devices would leak once the class is gone); a scan problem does not hold it."""
    machine_class = _decorated(body)
    related = _related(body)
    machines = _machines(related)
    holders = users(machine_class, machines)
    annotations: dict[str, str | None] = {IN_USE_ANNOTATION: in_use_text(holders)}
    if holders:
        return {"labels": {}, "annotations": annotations, "status": None, "resyncAfterSeconds": FINALIZE_RESYNC,
                "finalized": False}
    annotations.update(orphan_annotations(machine_class, related, machines, ctx, ctx.clock()))
    if annotations.get(CANDIDATES_ANNOTATION) and not annotations.get(SCAN_PROBLEM_ANNOTATION):
        return {"labels": {}, "annotations": annotations, "status": None, "resyncAfterSeconds": FINALIZE_RESYNC,
                "finalized": False}
    return {"labels": {}, "annotations": annotations, "status": None, "finalized": True}
