"""The DecoratorController `metal-machines`: one Equinix Metal device per MCM Machine.

Hooks (all Metacontroller hook version v2, related keys `namespace/name`):

* customize asks for the Machine's MachineClass, the credentials Secrets of the Machine's namespace (label
  `metal-machine-hooks/credentials: "true"`) and the Node named like the Machine.
* sync finds the Machine's device (by the id recorded on the Machine, else by the ownership tag
  `metal-machine-hooks:uid:<uid>`), creates it when there is none (at most once per sync), and reports MCM's
  status: phase, lastOperation, addresses and the Node's conditions.
* finalize first drains the Machine's Node with a Job attachment (hooks.drain decides; docs/drain.md), shows each
  drain outcome in lastOperation before the next step, then deletes every device that carries the Machine's
  ownership tag and answers `finalized: true` only once none is left. A Machine without any device is let go in
  its first finalize call.

What the hooks write on a Machine:

* annotation `metal-machine-hooks/device-id: <uuid>` and `metal-machine-hooks/provider-id:
  equinixmetal://<metro>/<uuid>` (a decorator cannot write `spec.providerID`; a `spec.providerID` set by a user
  or by MCM is read as well);
* label `node: <machine name>` (the device hostname is the Machine name, so is the Node's name);
* annotation `machinepriority.machine.sapcloud.io: "3"` when missing;
* annotation `metal-machine-hooks/ignored-keys: <comma list>` naming providerSpec keys that are ignored
  (such as `facilities`), removed again when there are none.

Opt-out: annotation `metal-machine-hooks/skip-device-cleanup: "true"` on a Machine makes finalize let it go at
once without looking for or deleting its device. It is meant for the case where the credentials are gone and the
user knows the device is gone too; otherwise a Machine whose device may still run stays Terminating.

Finalize rule without a tag lookup: a device can exist even when the Machine never recorded one (an earlier
create whose answer was lost leaves a device known only by its tag). So finalize answers `finalized: true` only
after a tag lookup came back empty; when the lookup is impossible (no class, no Secret, no token, no project,
401 or 403) the Machine stays Terminating with a message naming the problem and the opt-out annotation.

A Machine whose class, Secret or name has a problem and that has no device recorded costs no API call: its
status names every problem (InvalidArgument) and nothing is created. A device left behind by an earlier lost
create answer is found by its tag once the problem is fixed, or by finalize.

Request shape: a sync/finalize request carries the Machine under `object` and the drain Jobs under `attachments`
(Metacontroller's DecoratorHookRequest, v1 and v2 alike); a body without `object` is a 400 (hooks.decorator_request).
A body whose related keys lack the namespace ("name" instead of "namespace/name") comes from a
hook configured with version v1, which also drops objects from other namespaces; such a request is answered
with HTTP 400 naming the fix, as is any body that is not a Metacontroller decorator request for a Machine.

MCM's "no target cluster" mode is `Settings.no_target_cluster` (env `NO_TARGET_CLUSTER=true`): an active device
makes the Machine `Available`, no Node is awaited and no `node` label is written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

from hooks import decorator_request, device_cache, mcm, tags
from hooks.config import CREDENTIALS_LABEL, CREDENTIALS_LABEL_VALUE, ConfigError
from hooks.context import BadRequest, HookContext
from hooks.drain import INITIATE_DRAIN, INITIATE_VM_DELETION, JOB_KEY, DrainSettings, plan_drain
from hooks.exceptions import (
    CapacityError,
    MetalError,
    NotFound,
    RateLimited,
    ServerError,
    TransportError,
    UnexpectedResponse,
    Unprocessable,
)
from hooks.machine_status import (
    Operation,
    backoff,
    build_status,
    describe_conditions,
    device_addresses,
    node_conditions,
    node_has_critical_taint,
    node_is_healthy,
    observed_operation,
    observed_phase,
)
from hooks.providerspec import Resolution, resolve
from hooks.timefmt import format_time, go_duration, parse_duration, parse_time

log = logging.getLogger("hooks.machine")

DEVICE_ID_ANNOTATION = "metal-machine-hooks/device-id"
PROVIDER_ID_ANNOTATION = "metal-machine-hooks/provider-id"
IGNORED_KEYS_ANNOTATION = "metal-machine-hooks/ignored-keys"
SKIP_CLEANUP_ANNOTATION = "metal-machine-hooks/skip-device-cleanup"
PROVIDER_ID_SCHEME = "equinixmetal://"
MACHINE_NAME_PLACEHOLDER = "<<MACHINE_NAME>>"

# Seconds until the next look while something is moving; steady phases rely on the controller's resyncPeriodSeconds.
PROVISIONING_RESYNC = 10.0
AWAIT_NODE_RESYNC = 30.0
UNKNOWN_OUTCOME_RESYNC = 5.0
DELETING_RESYNC = 5.0
HEALTH_RECHECK = 60.0
# Longest resync we ask for. A Retry-After far in the future must not become a Go time.Duration that overflows in
# Metacontroller (on amd64 it turns negative: an immediate re-queue); resyncPeriodSeconds still applies anyway.
MAX_RESYNC = 3600.0

CREATION_PHASES = ("", mcm.PENDING, mcm.CRASH_LOOP)
GONE_STATES = ("deprovisioning", "deleted")
# Errors after which a create may or may not have happened.
AMBIGUOUS = (TransportError, ServerError, UnexpectedResponse)


@dataclass(frozen=True)
class MachineRequest:
    """A checked decorator request: the Machine, the v2 related map and whether it is a finalize."""

    machine: dict[str, Any]
    related: dict[str, Any]
    attachments: dict[str, Any] = field(default_factory=dict)

    @property
    def meta(self) -> dict[str, Any]:
        return self.machine["metadata"]

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def namespace(self) -> str:
        return self.meta["namespace"]

    @property
    def uid(self) -> str:
        return self.meta.get("uid") or ""

    @property
    def annotations(self) -> dict[str, Any]:
        return self.meta.get("annotations") or {}

    @property
    def labels(self) -> dict[str, Any]:
        return self.meta.get("labels") or {}

    @property
    def spec(self) -> dict[str, Any]:
        return self.machine.get("spec") or {}

    @property
    def status(self) -> dict[str, Any]:
        return self.machine.get("status") or {}

    @property
    def node(self) -> dict[str, Any] | None:
        node = (self.related.get(mcm.NODE_KEY) or {}).get(self.name)
        return node if isinstance(node, dict) else None


def _check_machine(obj: Any, where: str, *, need_uid: bool) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise BadRequest(f"request has no '{where}' object: this route expects a Metacontroller request for a Machine")
    if obj.get("kind") not in (None, "Machine") or obj.get("apiVersion") not in (None, mcm.API_VERSION):
        raise BadRequest(
            f"'{where}' is a {obj.get('apiVersion')} {obj.get('kind')}, expected a {mcm.API_VERSION} Machine"
        )
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        raise BadRequest(f"'{where}.metadata' must be an object")
    for key in ("name", "namespace", *(("uid",) if need_uid else ())):
        if not isinstance(meta.get(key), str) or not meta[key]:
            raise BadRequest(f"'{where}.metadata.{key}' must be a non-empty string")
    for key in ("labels", "annotations"):
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            raise BadRequest(f"'{where}.metadata.{key}' must be an object")
    for key in ("spec", "status"):
        if obj.get(key) is not None and not isinstance(obj[key], dict):
            raise BadRequest(f"'{where}.{key}' must be an object")
    return obj


def parse_request(body: Any) -> MachineRequest:
    """Check the shape of a sync/finalize request; anything that is not one is a 400, not a status."""
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    machine = _check_machine(*decorator_request.decorated_object(body), need_uid=True)
    related = body.get("related")
    if related is None:
        related = {}
    if not isinstance(related, dict) or not all(v is None or isinstance(v, dict) for v in related.values()):
        raise BadRequest("'related' must map 'Kind.group/version' to objects keyed by 'namespace/name'")
    for kind_key in (mcm.MACHINECLASS_KEY, mcm.SECRET_KEY):
        for key in related.get(kind_key) or {}:
            if "/" not in key:
                raise BadRequest(
                    f"related {kind_key} key {key!r} has no namespace: the hooks of DecoratorController "
                    "metal-machines must use version: v2 (keys 'namespace/name')"
                )
    attachments, attachments_key = decorator_request.attachments(body)
    if attachments is None:
        attachments = {}
    if not isinstance(attachments, dict) or not all(v is None or isinstance(v, dict) for v in attachments.values()):
        raise BadRequest(f"'{attachments_key}' must map 'Kind.group/version' to objects keyed by 'namespace/name'")
    return MachineRequest(
        machine=machine,
        related={k: v or {} for k, v in related.items()},
        attachments={k: v or {} for k, v in attachments.items()},
    )


# ---------------------------------------------------------------------------------------------------------- customize


def customize(body: dict[str, Any], ctx: HookContext) -> dict[str, Any]:
    """Related objects: the MachineClass, the labelled Secrets of the Machine's namespace, the Machine's Node.

    `names` and `labelSelector` are never sent together (Metacontroller rejects that rule, even with an empty selector).
    """
    parent = _check_machine(body.get("parent") if isinstance(body, dict) else None, "parent", need_uid=False)
    meta = parent["metadata"]
    class_ref = (parent.get("spec") or {}).get("class")
    class_name = class_ref.get("name") if isinstance(class_ref, dict) else None
    rules: list[dict[str, Any]] = []
    if isinstance(class_name, str) and class_name:
        rules.append(
            {"apiVersion": mcm.API_VERSION, "resource": "machineclasses", "namespace": meta["namespace"],
             "names": [class_name]}
        )
    rules.append(
        {"apiVersion": "v1", "resource": "secrets", "namespace": meta["namespace"],
         "labelSelector": {"matchLabels": {CREDENTIALS_LABEL: CREDENTIALS_LABEL_VALUE}}}
    )
    rules.append({"apiVersion": "v1", "resource": "nodes", "names": [meta["name"]]})
    return {"relatedResources": rules}


# ------------------------------------------------------------------------------------------------------ device lookup


def recorded_device_id(req: MachineRequest) -> str | None:
    """The device id written on the Machine: our annotation first, else an `equinixmetal://` spec.providerID."""
    annotated = req.annotations.get(DEVICE_ID_ANNOTATION)
    if isinstance(annotated, str) and annotated.strip():
        return annotated.strip()
    provider_id = req.spec.get("providerID")
    if isinstance(provider_id, str) and provider_id.startswith(PROVIDER_ID_SCHEME):
        last = provider_id.rstrip("/").rsplit("/", 1)[-1]
        if last and last != provider_id:
            return last
    return None


def provider_id(device: dict[str, Any], fallback_metro: str) -> str:
    metro = device.get("metro")
    code = metro.get("code") if isinstance(metro, dict) else None
    return f"{PROVIDER_ID_SCHEME}{code or fallback_metro}/{device['id']}"


def _owned(device: Any, req: MachineRequest) -> bool:
    """Whether an API device carries this Machine's ownership tags (anything malformed is not ours)."""
    device_tags = device.get("tags") if isinstance(device, dict) else None
    return isinstance(device_tags, list) and tags.is_owned_by([t for t in device_tags if isinstance(t, str)], req.uid)


