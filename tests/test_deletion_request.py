"""Delete on request, MCM's current form: named Machines on the MachineDeployment annotation (issue 16)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from hooks.mcm.deletion_request import (
    MARKED_FOR_DELETION_TIME,
    PRIORITY_ANNOTATION,
    SCALER_TIME_ANNOTATION,
    TRIGGER_DELETION_ANNOTATION,
    Entry,
    deletion_marks,
    entries,
    marked_for_deletion,
    with_marks,
)

NOW = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
T1 = "2026-12-03T09:00:00Z"
T2 = "2026-12-03T09:30:00Z"


def machine(name: str, phase: str = "Running", **annotations: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "annotations": {PRIORITY_ANNOTATION: "3", **annotations}},
            "status": {"currentStatus": {"phase": phase}}}


@pytest.mark.parametrize(
    ("value", "scaler", "expected"),
    [
        (f"m-1~{T1},m-2~{T2}", "", [Entry("m-1", T1), Entry("m-2", T2)]),
        ("m-1,m-2", T2, [Entry("m-1", T2), Entry("m-2", T2)]),  # bare names get the scaler's time
        (f"m-1~yesterday,m-2~{T1},~{T1},a~b~c,", T2, [Entry("m-2", T1)]),  # malformed entries are dropped
        ("m-1", "", []),
    ],
)
def test_entries_are_read_as_mcm_reads_them(value: str, scaler: str, expected: list[Entry]) -> None:
    assert entries(value, scaler) == expected


def test_named_machines_are_marked_and_gone_ones_leave_the_annotation() -> None:
    machines = [machine("m-1"), machine("m-2"), machine("m-3", "Failed"),
                machine("m-4", **{PRIORITY_ANNOTATION: "1", MARKED_FOR_DELETION_TIME: T1})]
    notes = {TRIGGER_DELETION_ANNOTATION: f"m-2~{T2},m-3~{T2},gone~{T2},m-4~{T2}", SCALER_TIME_ANNOTATION: T2}
    marks = deletion_marks(notes, machines, NOW)
    assert marks is not None
    assert marks.value == f"m-2~{T2},m-4~{T2}"  # the Failed and the missing Machine are dropped
    assert marks.marks == {"m-2": {PRIORITY_ANNOTATION: "1", MARKED_FOR_DELETION_TIME: T2}}  # m-4 already marked
    assert deletion_marks({}, machines, NOW) is None


def test_without_a_scaler_time_now_is_used() -> None:
    marks = deletion_marks({TRIGGER_DELETION_ANNOTATION: "m-1"}, [machine("m-1")], NOW)
    assert marks is not None and marks.scaler_time == "2026-12-03T10:00:00Z"
    assert marks.marks["m-1"][MARKED_FOR_DELETION_TIME] == "2026-12-03T10:00:00Z"


def test_the_set_deletes_exactly_the_marked_machines_up_to_its_scaler_time() -> None:
    machines = [machine("m-1"), machine("m-2"), machine("m-3")]
    marks = deletion_marks({TRIGGER_DELETION_ANNOTATION: f"m-2~{T1}"}, machines, NOW)
    seen = with_marks(machines, marks)
    assert marked_for_deletion(seen, T2) == ["m-2"]
    assert marked_for_deletion(seen, "2026-12-03T08:00:00Z") == []  # marked after the set saw the replica change
    assert marked_for_deletion(seen, None) == []
    assert machines[1]["metadata"]["annotations"][PRIORITY_ANNOTATION] == "3"  # inputs are not changed
