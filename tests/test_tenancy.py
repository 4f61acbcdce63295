"""Tenant tags: installation and namespace, within the API's tag limit, and never shared by two tenants."""

from __future__ import annotations

from hooks.equinix.tags import MAX_TAG_LENGTH
from hooks.equinix.tenancy import in_tenant, installation_tag, missing_tenant_tags, namespace_tag, tenant_tags

KUBE_SYSTEM_UID = "3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"


def test_tags_fit_the_api_limit_even_for_the_longest_namespace() -> None:
    longest = "n" * 63
    for tag in (namespace_tag(longest), installation_tag("x" * 200), *tenant_tags(KUBE_SYSTEM_UID, "team-a")):
        assert len(tag) <= MAX_TAG_LENGTH
    assert namespace_tag("team-a") == "metal-machine-hooks:namespace:team-a"
    assert namespace_tag(longest) != namespace_tag("n" * 62 + "m")


def test_two_namespaces_and_two_installations_never_share_a_tenant() -> None:
    mine = tenant_tags(KUBE_SYSTEM_UID, "team-a")
    assert in_tenant([*mine, "kubernetes.io/cluster/shoot--demo"], KUBE_SYSTEM_UID, "team-a")
    assert not in_tenant(mine, KUBE_SYSTEM_UID, "team-b")
    assert not in_tenant(mine, "another-cluster-uid", "team-a")
    assert not in_tenant(["kubernetes.io/cluster/shoot--demo"], KUBE_SYSTEM_UID, "team-a")
    # A device that claims two tenants is nobody's to collect.
    assert not in_tenant([*mine, namespace_tag("team-b")], KUBE_SYSTEM_UID, "team-a")


def test_a_device_made_before_tenancy_lacks_both_tags() -> None:
    old = ["metal-machine-hooks:managed", "metal-machine-hooks:uid:abc"]
    assert missing_tenant_tags(old, KUBE_SYSTEM_UID, "team-a") == tenant_tags(KUBE_SYSTEM_UID, "team-a")
    assert missing_tenant_tags(old + tenant_tags(KUBE_SYSTEM_UID, "team-a"), KUBE_SYSTEM_UID, "team-a") == []