def _with_ids(listed: Any, req: MachineRequest) -> list[dict[str, Any]]:
    """The listed devices; one with this Machine's tags but no usable id refuses the whole listing.

    Such a device can be neither used nor deleted nor ruled out: creating another would duplicate it, and
    finalizing would leave it running.
    """
    devices = [d for d in listed or () if isinstance(d, dict)]
    for device in devices:
        if _owned(device, req) and not (isinstance(device.get("id"), str) and device["id"].strip()):
            raise UnexpectedResponse(
                f"list_devices answered a device with the tag {tags.uid_tag(req.uid)} but without a usable id "
                f"({str(device.get('id'))[:40]!r}); nothing is created or deleted until the API lists it properly",
                operation="list_devices",
            )
    return devices


def _created_key(device: dict[str, Any]) -> tuple[str, str]:
    created = parse_time(device.get("created_at"))
    return (format_time(created) if created else "9999", str(device.get("id")))


@dataclass
class Lookup:
    """What sync found: the device to use, plus anything the user should hear about."""

    device: dict[str, Any] | None = None
    recorded_id: str | None = None
    recorded_gone: bool = False
    foreign_id: str | None = None
    duplicates_deleted: list[str] = field(default_factory=list)
    duplicates_left: list[str] = field(default_factory=list)


