"""Deleting named Machines on request, in current MCM's form (issue 16): the MachineDeployment annotation.

MCM no longer reads `node.machine.sapcloud.io/trigger-deletion-by-mcm` on Nodes (docs/faq.md: "no longer supported
on node objects. It is however, still used on the machineDeployment objects (used by the CA-MCM cloud provider
integration)"). A scaler names the Machines it wants gone on the MachineDeployment, `name1~time1,name2~time2`
(a bare `name` gets the deployment's `machine.sapcloud.io/last-deployment-replica-change-by-scaler-time`), and
lowers the replicas. MCM's MachineDeployment controller (pkg/controller/deployment.go) then marks each named
Machine that exists and is neither Failed nor Terminating with `machinepriority.machine.sapcloud.io: "1"` and
`machine.sapcloud.io/marked-for-deletion-time: <time>`, and drops the other entries from the annotation; the
MachineSet deletes the lowest priority first, and (pkg/controller/machineset.go getMachinesMarkedForDeletion) every
Machine marked at or before the set's last-deployment-replica-change-by-scaler-time. So the replica decrease removes
exactly the named Machines.

Here the decisions are pure functions. Where they run: a hook cannot write its own parent's annotations, the
MachineDeployment hook does not own Machines, and a MachineSet's Machines are OnDelete children (a hook cannot
change an existing Machine's annotations). So the MachineDeployment hook passes the normalised list and the scaler
time down to its MachineSets (`metal-machine-hooks/machines-to-delete`, `last-deployment-replica-change-by-scaler-
time`; MachineSets are updated in place), and the MachineSet hook sees its Machines as MCM's marks would leave them
(`with_marks`) when it picks which to delete: the named ones first, and every one marked at or before its scaler
time (`marked_for_deletion`). The marks themselves are not written on the Machines (docs/nodes.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hooks import objects
from hooks.mcm import vocabulary as mcm
from hooks.mcm.timefmt import format_time, parse_time

TRIGGER_DELETION_ANNOTATION = "node.machine.sapcloud.io/trigger-deletion-by-mcm"
MARKED_FOR_DELETION_TIME = "machine.sapcloud.io/marked-for-deletion-time"
SCALER_TIME_ANNOTATION = "machine.sapcloud.io/last-deployment-replica-change-by-scaler-time"
PRIORITY_ANNOTATION = mcm.PRIORITY_ANNOTATION
MARKED_PRIORITY = "1"
# How the MachineDeployment hook hands the (normalised) list to its MachineSets: MCM keeps the scaler's annotation
# off MachineSets, so the set carries our own copy.
SET_DELETION_ANNOTATION = "metal-machine-hooks/machines-to-delete"


@dataclass(frozen=True)
class Entry:
    """One named Machine and when the scaler decided it should go (RFC 3339, as written)."""

    machine: str
    marked_at: str

    def text(self) -> str:
        return f"{self.machine}~{self.marked_at}"


def entries(value: Any, scaler_time: str) -> list[Entry]:
    """The annotation's entries as MCM reads them: `name` gets `scaler_time`, `name~time` needs an RFC 3339 time,
    anything else is dropped (MCM drops it so the scaler writes it again correctly)."""
    found: list[Entry] = []
    for item in str(value or "").split(","):
        parts = item.split("~")
        if len(parts) == 1 and parts[0]:
            if not scaler_time:
                continue
            parts = [parts[0], scaler_time]
        if len(parts) != 2 or not parts[0] or parse_time(parts[1]) is None or "T" not in parts[1]:
            continue
        found.append(Entry(parts[0], parts[1]))
    return found


def _phase(machine: Any) -> str:
    return objects.string(machine, "status", "currentStatus", "phase")


def _going(machine: Any) -> bool:
    """MCM's IsMachineFailedOrTerminating (a deletionTimestamp counts as terminating too)."""
    return _phase(machine) in (mcm.FAILED, mcm.TERMINATING) or bool(objects.string(machine, "metadata",
                                                                                     "deletionTimestamp"))


@dataclass(frozen=True)
class DeletionMarks:
    """What MCM's MachineDeployment controller would write for the annotation.

    `remaining`: the entries still pending (named Machines that exist and are not going), i.e. the annotation's new
    value (`value`, "" = remove it). `scaler_time`: the deployment's scaler time (now, when the scaler set none).
    `marks`: per Machine name, the annotations to set on it (only Machines not already marked).
    """

    remaining: list[Entry]
    scaler_time: str
    marks: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def value(self) -> str:
        return ",".join(e.text() for e in self.remaining)


def deletion_marks(annotations: Mapping[str, Any], machines: Iterable[Any], now: datetime) -> DeletionMarks | None:
    """From a MachineDeployment's (or the set's copied) annotations and its Machines; None when none is named."""
    raw = annotations.get(TRIGGER_DELETION_ANNOTATION) or annotations.get(SET_DELETION_ANNOTATION)
    if not raw:
        return None
    scaler_time = str(annotations.get(SCALER_TIME_ANNOTATION) or "") or format_time(now)
    by_name = {objects.name(m): m for m in machines if objects.name(m)}
    remaining: list[Entry] = []
    marks: dict[str, dict[str, str]] = {}
    for entry in entries(raw, scaler_time):
        machine = by_name.get(entry.machine)
        if machine is None or _going(machine):
            continue
        remaining.append(entry)
        notes = objects.annotations(machine)
        if notes.get(PRIORITY_ANNOTATION) == MARKED_PRIORITY and notes.get(MARKED_FOR_DELETION_TIME):
            continue
        marks[entry.machine] = {PRIORITY_ANNOTATION: MARKED_PRIORITY,
                                MARKED_FOR_DELETION_TIME: str(notes.get(MARKED_FOR_DELETION_TIME) or entry.marked_at)}
    return DeletionMarks(remaining, scaler_time, marks)


def with_marks(machines: Iterable[dict[str, Any]], marks: DeletionMarks | None) -> list[dict[str, Any]]:
    """The Machines as they will be once marked, so the set's deletion order sees this call's marks already."""
    result = []
    for machine in machines:
        extra = (marks.marks if marks else {}).get(objects.name(machine))
        if extra:
            meta = dict(objects.meta(machine))
            meta["annotations"] = {**objects.annotations(machine), **extra}
            machine = {**machine, "metadata": meta}
        result.append(machine)
    return result


def marked_for_deletion(machines: Iterable[Any], scaler_time: Any) -> list[str]:
    """MCM's getMachinesMarkedForDeletion: Machines with priority 1 marked at or before the set's scaler time."""
    limit = parse_time(scaler_time)
    if limit is None:
        return []
    names = []
    for machine in machines:
        notes = objects.annotations(machine)
        marked = parse_time(notes.get(MARKED_FOR_DELETION_TIME))
        if notes.get(PRIORITY_ANNOTATION) == MARKED_PRIORITY and marked is not None and marked <= limit:
            names.append(objects.name(machine))
    return names
