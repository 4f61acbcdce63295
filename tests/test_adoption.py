"""Adoption of a device MCM's Equinix provider made: every proof, the refusal that names it, and the tagging."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from hooks.equinix import adoption
from hooks.equinix.adoption import Claim, adopt, claim_for, class_markers, prove
from hooks.equinix.client import MetalClient
from hooks.equinix.tags import MANAGED_TAG, uid_tag
from hooks.equinix.tenancy import installation_tag, namespace_tag, tenant_tags
from tests.conftest import MetalSim

PROJECT = "2f3c1a52-5d7e-4b8a-9c1d-2e3f4a5b6c7d"
DEVICE_ID = "6a7b8c9d-0e1f-4a2b-8c3d-4e5f6a7b8c9d"
UID = "11111111-2222-4333-8444-555555555555"
INSTALLATION = "kube-system-uid"
CLASS_TAGS = ("kubernetes.io/cluster/shoot--dev--eqx", "kubernetes.io/role/node", "team:blue")
CLAIM = Claim(machine_name="worker-a-1", machine_uid=UID, namespace="shoot--dev--eqx", project_id=PROJECT,
              class_tags=CLASS_TAGS, installation_id=INSTALLATION)


def mcm_device(**changes: Any) -> dict[str, Any]:
    """A device as MCM's provider left it: hostname = Machine name, the class's tags and nothing else."""
    device: dict[str, Any] = {
        "id": DEVICE_ID, "hostname": "worker-a-1", "state": "active", "tags": list(CLASS_TAGS),
        "project": {"href": f"/metal/v1/projects/{PROJECT}"},
        "facility": {"code": "da11"}, "metro": {"code": "da"},
    }
    device.update(changes)
    return device


def test_a_device_mcm_made_for_the_machine_is_adoptable() -> None:
    proof = prove(mcm_device(), CLAIM)
    assert proof.adoptable and proof.failed == "" and proof.message == ""
    # The project may come as an id (include=project) as well as an href.
    assert prove(mcm_device(project={"id": PROJECT, "href": "/elsewhere"}), CLAIM).adoptable
    # Already ours (an earlier adoption whose answer was lost): still adoptable, nothing else changes.
    ours = mcm_device(tags=[*CLASS_TAGS, MANAGED_TAG, uid_tag(UID), *tenant_tags(INSTALLATION, CLAIM.namespace)])
    assert prove(ours, CLAIM).adoptable


REFUSALS = [
    # (what differs, proof that fails, words the reason must contain)
    ("no device object", None, "device", "no usable device"),
    ("device without id", {"id": ""}, "device", "no usable device"),
    ("being deleted", {"state": "deprovisioning"}, "state", "is deprovisioning"),
    ("deleted", {"state": "deleted"}, "state", "is deleted"),
    ("other project", {"project": {"href": "/metal/v1/projects/other-project"}}, "project", "project other-project"),
    ("project not named", {"project": None}, "project", "a project the API did not name"),
    ("other hostname", {"hostname": "worker-a-2"}, "hostname", "'worker-a-2', not the Machine name 'worker-a-1'"),
    ("no cluster tag", {"tags": ["kubernetes.io/role/node"]}, "cluster tag",
     "kubernetes.io/cluster/shoot--dev--eqx"),
    ("another cluster", {"tags": ["kubernetes.io/cluster/shoot--prod", "kubernetes.io/role/node"]}, "cluster tag",
     "kubernetes.io/cluster/shoot--dev--eqx"),
    ("no role tag", {"tags": ["kubernetes.io/cluster/shoot--dev--eqx"]}, "role tag", "kubernetes.io/role/node"),
    ("another owner", {"tags": [*CLASS_TAGS, MANAGED_TAG, uid_tag("99999999-0000-4000-8000-000000000000")]},
     "owner", "metal-machine-hooks:uid:99999999"),
    ("another owner, no managed tag", {"tags": [*CLASS_TAGS, uid_tag("99999999-0000-4000-8000-000000000000")]},
     "owner", "another Machine's ownership tag"),
    ("another installation", {"tags": [*CLASS_TAGS, installation_tag("other-cluster")]}, "tenant",
     "metal-machine-hooks:installation:other-cluster"),
    ("another namespace", {"tags": [*CLASS_TAGS, namespace_tag("team-b")]}, "tenant",
     "metal-machine-hooks:namespace:team-b"),
]


@pytest.mark.parametrize(("case", "changes", "failed", "words"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_each_missing_proof_refuses_and_names_itself(case: str, changes: dict[str, Any] | None, failed: str,
                                                     words: str) -> None:
    device = None if changes is None else mcm_device(**changes)
    proof = prove(device, CLAIM)
    assert not proof.adoptable
    assert proof.failed == failed and failed in adoption.PROOFS
    assert words in proof.reason
    assert f"({failed} proof failed)" in proof.message and proof.remedy in proof.message
    assert proof.remedy  # every refusal says what the user can do


def test_a_class_without_cluster_or_role_tag_proves_nothing() -> None:
    for class_tags, failed in ((("kubernetes.io/role/node",), "cluster tag"),
                               (("kubernetes.io/cluster/shoot--dev--eqx",), "role tag")):
        claim = Claim(**{**CLAIM.__dict__, "class_tags": class_tags})
        proof = prove(mcm_device(), claim)
        assert not proof.adoptable and proof.failed == failed and "the class names none" in proof.reason


def test_without_an_installation_id_the_tenant_proof_is_skipped() -> None:
    claim = Claim(**{**CLAIM.__dict__, "installation_id": ""})
    assert prove(mcm_device(tags=[*CLASS_TAGS, installation_tag("other-cluster")]), claim).adoptable


def test_class_markers_follow_the_go_provider() -> None:
    # The last tag containing each marker; a tag containing both markers counts as the cluster tag only.
    assert class_markers(["kubernetes.io/cluster/a", "kubernetes.io/role/x", "kubernetes.io/cluster/b"]) == (
        "kubernetes.io/cluster/b", "kubernetes.io/role/x")
    assert class_markers(["kubernetes.io/cluster/a/kubernetes.io/role/x"]) == (
        "kubernetes.io/cluster/a/kubernetes.io/role/x", None)
    assert class_markers([]) == (None, None)


class RecordingClient:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []

    def update_tags(self, device_id: str, new_tags: list[str]) -> dict[str, Any]:
        self.calls.append((device_id, list(new_tags)))
        return mcm_device(tags=list(new_tags))


def test_adopt_adds_ownership_and_tenant_tags_and_keeps_the_class_tags() -> None:
    client = RecordingClient()
    proof, device = adopt(client, mcm_device(), CLAIM)
    assert proof.adoptable and device is not None
    ((device_id, written),) = client.calls
    assert device_id == DEVICE_ID
    assert written == [*CLASS_TAGS, MANAGED_TAG, uid_tag(UID), *tenant_tags(INSTALLATION, CLAIM.namespace)]
    assert device["tags"] == written
    # Adopting again (the next sync) changes nothing and calls nothing.
    again_client = RecordingClient()
    proof, again = adopt(again_client, copy.deepcopy(device), CLAIM)
    assert proof.adoptable and again == device and again_client.calls == []


def test_adopt_refuses_without_touching_the_device() -> None:
    client = RecordingClient()
    proof, device = adopt(client, mcm_device(hostname="someone-else"), CLAIM)
    assert not proof.adoptable and device is None and client.calls == []


def test_adopt_through_the_metal_api(metal_sim: MetalSim) -> None:
    seeded = metal_sim.sim.add_device(metal_sim.project, hostname="worker-a-1", tags=list(CLASS_TAGS), state="active")
    client = MetalClient(metal_sim.token, base_url=metal_sim.url)
    claim = Claim(**{**CLAIM.__dict__, "project_id": metal_sim.project})
    proof, device = adopt(client, client.get_device(seeded["id"]), claim)
    assert proof.adoptable and device is not None
    (stored,) = metal_sim.sim.devices()
    assert stored["id"] == seeded["id"]
    assert set(stored["tags"]) == {*CLASS_TAGS, MANAGED_TAG, uid_tag(UID), *tenant_tags(INSTALLATION, claim.namespace)}


def test_the_claim_is_read_from_the_machine_and_its_class_as_the_go_provider_reads_them() -> None:
    machine = {"metadata": {"name": "worker-a-1", "uid": UID, "namespace": CLAIM.namespace}}
    machine_class = {"providerSpec": {"projectid": PROJECT, "Tags": list(CLASS_TAGS)}}  # keys in any case
    assert claim_for(machine, machine_class, INSTALLATION) == CLAIM
    assert prove(mcm_device(), claim_for(machine, machine_class, INSTALLATION)).adoptable
    # A class without a project proves nothing about any device.
    empty = claim_for(machine, {})
    assert empty.project_id == "" and not prove(mcm_device(), empty).adoptable