def find_device(client: Any, req: MachineRequest, project_id: str) -> Lookup:
    """The Machine's device; one GET when an id is recorded and still ours, else a tag lookup over every page.

    Extra devices with our tag (from lost create answers) are deleted, keeping the oldest.
    """
    found = Lookup(recorded_id=recorded_device_id(req))
    if found.recorded_id:
        found.device = _confirmed_from_cache(client, req, project_id, found.recorded_id)
        if found.device is not None:
            return found
        try:
            device = client.get_device(found.recorded_id)
        except NotFound:
            device = None
        device = {**device, "id": found.recorded_id} if isinstance(device, dict) else None
        if device is not None and not _owned(device, req):
            found.foreign_id = found.recorded_id
        elif device is not None and device.get("state") not in GONE_STATES:
            found.device = device
            return found
    mine = [
        d
        for d in _with_ids(client.list_devices(project_id, tag=tags.uid_tag(req.uid)), req)
        if _owned(d, req) and d.get("state") not in GONE_STATES
    ]
    if not mine:
        found.recorded_gone = bool(found.recorded_id) and not found.foreign_id
        return found
    mine.sort(key=_created_key)
    found.device = mine[0]
    for extra in mine[1:]:
        try:
            client.delete_device(extra["id"])
        except NotFound:
            pass
        except MetalError as exc:
            log.warning("machine %s/%s: could not delete duplicate device %s: %s", req.namespace, req.name,
                        extra["id"], exc)
            found.duplicates_left.append(extra["id"])
            continue
        log.info("machine %s/%s: deleted duplicate device %s, kept %s", req.namespace, req.name, extra["id"],
                 mine[0]["id"])
        found.duplicates_deleted.append(extra["id"])
    return found


def _confirmed_from_cache(client: Any, req: MachineRequest, project_id: str, device_id: str) -> dict[str, Any] | None:
    """The recorded device from the worker's listing (hooks.device_cache), only when it is listed, ours and not
    gone; None (cache off, or anything else) sends the caller to the fresh GET and tag lookup, never to a create."""
    observe = getattr(client, "observed_device", None)
    if observe is None:
        return None
    device = observe(project_id, device_id)
    if device is None or not _owned(device, req) or device.get("state") in GONE_STATES:
        return None
    return device


