"""The schema checker itself must catch what the API server would prune or reject, or status tests prove nothing."""

import pytest

from tests.crd_schema import load_crd_schema, pruned_paths, status_problems

SCHEMA = {
    "type": "object",
    "properties": {
        "phase": {"type": "string"},
        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "items": {"type": "array", "items": {"type": "object", "properties": {"a": {"type": "integer"}}}},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def test_pruned_paths_finds_unknown_fields_at_any_depth() -> None:
    value = {"phase": "x", "bogus": 1, "free": {"any": 1}, "items": [{"a": 1, "b": 2}], "labels": {"k": "v"}}
    assert pruned_paths(value, SCHEMA) == [".bogus", ".items[0].b"]


def test_status_problems_against_mcm_machine_crd() -> None:
    if load_crd_schema("Machine", "mcm") is None:
        pytest.skip("MCM CRDs not available beside the repository")
    good = {"currentStatus": {"phase": "Running", "timeoutActive": False}, "lastOperation": {"state": "Successful"}}
    assert [p for p in status_problems(good, "Machine") if p.startswith("mcm")] == []
    bad = {"currentStatus": {"phase": 3}, "deviceID": "x"}
    found = [p for p in status_problems(bad, "Machine") if p.startswith("mcm")]
    assert any("deviceID" in p for p in found)
    assert any("phase" in p for p in found)
