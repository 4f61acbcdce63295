"""`EquinixDriver`: the `hooks.driver.Driver` for Equinix Metal, the only door from the MCM logic to the API.

It owns what MCM's provider owns: the providerSpec and Secret checks (hooks.equinix.providerspec), ownership tags
(hooks.equinix.tags), paging, the create body and reservation fallback, the worker's device cache
(hooks.equinix.device_cache), and the translation of the client's exceptions into `DriverError` with MCM's codes.

Ownership rules kept here: a device is the Machine's only when it carries the Machine's ownership tags; a recorded
device without them is never used nor deleted; several devices with the tags (left by create answers that were
lost) are reduced to the oldest; a create is sent at most once per call and never repeated when its outcome is
unknown (the next call looks the device up by its tag instead).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from hooks import events
from hooks.config import Settings
from hooks.driver import (
    FAILED_PRECONDITION,
    INVALID_ARGUMENT,
    RESOURCE_EXHAUSTED,
    UNAVAILABLE,
    UNKNOWN_CODE,
    ClassRequest,
    DeleteResult,
    Device,
    DriverError,
    MachineRequest,
    StatusResponse,
    Validation,
)
from hooks.equinix import adoption, device_cache, devices, sessions, tags, tenancy
from hooks.equinix.client import ApiCall, MetalClient
from hooks.equinix.errors import (
    CapacityError,
    MetalError,
    NotFound,
    RateLimited,
    ServerError,
    TransportError,
    UnexpectedResponse,
    Unprocessable,
)
from hooks.equinix.inventory import EquinixInventory
from hooks.equinix.providerspec import PROVIDER, Resolution, resolve
from hooks.redact import redact

# Its lines are about Machines (created, deleted, duplicate): the logger name they always had.
log = logging.getLogger("hooks.machine")

# Errors after which a create may or may not have happened.
AMBIGUOUS = (TransportError, ServerError, UnexpectedResponse)


@dataclass(frozen=True)
class _Call:
    """One request's checked inputs: the Machine's identity, its resolution and an API client for its token."""

    name: str
    namespace: str
    uid: str
    res: Resolution
    client: Any
    machine: Mapping[str, Any]
    machine_class: Mapping[str, Any] | None = None
    installation_id: str = ""

    @property
    def project(self) -> str:
        assert self.res.project_id
        return self.res.project_id

    @property
    def metro(self) -> str:
        return self.res.spec.metro if self.res.spec else ""

    def device(self, raw: Mapping[str, Any]) -> Device:
        return devices.to_device(raw, fallback_metro=self.metro, hostname=self.name)


class EquinixDriver:
    """The Driver for Equinix Metal. `metal` builds an API client for a token (tests pass a fake); `cache` replaces
    the worker's shared device cache (tests and the bench pass their own)."""

    provider = PROVIDER

    def __init__(self, settings: Settings, metal: Callable[[str], Any],
                 *, cache: device_cache.DeviceCache | None = None) -> None:
        self.settings = settings
        self.metal = metal
        self.cache = cache
        # The MachineClass side (ListMachines, orphans, class marks); deletes go through the same cached clients.
        self.inventory = EquinixInventory(self.client_for)

    # -- checks without a call -------------------------------------------------------------------------------

    def validate(self, request: MachineRequest) -> Validation:
        res = _resolve(request)
        return Validation(res.problems, res.access_problems, res.ignored_keys)

    def recorded_device_id(self, machine: Mapping[str, Any]) -> str | None:
        return devices.recorded_device_id(machine)

    # -- GetMachineStatus ------------------------------------------------------------------------------------

    def get_machine_status(self, request: MachineRequest) -> StatusResponse:
        """The recorded device when it is still ours and alive (the cache may confirm it), else a tag lookup over
        every page; extra devices with our tag are deleted, keeping the oldest."""
        call = self._call(request)
        recorded = devices.recorded_device_id(request.machine)
        owner_tag = tags.uid_tag(call.uid)
        foreign = None
        reason = ""
        with _translated(call):
            if recorded:
                raw = self._confirmed_from_cache(call, recorded) or self._get(call, recorded)
                if raw is not None and not devices.is_owned(raw, call.uid):
                    raw, reason = self._adopted(call, request, raw)
                    foreign = None if raw is not None else recorded
                if raw is not None and raw.get("state") not in devices.GONE_STATES:
                    raw = self._tenant_marked(call, raw)
                    return StatusResponse(call.device(raw), recorded_id=recorded, owner_tag=owner_tag)
            mine = [d for d in self._tagged(call) if d.get("state") not in devices.GONE_STATES]
            if not mine:
                return StatusResponse(None, recorded_id=recorded, foreign_id=foreign, owner_tag=owner_tag,
                                      foreign_reason=reason)
            mine.sort(key=devices.created_key)
            deleted, left = self._delete_duplicates(call, mine[0]["id"], [d["id"] for d in mine[1:]])
            mine[0] = self._tenant_marked(call, mine[0])
        return StatusResponse(call.device(mine[0]), recorded_id=recorded, foreign_id=foreign,
                              duplicates_deleted=deleted, duplicates_left=left, owner_tag=owner_tag,
                              foreign_reason=reason)

    @staticmethod
    def _tenant_marked(call: _Call, raw: dict[str, Any]) -> dict[str, Any]:
        """The Machine's own device with the tenant tags (installation, namespace) it lacks added in one tag update,
        so devices made before tenancy existed can be told apart too. A failed update is logged and tried again by
        the next sync; without an installation id nothing is added."""
        missing = tenancy.missing_tenant_tags(devices.device_tags(raw), call.installation_id, call.namespace)
        if not call.installation_id or not missing:
            return raw
        wanted = [*devices.device_tags(raw), *missing]
        try:
            updated = call.client.update_tags(raw["id"], wanted)
        except MetalError as exc:
            log.warning("machine %s/%s: could not add tenant tags to device %s: %s", call.namespace, call.name,
                        raw.get("id"), redact(str(exc), call.res.secrets()))
            return raw
        log.info("machine %s/%s: added tenant tags %s to device %s", call.namespace, call.name, ", ".join(missing),
                 raw.get("id"))
        return updated if isinstance(updated, dict) and updated.get("id") == raw["id"] else {**raw, "tags": wanted}

    @staticmethod
    def _adopted(call: _Call, request: MachineRequest, raw: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
        """A recorded device without our ownership tags, taken over when it is provably the one MCM's provider made
        for this Machine (hooks.equinix.adoption): (the device, now tagged, or None; why not)."""
        claim = adoption.claim_for(request.machine, request.machine_class or {}, call.installation_id)
        proof, adopted = adoption.adopt(call.client, raw, claim)
        if adopted is None:
            return None, proof.message
        log.info("machine %s/%s: adopted device %s (made by MCM's provider for this Machine)", call.namespace,
                 call.name, raw.get("id"))
        return adopted, ""

    def _confirmed_from_cache(self, call: _Call, device_id: str) -> dict[str, Any] | None:
        """The recorded device from the worker's listing, only when it is listed, ours and not gone; None sends the
        caller to the fresh GET and tag lookup, never to a create."""
        observe = getattr(call.client, "observed_device", None)
        if observe is None:
            return None
        raw = observe(call.project, device_id)
        if raw is None or not devices.is_owned(raw, call.uid) or raw.get("state") in devices.GONE_STATES:
            return None
        return raw

    @staticmethod
    def _get(call: _Call, device_id: str) -> dict[str, Any] | None:
        try:
            raw = call.client.get_device(device_id)
        except NotFound:
            return None
        return {**raw, "id": device_id} if isinstance(raw, dict) else None

    @staticmethod
    def _tagged(call: _Call) -> list[dict[str, Any]]:
        """Devices carrying the Machine's tags; one without a usable id refuses the whole listing (it could be
        neither used nor deleted nor ruled out: creating another would duplicate it)."""
        listed = call.client.list_devices(call.project, tag=tags.uid_tag(call.uid))
        mine = [d for d in listed or () if devices.is_owned(d, call.uid)]
        for raw in mine:
            if not (isinstance(raw.get("id"), str) and raw["id"].strip()):
                raise UnexpectedResponse(
                    f"list_devices answered a device with the tag {tags.uid_tag(call.uid)} but without a usable id "
                    f"({str(raw.get('id'))[:40]!r}); nothing is created or deleted until the API lists it properly",
                    operation="list_devices",
                )
        return mine

    @staticmethod
    def _delete_duplicates(call: _Call, kept: str, extra: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        deleted: list[str] = []
        left: list[str] = []
        for device_id in extra:
            try:
                call.client.delete_device(device_id)
            except NotFound:
                pass
            except MetalError as exc:
                log.warning("machine %s/%s: could not delete duplicate device %s: %s", call.namespace, call.name,
                            device_id, exc)
                left.append(device_id)
                continue
            log.info("machine %s/%s: deleted duplicate device %s, kept %s", call.namespace, call.name, device_id, kept)
            deleted.append(device_id)
        return tuple(deleted), tuple(left)

    # -- CreateMachine ---------------------------------------------------------------------------------------

    def create_machine(self, request: MachineRequest) -> Device:
        """Each reservation in order, then on demand unless reservedDevicesOnly; an unknown outcome is reported as
        `ambiguous`, never retried."""
        call = self._call(request)
        if call.res.problems:
            raise DriverError("; ".join(call.res.problems), INVALID_ARGUMENT)
        if not call.installation_id:
            raise DriverError("not creating a device without this installation's id: it could not be told apart "
                              "from another installation's", FAILED_PRECONDITION)
        secrets = [*call.res.secrets(), *([request.user_data] if request.user_data else [])]
        try:
            raw = self._create(call, request.user_data)
        except AMBIGUOUS as exc:
            _report(call, exc)
            raise DriverError(
                f"the outcome of the create request is unknown ({redact(str(exc), secrets)}); the next sync looks "
                f"for the device by its tag {tags.uid_tag(call.uid)} instead of creating another",
                UNAVAILABLE, ambiguous=True) from exc
        except Unprocessable as exc:
            # The Go provider (machine-controller-manager-provider-equinix-metal, core.go CreateMachine) answers every
            # failed create with codes.Unavailable and "Could not create machine: <err>"; MCM then retries shortly.
            raise _driver_error(exc, call, CREATE_FAILED_PREFIX, tuple(secrets), code=UNAVAILABLE) from exc
        except MetalError as exc:
            raise _driver_error(exc, call, CREATE_FAILED_PREFIX, tuple(secrets)) from exc
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), str) or not raw["id"].strip():
            raise DriverError("the create request was answered without a device id; the next sync looks the device "
                              "up by its tag", UNKNOWN_CODE, ambiguous=True)
        log.info("machine %s/%s: created device %s", call.namespace, call.name, raw["id"])
        return call.device(raw)

    def _create(self, call: _Call, rendered: str | None = None) -> Any:
        """`rendered`: the request's userData (MCM's placeholders replaced by the caller), else the Secret's."""
        spec, creds = call.res.spec, call.res.credentials
        assert spec is not None and creds is not None
        user_data = rendered if rendered is not None else creds.user_data
        refused: list[str] = []
        for reservation in spec.reservation_ids:
            body = devices.create_body(spec, call.name, call.uid, user_data, reservation,
                                       class_name=call.res.class_name,
                                       tenant=tenancy.tenant_tags(call.installation_id, call.namespace))
            try:
                return call.client.create_device(call.project, body)
            except CapacityError as exc:
                refused.append(f"{reservation}: {exc}")
            except Unprocessable as exc:
                if "reserv" not in " ".join([str(exc), *exc.messages]).lower():
                    raise
                refused.append(f"{reservation}: {exc}")
            log.info("machine %s/%s: reservation %s refused, trying the next", call.namespace, call.name, reservation)
        if spec.reserved_only:
            tried = "; ".join(refused) if refused else "providerSpec.reservationIDs is empty"
            # The Go provider's text (core.go createDeviceWithReservations), with what each reservation answered.
            text = (f"{CREATE_FAILED_PREFIX}could not get a device with the provided reservation IDs, and reservedOnly "
                    f"is true ({tried})")
            raise DriverError(redact(text, call.res.secrets()), RESOURCE_EXHAUSTED)
        return call.client.create_device(call.project, devices.create_body(
            spec, call.name, call.uid, user_data, None, class_name=call.res.class_name,
            tenant=tenancy.tenant_tags(call.installation_id, call.namespace)))

    # -- DeleteMachine ---------------------------------------------------------------------------------------

    def delete_machine(self, request: MachineRequest, *, dry_run: bool = False) -> DeleteResult:
        """Every device of the Machine (recorded id and tag lookup) that still exists; DELETE each one that is not
        already deprovisioning unless `dry_run`. A recorded device without our tag is left alone."""
        call = self._call(request)
        with _translated(call):
            found, foreign = self._own_devices(call)
            present = sorted(found) if dry_run else self._delete(call, found)
        return DeleteResult(tuple(present), foreign, tags.uid_tag(call.uid))

    @classmethod
    def _own_devices(cls, call: _Call) -> tuple[dict[str, dict[str, Any]], str | None]:
        found: dict[str, dict[str, Any]] = {}
        foreign = None
        recorded = devices.recorded_device_id(call.machine)
        if recorded:
            raw = cls._get(call, recorded)
            if raw is not None and not devices.is_owned(raw, call.uid):
                # A migrated Machine deleted before any sync adopted its device: prove and adopt it now, or its
                # server would keep running after the Machine is gone.
                raw = cls._adopted(call, MachineRequest(call.machine, call.machine_class,
                                                        installation_id=call.installation_id), raw)[0] or raw
            if raw is not None and devices.is_owned(raw, call.uid):
                found[recorded] = raw
            elif raw is not None:
                foreign = recorded
                log.warning("machine %s/%s: device %s lacks our ownership tag; not deleting it", call.namespace,
                            call.name, recorded)
        for raw in cls._tagged(call):
            found.setdefault(raw["id"], raw)
        return {k: v for k, v in found.items() if v.get("state") != devices.DELETED}, foreign

    @staticmethod
    def _delete(call: _Call, found: dict[str, dict[str, Any]]) -> list[str]:
        present = []
        for device_id in sorted(found):
            if found[device_id].get("state") != devices.DEPROVISIONING:
                try:
                    call.client.delete_device(device_id)
                except NotFound:
                    continue
                log.info("machine %s/%s: deleting device %s", call.namespace, call.name, device_id)
            present.append(device_id)
        return present

    # -- ListMachines (the MachineClass side) ----------------------------------------------------------------

    def list_machines(self, request: ClassRequest) -> list[Device]:
        return self.inventory.list_machines(request)

    def delete_orphan(self, request: ClassRequest, device: Device) -> bool:
        return self.inventory.delete_orphan(request, device)

    def claim_machine(self, request: ClassRequest, device: Device) -> bool:
        return self.inventory.claim_machine(request, device)

    # -- machinery -------------------------------------------------------------------------------------------

    def _call(self, request: MachineRequest) -> _Call:
        """The checked inputs of a call that reaches the API; the hooks never call without access."""
        res = _resolve(request)
        if res.access_problems or res.credentials is None or not res.project_id:
            raise DriverError("; ".join(res.access_problems) or "no credentials", INVALID_ARGUMENT)
        meta = request.machine.get("metadata") or {}
        return _Call(str(meta.get("name") or ""), str(meta.get("namespace") or ""), str(meta.get("uid") or ""),
                     res, self.client_for(res.credentials.token), request.machine, request.machine_class,
                     request.installation_id)

    def client_for(self, token: str) -> Any:
        """The client for this token, wrapped in the worker's device cache when the setting turns it on (its
        mutations invalidate the worker's listings)."""
        return device_cache.client_for(self.metal, self.settings, token, self.cache)