# ------------------------------------------------------------------------------------------------------------ create


class NoReservationLeft(Exception):
    """Every reservation was refused and on-demand devices are not allowed."""


def _about_reservation(exc: MetalError) -> bool:
    text = " ".join([str(exc), *exc.messages]).lower()
    return "reserv" in text


def device_request(req: MachineRequest, res: Resolution, reservation: str | None) -> Any:
    """A fresh create request for one attempt; attempts never share or mutate a request."""
    from hooks.metal import DeviceCreate

    spec = res.spec
    assert spec is not None and res.credentials is not None
    user_data = (res.credentials.user_data or "").replace(MACHINE_NAME_PLACEHOLDER, req.name)
    user_data = user_data.replace(quote(MACHINE_NAME_PLACEHOLDER), quote(req.name))
    return DeviceCreate(
        metro=spec.metro,
        plan=spec.machine_type,
        operating_system=spec.operating_system,
        hostname=req.name,
        billing_cycle=spec.billing_cycle,
        userdata=user_data,
        tags=[*spec.tags, *tags.ownership_tags(req.uid)],
        project_ssh_keys=list(spec.ssh_keys) or None,
        hardware_reservation_id=reservation,
        ipxe_script_url=spec.ipxe_script_url,
    )


def create_device(client: Any, req: MachineRequest, res: Resolution) -> dict[str, Any]:
    """Try each reservation in order, then on demand unless reservedDevicesOnly; never retry an unknown outcome."""
    spec = res.spec
    assert spec is not None and res.project_id
    refused: list[str] = []
    for reservation in spec.reservation_ids:
        try:
            return client.create_device(res.project_id, device_request(req, res, reservation))
        except CapacityError as exc:
            refused.append(f"{reservation}: {exc}")
        except Unprocessable as exc:
            if not _about_reservation(exc):
                raise
            refused.append(f"{reservation}: {exc}")
        log.info("machine %s/%s: reservation %s refused, trying the next", req.namespace, req.name, reservation)
    if spec.reserved_only:
        tried = "; ".join(refused) if refused else "providerSpec.reservationIDs is empty"
        raise NoReservationLeft(
            f"could not get a device with the provided reservation IDs and reservedDevicesOnly is true ({tried})"
        )
    return client.create_device(res.project_id, device_request(req, res, None))


# ------------------------------------------------------------------------------------------------------------- sync


