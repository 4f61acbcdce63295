"""Every lastOperation description and errorCode the hooks write, against MCM's and the Go provider's.

Sources (read at gardener/machine-controller-manager 54caf546e and gardener/machine-controller-manager-provider-
equinix-metal HEAD; paths below are in those repositories):
- MCM: pkg/util/provider/machinecontroller/machine.go (triggerCreationFlow), machine_util.go (reconcileMachineHealth,
  machineCreateErrorHandler, drainNode, deleteVM), pkg/util/provider/machineutils/utils.go (the step names),
  pkg/util/provider/machinecodes/codes/codes.go (strToCode: every code name MCM knows).
- Go provider: pkg/provider/core.go (CreateMachine answers every failed create with codes.Unavailable and
  "Could not create machine: <err>"; createDeviceWithReservations' reserved-only text).

A row whose `mcm` is a Go format string must match it (%s/%v/%+v stand for any text); a row marked OURS has no MCM
counterpart and says why in `why`. Adding a text to the hooks without a row here is caught by
test_every_description_producer_has_a_row.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from hooks.config import Settings
from hooks.driver import DriverError
from hooks.equinix import errors as metal_errors
from hooks.equinix.errors import Unprocessable
from hooks.mcm import machine_state as ms
from hooks.mcm import vocabulary as mcm
from hooks.mcm.drain import plan_drain
from tests import test_drain as drain_fixture
from tests.machine_support import FakeMetal
from tests.test_equinix_driver import driver, request
from tests.test_machine_state import NOW, device, machine, node

OURS = None
# MCM's code names (codes.go strToCode).
MCM_CODES = {"OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound", "AlreadyExists",
             "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted", "OutOfRange", "Unimplemented",
             "Internal", "Unavailable", "DataLoss", "Unauthenticated", "Uninitialized"}


def _seen(phase: str = "", **kw: float) -> ms.Observed:
    """A Machine in `phase` without a Node."""
    return ms.Observed(machine(phase, **kw), None, NOW, Settings())


def _op(seen: ms.Observed, event: object) -> ms.Operation:
    operation = ms.next_status(seen, event).operation  # type: ignore[arg-type]
    assert operation is not None
    return operation


def _drain(**kw: object) -> str:
    the_node = kw.pop("the_node", drain_fixture.node())
    step = plan_drain(drain_fixture.machine(**kw), the_node, drain_fixture.attachments(),  # type: ignore[arg-type]
                      drain_fixture.SETTINGS, drain_fixture.NOW)
    return step.description


def _create_422() -> str:
    fake = FakeMetal()
    fake.fail("create_device", Unprocessable("HTTP 422: plan is not valid", status=422))
    with pytest.raises(DriverError) as caught:
        driver(fake).create_machine(request())
    assert caught.value.code == "Unavailable"  # core.go: status.Error(codes.Unavailable, ...)
    return caught.value.message


@dataclass(frozen=True)
class Row:
    name: str
    text: Callable[[], str]
    mcm: str | None  # MCM's (or the Go provider's) format string; None: ours
    source: str
    why: str = ""


ROWS = [
    Row("creating", lambda: _op(_seen(), ms.HasDevice(device(ms.DeviceState.PROVISIONING))).description,
        "Creating machine on cloud provider", "machine.go triggerCreationFlow"),
    Row("joined", lambda: _op(ms.Observed(machine("Pending"), node(), NOW, Settings()),
                              ms.HasDevice(device())).description,
        "Machine %s successfully joined the cluster in %s", "machine_util.go reconcileMachineHealth"),
    Row("re-joined", lambda: _op(ms.Observed(machine("Unknown"), node(), NOW, Settings()),
                                 ms.HasDevice(device())).description,
        "Machine %s successfully re-joined the cluster", "machine_util.go reconcileMachineHealth"),
    Row("unhealthy", lambda: _op(ms.Observed(machine("Running"), node(ready=False), NOW, Settings()),
                                 ms.HasDevice(device())).description,
        "Machine %s is unhealthy - changing MachinePhase to Unknown. Node conditions: %+v",
        "machine_util.go reconcileMachineHealth"),
    Row("node missing", lambda: _op(_seen("Running"), ms.HasDevice(device())).description,
        "Node object went missing. Machine %s is unhealthy - changing MachinePhase to Unknown",
        "machine_util.go reconcileMachineHealth"),
    Row("join timeout", lambda: _op(_seen("Pending", age=1300), ms.NoDevice()).description,
        "Machine %s failed to join the cluster in 20m0s minutes.", "machine_util.go reconcileMachineHealth "
        "(a Go time.Duration printed with %s)"),
    Row("health timeout", lambda: _op(_seen("Unknown", since=660), ms.HasDevice(device())).description,
        "Machine %s health checks failing since last 10m0s minutes. Updating machine phase to Failed. "
        "Node Conditions: %+v", "machine_util.go reconcileMachineHealth"),
    Row("create failed", lambda: _op(_seen(), ms.CallFailed(DriverError("HTTP 429", "ResourceExhausted"))).description,
        "Cloud provider message - %s", "machine_util.go machineCreateErrorHandler"),
    Row("create 422 (Go provider)", _create_422, "Could not create machine: %v",
        "provider-equinix-metal core.go CreateMachine"),
    Row("drain running", lambda: _drain(), "Initiate node drain", "utils.go InitiateDrain"),
    Row("drain skipped: no node name", lambda: _drain(labels={}),
        "Skipping drain as nodeName is not a valid one for machine. Initiate VM deletion",
        "machine_util.go drainNode (printLogInitError appends InitiateVMDeletion)"),
    Row("drain forced", lambda: _drain(labels={"node": drain_fixture.NODE, "force-deletion": "True"}),
        OURS, "machine_util.go drainNode",
        "MCM still runs a one-minute forced drain; the hooks delete the device at once (docs/drain.md)"),
    Row("VM deletion failed", lambda: _op(_seen("Terminating"), ms.DeleteFailed(DriverError("timeout", "Unknown"))
                                          ).description,
        "VM deletion failed due to - %s. However, will re-try in the next resync. Initiate VM deletion",
        "machine_util.go deleteVM"),
    Row("VM deleted", lambda: _op(_seen("Terminating"), ms.Deleted()).description, OURS, "machine_util.go deleteVM",
        "MCM says 'VM deletion was successful. Initiate node object deletion' and deletes the Node next; the hooks "
        "leave the Node to the Node-side work and go to the finalizer: they print the step they take"),
    Row("device failed", lambda: _op(_seen("Running"), ms.HasDevice(device(ms.DeviceState.FAILED))).description,
        "Cloud provider message - %s", "machine_util.go machineCreateErrorHandler / reconcileMachineHealth"),
    Row("device gone", lambda: _op(_seen("Running"), ms.DeviceGone("d-1", "owner:u-1")).description,
        "Cloud provider message - %s", "machine_util.go reconcileMachineHealth (GetMachineStatus NotFound)"),
]


def _pattern(go_format: str) -> re.Pattern[str]:
    parts = re.split(r"%[+]?[sv]", go_format)
    return re.compile(".+".join(re.escape(p) for p in parts), re.DOTALL)


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_description_matches_mcm(row: Row) -> None:
    text = row.text()
    assert text, row.name
    if row.mcm is None:
        assert row.why and row.source, f"{row.name}: an own text must say why it differs"
        return
    assert _pattern(row.mcm).fullmatch(text), f"{text!r} does not match MCM's {row.mcm!r} ({row.source})"


def test_every_error_code_is_an_mcm_code() -> None:
    """errorCode values: the driver seam's codes and each Equinix error class's code, all MCM code names."""
    import hooks.driver as seam

    seam_codes = {getattr(seam, n) for n in ("INVALID_ARGUMENT", "NOT_FOUND", "UNAVAILABLE", "RESOURCE_EXHAUSTED",
                                             "UNKNOWN_CODE", "UNAUTHENTICATED", "PERMISSION_DENIED",
                                             "FAILED_PRECONDITION", "UNIMPLEMENTED")}
    classes = [c for c in vars(metal_errors).values() if isinstance(c, type) and issubclass(c, metal_errors.MetalError)]
    assert len(classes) > 5
    assert seam_codes | {c.mcm_code for c in classes} <= MCM_CODES


def test_timeouts_print_go_durations() -> None:
    """MCM prints a time.Duration ("1h30m0s"), never a number of minutes, before the word "minutes"."""
    seen = ms.Observed(machine("Pending", age=5500, creationTimeout="90m"), None, NOW, Settings())
    assert _op(seen, ms.NoDevice()).description == "Machine worker-a failed to join the cluster in 1h30m0s minutes."
    assert mcm.health_timeout("m", "10m0s", "x").startswith("Machine m health checks failing since last 10m0s minutes.")


def test_every_description_producer_has_a_row() -> None:
    """The vocabulary's text functions and constants each appear in a row above (by what they produce)."""
    produced = {row.text() for row in ROWS}
    assert any(t.startswith(mcm.CREATING) for t in produced)
    for fragment in ("successfully joined", "re-joined", "is unhealthy", "went missing", "failed to join",
                     "health checks failing", mcm.CLOUD_PROVIDER_MESSAGE.split("{")[0]):
        assert any(fragment in t for t in produced), fragment
