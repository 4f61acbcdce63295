"""`EquinixDriver`: the `hooks.driver.Driver` for Equinix Metal, the only door from the MCM logic to the API.

It owns what MCM's provider owns: the providerSpec and Secret checks (hooks.equinix.providerspec), ownership tags
(hooks.equinix.tags), paging, the create body and reservation fallback, the worker's device cache
(hooks.equinix.device_cache), and the translation of the client's exceptions into `DriverError` with MCM's codes
(hooks.equinix.machine_call). The create itself, with its reservation fallback, is hooks.equinix.creation.

Ownership rules kept here: a device is the Machine's only when it carries the Machine's ownership tags; a recorded
device without them is never used nor deleted; several devices with the tags (left by create answers that were
lost) are reduced to the oldest; a create is sent at most once per call and never repeated when its outcome is
unknown (the next call looks the device up by its tag instead).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from hooks.config import Settings
from hooks.driver import (
    INVALID_ARGUMENT,
    ClassRequest,
    DeleteResult,
    Device,
    DriverError,
    MachineRequest,
    StatusResponse,
    Validation,
)
from hooks.equinix import adoption, creation, device_cache, devices, sessions, tags, tenancy
from hooks.equinix.client import ApiCall, MetalClient
from hooks.equinix.errors import MetalError, NotFound, UnexpectedResponse
from hooks.equinix.inventory import EquinixInventory
from hooks.equinix.machine_call import MachineCall, log, resolve_request, translated
from hooks.equinix.providerspec import PROVIDER
from hooks.redact import redact


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
        res = resolve_request(request)
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
        with translated(call):
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
    def _tenant_marked(call: MachineCall, raw: dict[str, Any]) -> dict[str, Any]:
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
    def _adopted(call: MachineCall, request: MachineRequest, raw: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
        """A recorded device without our ownership tags, taken over when it is provably the one MCM's provider made
        for this Machine (hooks.equinix.adoption): (the device, now tagged, or None; why not)."""
        claim = adoption.claim_for(request.machine, request.machine_class or {}, call.installation_id)
        proof, adopted = adoption.adopt(call.client, raw, claim)
        if adopted is None:
            return None, proof.message
        log.info("machine %s/%s: adopted device %s (made by MCM's provider for this Machine)", call.namespace,
                 call.name, raw.get("id"))
        return adopted, ""

    def _confirmed_from_cache(self, call: MachineCall, device_id: str) -> dict[str, Any] | None:
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
    def _get(call: MachineCall, device_id: str) -> dict[str, Any] | None:
        try:
            raw = call.client.get_device(device_id)
        except NotFound:
            return None
        return {**raw, "id": device_id} if isinstance(raw, dict) else None

    @staticmethod
    def _tagged(call: MachineCall) -> list[dict[str, Any]]:
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
    def _delete_duplicates(call: MachineCall, kept: str, extra: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
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
        `ambiguous`, never retried (hooks.equinix.creation)."""
        return creation.create_machine(self._call(request), request)

    # -- DeleteMachine ---------------------------------------------------------------------------------------

    def delete_machine(self, request: MachineRequest, *, dry_run: bool = False) -> DeleteResult:
        """Every device of the Machine (recorded id and tag lookup) that still exists; DELETE each one that is not
        already deprovisioning unless `dry_run`. A recorded device without our tag is left alone."""
        call = self._call(request)
        with translated(call):
            found, foreign = self._own_devices(call)
            present = sorted(found) if dry_run else self._delete(call, found)
        return DeleteResult(tuple(present), foreign, tags.uid_tag(call.uid))

    @classmethod
    def _own_devices(cls, call: MachineCall) -> tuple[dict[str, dict[str, Any]], str | None]:
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
    def _delete(call: MachineCall, found: dict[str, dict[str, Any]]) -> list[str]:
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

    def _call(self, request: MachineRequest) -> MachineCall:
        """The checked inputs of a call that reaches the API; the hooks never call without access."""
        res = resolve_request(request)
        if res.access_problems or res.credentials is None or not res.project_id:
            raise DriverError("; ".join(res.access_problems) or "no credentials", INVALID_ARGUMENT)
        meta = request.machine.get("metadata") or {}
        return MachineCall(str(meta.get("name") or ""), str(meta.get("namespace") or ""), str(meta.get("uid") or ""),
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