@dataclass
class Outcome:
    """What one hook call decided; `response()` turns it into the decorator answer."""

    status: dict[str, Any] | None = None
    labels: dict[str, Any] = field(default_factory=dict)
    annotations: dict[str, Any] = field(default_factory=dict)
    resync: float = 0.0
    finalized: bool | None = None
    attachments: list[dict[str, Any]] | None = None

    def response(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.labels:
            out["labels"] = self.labels
        if self.annotations:
            out["annotations"] = self.annotations
        if self.status is not None:
            out["status"] = self.status
        if self.attachments is not None:
            out["attachments"] = self.attachments
        if self.resync > 0:
            out["resyncAfterSeconds"] = round(min(self.resync, MAX_RESYNC), 1)
        if self.finalized is not None:
            out["finalized"] = self.finalized
        return out


def _timeout(req: MachineRequest, key: str, default: float) -> float:
    value = parse_duration(req.spec.get(key))
    return value if value is not None and value > 0 else default


def _age(req: MachineRequest, now: datetime) -> float:
    created = parse_time(req.meta.get("creationTimestamp"))
    return (now - created).total_seconds() if created else 0.0


def _creation_left(req: MachineRequest, ctx: HookContext, now: datetime) -> float:
    return _timeout(req, "creationTimeout", ctx.settings.creation_timeout) - _age(req, now)


def _message(exc: BaseException, res: Resolution) -> str:
    from hooks.redact import redact

    return redact(str(exc), res.secrets())


def _decorations(req: MachineRequest, ctx: HookContext, res: Resolution, device: dict[str, Any] | None,
                 spec_metro: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Labels and annotations to merge: only those that differ from the Machine, `None` deletes."""
    labels: dict[str, Any] = {}
    annotations: dict[str, Any] = {}
    if device is not None:
        if not ctx.settings.no_target_cluster and req.labels.get(mcm.NODE_LABEL) != req.name:
            labels[mcm.NODE_LABEL] = req.name
        wanted = {DEVICE_ID_ANNOTATION: device["id"], PROVIDER_ID_ANNOTATION: provider_id(device, spec_metro)}
        annotations.update({k: v for k, v in wanted.items() if req.annotations.get(k) != v})
    if mcm.PRIORITY_ANNOTATION not in req.annotations:
        annotations[mcm.PRIORITY_ANNOTATION] = mcm.DEFAULT_PRIORITY
    ignored = ",".join(res.ignored_keys)
    if ignored and req.annotations.get(IGNORED_KEYS_ANNOTATION) != ignored:
        annotations[IGNORED_KEYS_ANNOTATION] = ignored
    elif not ignored and IGNORED_KEYS_ANNOTATION in req.annotations:
        annotations[IGNORED_KEYS_ANNOTATION] = None
    return labels, annotations


def _failure(req: MachineRequest, ctx: HookContext, now: datetime, description: str, code: str,
             *, retry_after: float | None = None) -> Outcome:
    """A failed step: CrashLoopBackOff while creating (Failed past the creation timeout), else the phase stays."""
    phase = observed_phase(req.status)
    creating = phase in CREATION_PHASES or (phase == mcm.AVAILABLE and not ctx.settings.no_target_cluster)
    op_type = mcm.OP_CREATE if creating else mcm.OP_HEALTH
    if creating:
        phase = mcm.FAILED if _creation_left(req, ctx, now) <= 0 else mcm.CRASH_LOOP
    operation = Operation(description, mcm.STATE_FAILED, op_type, code)
    status = build_status(req.status, phase=phase, operation=operation, now=now)
    if phase == mcm.FAILED:
        return Outcome(status=status)
    wait = backoff(now, status["lastOperation"]["lastUpdateTime"])
    if retry_after:
        wait = max(wait, retry_after)
    if creating:
        wait = min(wait, max(1.0, _creation_left(req, ctx, now) + 1))
    return Outcome(status=status, resync=wait)


def _invalid(req: MachineRequest, ctx: HookContext, now: datetime, problems: tuple[str, ...]) -> Outcome:
    text = "; ".join(problems)
    return _failure(req, ctx, now, mcm.CLOUD_PROVIDER_MESSAGE.format(error=f"invalid machine: {text}"),
                    mcm.INVALID_ARGUMENT)


def _api_failure(req: MachineRequest, ctx: HookContext, now: datetime, exc: MetalError, res: Resolution,
                 doing: str) -> Outcome:
    text = f"{doing} failed: {_message(exc, res)}"
    retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
    return _failure(req, ctx, now, mcm.CLOUD_PROVIDER_MESSAGE.format(error=text), exc.mcm_code,
                    retry_after=retry_after)


def _device_state(device: dict[str, Any]) -> str:
    return f"device {device.get('id')} is {device.get('state') or 'in an unknown state'}"


def device_phase(req: MachineRequest, ctx: HookContext, now: datetime, device: dict[str, Any],
                 extra: str = "") -> tuple[str, Operation | None, float]:
    """Phase, operation (None keeps the observed one) and resync for a Machine whose device exists."""
    name = req.name
    state = device.get("state")
    phase = observed_phase(req.status)
    old_op = observed_operation(req.status)
    node = req.node
    conditions = describe_conditions(node_conditions(node))
    if state == "failed":
        op_type = mcm.OP_CREATE if phase in CREATION_PHASES else mcm.OP_HEALTH
        text = f"device {device['id']} of machine {name} is in state failed at the provider"
        return mcm.FAILED, Operation(mcm.CLOUD_PROVIDER_MESSAGE.format(error=text), mcm.STATE_FAILED, op_type), 0.0
    active = state == "active"
    if ctx.settings.no_target_cluster:
        # Like MCM without a target cluster: no health checks once Available, only a failed device fails it.
        if phase == mcm.AVAILABLE:
            if old_op.get("state") == mcm.STATE_FAILED:
                text = f"Machine {name} is available and its device is reachable again"
                return mcm.AVAILABLE, Operation(text, mcm.SUCCESSFUL, mcm.OP_HEALTH), 0.0
            return mcm.AVAILABLE, None, 0.0
        if active:
            return mcm.AVAILABLE, Operation(mcm.CREATED_NO_TARGET + extra, mcm.SUCCESSFUL, mcm.OP_CREATE), 0.0
    healthy = active and node_is_healthy(node)
    if phase == mcm.RUNNING:
        if healthy:
            if old_op.get("state") == mcm.STATE_FAILED:
                text = f"Machine {name} is running and its device is reachable again"
                return mcm.RUNNING, Operation(text, mcm.SUCCESSFUL, mcm.OP_HEALTH), 0.0
            return mcm.RUNNING, None, 0.0
        text = mcm.node_missing(name) if node is None else mcm.unhealthy(name, conditions)
        if not active:
            text += f"; {_device_state(device)}"
        timeout = _timeout(req, "healthTimeout", ctx.settings.health_timeout)
        return mcm.UNKNOWN, Operation(text, mcm.PROCESSING, mcm.OP_HEALTH), min(HEALTH_RECHECK, timeout + 1)
    if phase == mcm.UNKNOWN:
        if healthy:
            return mcm.RUNNING, Operation(mcm.rejoined(name), mcm.SUCCESSFUL, mcm.OP_HEALTH), 0.0
        timeout = _timeout(req, "healthTimeout", ctx.settings.health_timeout)
        since = parse_time((req.status.get("currentStatus") or {}).get("lastUpdateTime")) or now
        left = timeout - (now - since).total_seconds()
        if left <= 0 and not req.spec.get("disableHealthTimeout"):
            text = mcm.health_timeout(name, timeout / 60, conditions)
            return mcm.FAILED, Operation(text, mcm.STATE_FAILED, mcm.OP_HEALTH), 0.0
        return mcm.UNKNOWN, None, min(HEALTH_RECHECK, max(1.0, left + 1))
    # Still joining: "", Pending, CrashLoopBackOff (or Available from an earlier no-target-cluster setting).
    if healthy and not node_has_critical_taint(node):
        text = mcm.joined(name, go_duration(_age(req, now)))
        return mcm.RUNNING, Operation(text, mcm.SUCCESSFUL, mcm.OP_CREATE), 0.0
    left = _creation_left(req, ctx, now)
    if left <= 0:
        minutes = _timeout(req, "creationTimeout", ctx.settings.creation_timeout) / 60
        return mcm.FAILED, Operation(mcm.join_timeout(name, minutes), mcm.STATE_FAILED, mcm.OP_CREATE), 0.0
    wait = AWAIT_NODE_RESYNC if active else PROVISIONING_RESYNC
    return mcm.PENDING, Operation(mcm.CREATING + extra, mcm.PROCESSING, mcm.OP_CREATE), min(wait, left + 1)


def _with_device(req: MachineRequest, ctx: HookContext, now: datetime, res: Resolution, device: dict[str, Any],
                 extra: str = "") -> Outcome:
    phase, operation, wait = device_phase(req, ctx, now, device, extra)
    status = build_status(
        req.status,
        phase=phase,
        operation=operation,
        now=now,
        last_known_state=_device_state(device),
        addresses=device_addresses(device, req.name),
        conditions=node_conditions(req.node) if not ctx.settings.no_target_cluster else [],
    )
    spec_metro = res.spec.metro if res.spec else ""
    labels, annotations = _decorations(req, ctx, res, device, spec_metro)
    return Outcome(status=status, labels=labels, annotations=annotations, resync=wait)


def sync(body: dict[str, Any], ctx: HookContext) -> dict[str, Any]:
    req = parse_request(body)
    return reconcile(req, ctx).response()


def reconcile(req: MachineRequest, ctx: HookContext) -> Outcome:
    """The sync decision; API calls go through ctx.metal, time through ctx.clock."""
    now = ctx.clock()
    if observed_phase(req.status) == mcm.FAILED:
        return Outcome()  # terminal: the MachineSet replaces a Failed Machine
    res = resolve(req.machine, req.related)
    recorded = recorded_device_id(req)
    if not res.can_reach_api or (res.problems and not recorded):
        outcome = _invalid(req, ctx, now, res.problems or res.access_problems)
        outcome.labels, outcome.annotations = _decorations(req, ctx, res, None, "")
        return outcome
    assert res.credentials is not None and res.project_id
    client = device_cache.client_for(ctx, res.credentials.token)
    try:
        found = find_device(client, req, res.project_id)
    except MetalError as exc:
        return _api_failure(req, ctx, now, exc, res, "looking up the device")
    notes = ""
    if found.foreign_id:
        notes += (f"; device {found.foreign_id} recorded on the Machine does not carry its ownership tag "
                  f"{tags.uid_tag(req.uid)} and was not used")
    if found.duplicates_deleted:
        notes += f"; deleted duplicate device(s) {', '.join(found.duplicates_deleted)}, kept the oldest"
    if found.duplicates_left:
        notes += f"; could not delete duplicate device(s) {', '.join(found.duplicates_left)} yet"
    if found.device is not None:
        outcome = _with_device(req, ctx, now, res, found.device, notes)
        if found.duplicates_left:
            outcome.annotations.pop(DEVICE_ID_ANNOTATION, None)  # keep using the tag lookup until they are gone
            outcome.resync = min(outcome.resync or PROVISIONING_RESYNC, PROVISIONING_RESYNC)
        return outcome
    if found.foreign_id:
        text = (f"device {found.foreign_id} recorded on machine {req.name} does not carry the ownership tag "
                f"{tags.uid_tag(req.uid)}; it is not this Machine's device and will not be used or deleted. "
                f"Remove the device id from the Machine to let the hooks create one")
        return _failure(req, ctx, now, mcm.CLOUD_PROVIDER_MESSAGE.format(error=text), mcm.FAILED_PRECONDITION)
    if found.recorded_gone:
        text = (f"device {found.recorded_id} of machine {req.name} is gone or being deleted at the provider and "
                f"no other device carries the tag {tags.uid_tag(req.uid)}: it was deleted outside the hooks")
        operation = Operation(mcm.CLOUD_PROVIDER_MESSAGE.format(error=text), mcm.STATE_FAILED, mcm.OP_HEALTH,
                              mcm.NOT_FOUND)
        return Outcome(status=build_status(req.status, phase=mcm.FAILED, operation=operation, now=now))
    if res.problems:
        return _invalid(req, ctx, now, res.problems)
    return _create(req, ctx, now, res, client)


def _create(req: MachineRequest, ctx: HookContext, now: datetime, res: Resolution, client: Any) -> Outcome:
    if _creation_left(req, ctx, now) <= 0:
        minutes = _timeout(req, "creationTimeout", ctx.settings.creation_timeout) / 60
        operation = Operation(mcm.join_timeout(req.name, minutes), mcm.STATE_FAILED, mcm.OP_CREATE)
        return Outcome(status=build_status(req.status, phase=mcm.FAILED, operation=operation, now=now))
    try:
        device = create_device(client, req, res)
    except NoReservationLeft as exc:
        return _failure(req, ctx, now, mcm.CLOUD_PROVIDER_MESSAGE.format(error=_message(exc, res)),
                        mcm.RESOURCE_EXHAUSTED)
    except AMBIGUOUS as exc:
        log.warning("machine %s/%s: create answer lost (%s); next sync looks the device up by tag",
                    req.namespace, req.name, type(exc).__name__)
        text = (f"the outcome of the create request is unknown ({_message(exc, res)}); the next sync looks for the "
                f"device by its tag {tags.uid_tag(req.uid)} instead of creating another")
        outcome = _failure(req, ctx, now, mcm.CLOUD_PROVIDER_MESSAGE.format(error=text), mcm.UNAVAILABLE)
        outcome.resync = UNKNOWN_OUTCOME_RESYNC if outcome.resync else 0.0
        return outcome
    except MetalError as exc:
        return _api_failure(req, ctx, now, exc, res, "creating the device")
    if not isinstance(device, dict) or not isinstance(device.get("id"), str) or not device["id"].strip():
        text = "the create request was answered without a device id; the next sync looks the device up by its tag"
        outcome = _failure(req, ctx, now, mcm.CLOUD_PROVIDER_MESSAGE.format(error=text), mcm.UNKNOWN_CODE)
        outcome.resync = UNKNOWN_OUTCOME_RESYNC if outcome.resync else 0.0
        return outcome
    log.info("machine %s/%s: created device %s", req.namespace, req.name, device["id"])
    return _with_device(req, ctx, now, res, device)


# --------------------------------------------------------------------------------------------------------- finalize


def _terminating(req: MachineRequest, now: datetime, description: str, state: str, code: str = "") -> dict[str, Any]:
    operation = Operation(description, state, mcm.OP_DELETE, code)
    return build_status(req.status, phase=mcm.TERMINATING, operation=operation, now=now)


def finalize(body: dict[str, Any], ctx: HookContext) -> dict[str, Any]:
    req = parse_request(body)
    return release(req, ctx).response()


def release(req: MachineRequest, ctx: HookContext) -> Outcome:
    """Drain the Node (hooks.drain), then delete every device of the Machine; finalized only when none is left."""
    now = ctx.clock()
    if str(req.annotations.get(SKIP_CLEANUP_ANNOTATION, "")).strip().lower() == "true":
        text = (f"Device cleanup skipped: annotation {SKIP_CLEANUP_ANNOTATION}=true; any device of machine "
                f"{req.name} is left as it is")
        return Outcome(status=_terminating(req, now, text, mcm.SUCCESSFUL), finalized=True, attachments=[])
    try:
        step = plan_drain(*_drain_inputs(req), DrainSettings.from_env(settings=ctx.settings), now)
    except ConfigError as exc:
        text = f"Drain failed due to - the hook server's drain settings are invalid: {exc}. {INITIATE_DRAIN}"
        status = _terminating(req, now, text, mcm.STATE_FAILED, mcm.FAILED_PRECONDITION)
        wait = backoff(now, status["lastOperation"]["lastUpdateTime"])
        return Outcome(status=status, finalized=False, resync=wait, attachments=_observed_jobs(req))
    if not step.ready_to_delete_device:
        status = _terminating(req, now, step.description, step.state)
        return Outcome(status=status, finalized=False, resync=step.resync_after, attachments=step.attachments)
    outcome = _release_devices(req, ctx, now, announce=step.description if step.announce else None)
    outcome.attachments = step.attachments
    return outcome


def _drain_inputs(req: MachineRequest) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any]]:
    """The Machine, Node and Jobs as the drain planner expects them: odd shapes reduced to empty ones."""
    status = req.status
    machine_view = {
        **req.machine,
        "status": {
            "currentStatus": status.get("currentStatus") if isinstance(status.get("currentStatus"), dict) else {},
            "lastOperation": observed_operation(status),
        },
    }
    node = req.node
    if node is not None and not isinstance(node.get("status"), dict):
        node = {**node, "status": {}}
    jobs = {
        key: job
        for key, job in (req.attachments.get(JOB_KEY) or {}).items()
        if isinstance(job, dict) and isinstance(job.get("metadata"), dict)
        and isinstance(job["metadata"].get("annotations") or {}, dict)
        and (job.get("status") is None or isinstance(job.get("status"), dict))
    }
    return machine_view, node, {JOB_KEY: jobs}


def _observed_jobs(req: MachineRequest) -> list[dict[str, Any]]:
    """The drain Jobs as observed, declared again so that Metacontroller keeps them while we cannot plan."""
    jobs = (req.attachments.get(JOB_KEY) or {}).values()
    kept = []
    for job in jobs:
        if isinstance(job, dict) and isinstance(job.get("metadata"), dict):
            meta = {k: v for k, v in job["metadata"].items() if k in ("name", "namespace", "labels", "annotations")}
            kept.append({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": job.get("spec") or {}})
    return kept


def _release_devices(req: MachineRequest, ctx: HookContext, now: datetime, *, announce: str | None) -> Outcome:
    """The device step. With `announce` (the drain outcome not yet shown), a Machine whose devices are all gone is
    let go at once; otherwise the drain outcome is written first and the devices are deleted in the next call."""
    res = resolve(req.machine, req.related)
    opt_out = (f"If the device is known to be gone, annotate the Machine with {SKIP_CLEANUP_ANNOTATION}=\"true\" "
               "to let it go")
    if not res.can_reach_api:
        text = (f"Cannot look for or delete the device of machine {req.name}: {'; '.join(res.access_problems)}. "
                f"The Machine stays Terminating while its device may still run. {opt_out}. {INITIATE_VM_DELETION}")
        status = _terminating(req, now, text, mcm.STATE_FAILED, mcm.INVALID_ARGUMENT)
        return Outcome(status=status, finalized=False, resync=backoff(now, status["lastOperation"]["lastUpdateTime"]))
    assert res.credentials is not None and res.project_id
    client = device_cache.client_for(ctx, res.credentials.token)  # its deletes invalidate the worker's listings
    try:
        devices, skipped = _own_devices(client, req, res.project_id)
        present = [] if announce and devices else _delete(client, req, devices)
    except MetalError as exc:
        text = (f"VM deletion failed due to - {_message(exc, res)}. However, will re-try in the next resync. "
                f"{INITIATE_VM_DELETION}")
        if exc.mcm_code in (mcm.UNAUTHENTICATED, mcm.PERMISSION_DENIED):
            text = f"{text}. {opt_out}"
        status = _terminating(req, now, text, mcm.STATE_FAILED, exc.mcm_code)
        wait = backoff(now, status["lastOperation"]["lastUpdateTime"], cap=120.0)
        if isinstance(exc, RateLimited) and exc.retry_after:
            wait = max(wait, exc.retry_after)
        return Outcome(status=status, finalized=False, resync=wait)
    if announce and devices:
        return Outcome(status=_terminating(req, now, announce, mcm.PROCESSING), finalized=False, resync=1.0)
    note = ""
    if skipped:
        note = (f" Device {skipped} recorded on the Machine does not carry its ownership tag {tags.uid_tag(req.uid)}"
                " and was left alone.")
    if present:
        text = f"{INITIATE_VM_DELETION}: waiting for device(s) {', '.join(present)} to be deleted.{note}"
        return Outcome(status=_terminating(req, now, text, mcm.PROCESSING), finalized=False, resync=DELETING_RESYNC)
    text = f"VM deletion was successful. Initiate machine object finalizer removal.{note}"
    return Outcome(status=_terminating(req, now, text, mcm.SUCCESSFUL), finalized=True)


def _own_devices(client: Any, req: MachineRequest, project_id: str) -> tuple[dict[str, dict[str, Any]], str | None]:
    """This Machine's devices that still exist (by recorded id and by tag), and a recorded id that is not ours."""
    devices: dict[str, dict[str, Any]] = {}
    skipped = None
    recorded = recorded_device_id(req)
    if recorded:
        try:
            device = client.get_device(recorded)
        except NotFound:
            device = None
        if device is not None and _owned(device, req):
            devices[recorded] = device
        elif device is not None:
            skipped = recorded
            log.warning("machine %s/%s: device %s lacks our ownership tag; not deleting it", req.namespace,
                        req.name, recorded)
    for device in _with_ids(client.list_devices(project_id, tag=tags.uid_tag(req.uid)), req):
        if _owned(device, req):
            devices.setdefault(device["id"], device)
    return {k: v for k, v in devices.items() if v.get("state") != "deleted"}, skipped


def _delete(client: Any, req: MachineRequest, devices: dict[str, dict[str, Any]]) -> list[str]:
    """DELETE each device that is not already deprovisioning; return the ids still present."""
    present = []
    for device_id in sorted(devices):
        if devices[device_id].get("state") != "deprovisioning":
            try:
                client.delete_device(device_id)
            except NotFound:
                continue
            log.info("machine %s/%s: deleting device %s", req.namespace, req.name, device_id)
        present.append(device_id)
    return present
