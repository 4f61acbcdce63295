"""hooks.objects: odd shapes read as empty values, never raise."""

from __future__ import annotations

from hooks import objects


def test_mapping_follows_a_path_and_turns_every_wrong_type_into_an_empty_mapping() -> None:
    node = {"status": {"nodeInfo": {"os": "linux"}}, "spec": [1, 2]}
    assert objects.mapping(node, "status", "nodeInfo") == {"os": "linux"}
    assert objects.mapping(node, "spec") == {}
    assert objects.mapping(node, "spec", "taints") == {}
    assert objects.mapping("not an object", "metadata") == {}
    assert objects.mapping(None) == {}


def test_mappings_keeps_only_the_objects_of_a_list() -> None:
    node = {"status": {"conditions": [{"type": "Ready"}, "junk", 3, None, {"type": "DiskPressure"}]}}
    assert objects.mappings(node, "status", "conditions") == [{"type": "Ready"}, {"type": "DiskPressure"}]
    assert objects.mappings({"status": {"conditions": {"type": "Ready"}}}, "status", "conditions") == []
    assert objects.mappings([{"a": 1}, 2]) == [{"a": 1}]


def test_string_and_metadata_readers() -> None:
    machine = {"metadata": {"name": "m-1", "namespace": 7, "labels": ["x"], "annotations": {"a": "b"}, "uid": "u"}}
    assert objects.name(machine) == "m-1"
    assert objects.namespace(machine) == ""
    assert objects.uid(machine) == "u"
    assert objects.labels(machine) == {}
    assert objects.annotations(machine) == {"a": "b"}
    assert objects.string(machine, "metadata", "missing", default="d") == "d"
    assert objects.string("plain") == "plain"


def test_children_drops_entries_that_are_not_objects() -> None:
    body = {"related": {"Node.v1": {"n1": {"kind": "Node"}, "n2": "junk"}, "Secret.v1": ["wrong"]}}
    assert objects.children(body, "related", "Node.v1") == {"n1": {"kind": "Node"}}
    assert objects.children(body, "related", "Secret.v1") == {}
    assert objects.children(body, "children", "Node.v1") == {}