def client_factory(
    settings: Settings,
    *,
    register_secret: Callable[[str], None],
    observe_call: Callable[[Any], None],
    observe_rate_limit: Callable[[Any], None],
) -> Callable[[str], MetalClient]:
    """Builds the API client for a token: `register_secret` keeps the token out of every log line of the current
    hook call; each attempt is reported to `observe_call` and the last X-RateLimit-* headers to
    `observe_rate_limit` (the client records them before it reports the attempt, so the gauge is current)."""

    def build(token: str) -> MetalClient:
        register_secret(token)
        client: MetalClient | None = None

        def observe(call: ApiCall) -> None:
            observe_call(call)
            observe_rate_limit(client.rate_limit if client is not None else None)

        client = MetalClient(
            token,
            base_url=settings.metal_api_url,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            retry_budget=settings.retry_budget,
            observer=observe,
            # Kept-alive per worker thread: a new connection per hook call was the top cost of a sync (bench/).
            session=sessions.thread_session(settings.metal_api_url),
        )
        return client

    return build


# The Go provider's text for a failed create (core.go CreateMachine), kept so MCM users recognise it.
CREATE_FAILED_PREFIX = "Could not create machine: "


def _resolve(request: MachineRequest) -> Resolution:
    return resolve(request.machine, request.machine_class, request.secrets)


