"""CreateMachine for Equinix Metal: each hardware reservation in order, then on demand unless the providerSpec
says reservedDevicesOnly; the create is sent at most once per reservation and never repeated when its outcome is
unknown (a lost answer may hide a device that bills: the next sync looks it up by its tag instead).
"""

from __future__ import annotations

from typing import Any

from hooks.driver import (
    FAILED_PRECONDITION,
    INVALID_ARGUMENT,
    RESOURCE_EXHAUSTED,
    UNAVAILABLE,
    UNKNOWN_CODE,
    Device,
    DriverError,
    MachineRequest,
)
from hooks.equinix import devices, tags, tenancy
from hooks.equinix.errors import (
    CapacityError,
    MetalError,
    ServerError,
    TransportError,
    UnexpectedResponse,
    Unprocessable,
)
from hooks.equinix.machine_call import CREATE_FAILED_PREFIX, MachineCall, driver_error, log, report_failure
from hooks.redact import redact

# Errors after which a create may or may not have happened.
AMBIGUOUS = (TransportError, ServerError, UnexpectedResponse)


def create_machine(call: MachineCall, request: MachineRequest) -> Device:
    """The new device, or a DriverError: `ambiguous` when the outcome is unknown, never retried here."""
    if call.res.problems:
        raise DriverError("; ".join(call.res.problems), INVALID_ARGUMENT)
    if not call.installation_id:
        raise DriverError("not creating a device without this installation's id: it could not be told apart "
                          "from another installation's", FAILED_PRECONDITION)
    secrets = [*call.res.secrets(), *([request.user_data] if request.user_data else [])]
    try:
        raw = _create(call, request.user_data)
    except AMBIGUOUS as exc:
        report_failure(call, exc)
        raise DriverError(
            f"the outcome of the create request is unknown ({redact(str(exc), secrets)}); the next sync looks "
            f"for the device by its tag {tags.uid_tag(call.uid)} instead of creating another",
            UNAVAILABLE, ambiguous=True) from exc
    except Unprocessable as exc:
        # The Go provider (machine-controller-manager-provider-equinix-metal, core.go CreateMachine) answers every
        # failed create with codes.Unavailable and "Could not create machine: <err>"; MCM then retries shortly.
        raise driver_error(exc, call, CREATE_FAILED_PREFIX, tuple(secrets), code=UNAVAILABLE) from exc
    except MetalError as exc:
        raise driver_error(exc, call, CREATE_FAILED_PREFIX, tuple(secrets)) from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str) or not raw["id"].strip():
        raise DriverError("the create request was answered without a device id; the next sync looks the device "
                          "up by its tag", UNKNOWN_CODE, ambiguous=True)
    log.info("machine %s/%s: created device %s", call.namespace, call.name, raw["id"])
    return call.device(raw)


def _create(call: MachineCall, rendered: str | None = None) -> Any:
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
