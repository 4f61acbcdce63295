"""A Node is drained, health-checked or removed only when it is provably the Machine's device (issue 14)."""

from __future__ import annotations

from hooks.driver import Address, Device, DeviceState
from hooks.mcm.node_proof import names_device, prove

DEVICE = Device(
    id="6d1f6a3e-1111-4a4a-9c9c-000000000001",
    provider_id="equinixmetal://da/6d1f6a3e-1111-4a4a-9c9c-000000000001",
    state=DeviceState.ACTIVE,
    addresses=(Address("10.70.1.4", "InternalIP"), Address("147.75.10.20", "ExternalIP"),
               Address("2604:1380:4641::5", "ExternalIP"), Address("m-1", "Hostname")),
)


def _node(name: str = "m-1", provider_id: str | None = None, addresses: object = None) -> dict[str, object]:
    spec = {"providerID": provider_id} if provider_id is not None else {}
    return {"metadata": {"name": name}, "spec": spec, "status": {"addresses": addresses or []}}


def test_both_provider_id_forms_name_the_device() -> None:
    assert names_device("equinixmetal://6d1f6a3e-1111-4a4a-9c9c-000000000001", DEVICE)
    assert names_device("equinixmetal://da/6d1f6a3e-1111-4a4a-9c9c-000000000001", DEVICE)
    assert names_device("equinixmetal://sv/6d1f6a3e-1111-4a4a-9c9c-000000000001/", DEVICE)
    assert not names_device("aws:///us-east-1a/6d1f6a3e-1111-4a4a-9c9c-000000000001", DEVICE)
    assert not names_device("equinixmetal://da/other", DEVICE)
    assert not names_device("equinixmetal://", DEVICE)
    assert not names_device("6d1f6a3e-1111-4a4a-9c9c-000000000001", DEVICE)


def test_a_namesake_node_is_not_proven_by_its_name_or_label() -> None:
    """The attack: a Machine named after someone else's Node, with no device, must never prove that Node."""
    victim = _node("prod-db-1", "equinixmetal://da/ffffffff-0000-0000-0000-000000000000",
                   [{"type": "ExternalIP", "address": "147.75.99.1"}])
    assert not prove(victim, None).proven
    assert not prove(victim, DEVICE).proven


def test_a_node_with_the_device_provider_id_is_proven() -> None:
    proof = prove(_node(provider_id="equinixmetal://6d1f6a3e-1111-4a4a-9c9c-000000000001"), DEVICE)
    assert proof.proven and DEVICE.id in proof.reason


def test_without_a_provider_id_only_a_shared_public_address_proves_the_node() -> None:
    assert prove(_node(addresses=[{"type": "ExternalIP", "address": "147.75.10.20"}]), DEVICE).proven
    assert prove(_node(addresses=[{"type": "ExternalIP", "address": "2604:1380:4641::5"}]), DEVICE).proven
    # Private addresses repeat across projects and clusters.
    assert not prove(_node(addresses=[{"type": "InternalIP", "address": "10.70.1.4"}]), DEVICE).proven
    assert not prove(_node(addresses=[{"type": "ExternalIP", "address": "10.70.1.4"}]), DEVICE).proven
    assert not prove(_node(addresses=[{"type": "Hostname", "address": "m-1"}]), DEVICE).proven


def test_a_node_of_any_shape_is_answered_not_raised() -> None:
    for node in (None, "junk", {"spec": "x", "status": {"addresses": "x"}}, {"status": {"addresses": [1, None]}}):
        assert not prove(node, DEVICE).proven