def _report(call: _Call, exc: MetalError) -> None:
    """An API failure is visible outside .status: a WARN line naming the Machine, the operation, the HTTP status
    and MCM's code (the log scope adds the hook route), and an event the server's metrics count."""
    status = exc.status if exc.status is not None else "none (no answer)"
    log.warning("machine %s/%s: Metal API %s failed: status %s, errorCode %s", call.namespace, call.name,
                exc.operation or "call", status, exc.mcm_code,
                extra={"machine": f"{call.namespace}/{call.name}", "api_status": exc.status,
                       "error_code": exc.mcm_code, "operation": exc.operation})
    events.emit(events.API_FAILURE, operation=exc.operation or "unknown", code=exc.mcm_code)


def _driver_error(exc: MetalError, call: _Call, prefix: str = "", extra: tuple[str, ...] = (), *,
                  code: str = "") -> DriverError:
    """`extra`: secrets beyond the Secret's (the rendered userData of a create); `code` overrides MCM's code."""
    _report(call, exc)
    retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
    return DriverError(prefix + redact(str(exc), [*call.res.secrets(), *extra]), code or exc.mcm_code,
                       retry_after=retry_after)


@contextmanager
def _translated(call: _Call) -> Iterator[None]:
    """The client's exceptions as DriverError with MCM's code; messages without the token or userData."""
    try:
        yield
    except MetalError as exc:
        raise _driver_error(exc, call) from exc
