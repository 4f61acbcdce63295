"""MachineClass, providerSpec and credentials resolution: Go-provider classes keep working, problems are named."""

from __future__ import annotations

import base64

import pytest

from hooks.equinix.providerspec import Resolution, fold_keys, name_problems, parse_provider_spec
from hooks.equinix.providerspec import resolve as resolve_class
from tests.machine_support import NS, SECRET_ID, UID, machine_class, set_secret_value, sync_request

GO_TAGS = [
    "Name: sample-machine-name",
    "kubernetes.io/cluster/YOUR_CLUSTER_NAME: 1",
    "kubernetes.io/role/YOUR_ROLE_NAME: 1",
    "tag1: tag1-value",
    "tag2: tag2-value",
]
GO_GENERIC = {
    "projectID": "e3db5484-f789-43e1-8aea-a1921cae50dd", "OS": "alpine_3", "metro": "ny",
    "machineType": "t1.small.x86", "billingCycle": "hourly", "tags": GO_TAGS,
}
GO_FACILITIES = {**GO_GENERIC, "facilities": ["ewr1", "ny5"]}
GO_RESERVED = {
    **GO_FACILITIES,
    "reservationIDs": ["932eecda-6808-44b9-a3be-3abef49796ef", "558c4d16-3523-4456-9c3a-73722920a7bb"],
    "reservedDevicesOnly": True,
}


@pytest.mark.parametrize("raw", [GO_GENERIC, GO_FACILITIES, GO_RESERVED], ids=["generic", "facilities", "reserved"])
def test_go_provider_example_classes_are_accepted(raw) -> None:
    spec, problems, ignored = parse_provider_spec(raw, UID)
    assert problems == []
    assert spec is not None and spec.metro == "ny" and spec.machine_type == "t1.small.x86"
    assert ignored == (["facilities"] if "facilities" in raw else [])


def test_reserved_class_keeps_reservation_order() -> None:
    spec, _, _ = parse_provider_spec(GO_RESERVED, UID)
    assert spec.reservation_ids == tuple(GO_RESERVED["reservationIDs"]) and spec.reserved_only is True


def test_keys_match_case_insensitively_and_exact_spelling_wins() -> None:
    raw = {"projectid": "p", "os": "alpine_3", "METRO": "da", "MachineType": "c3.small.x86", "billingcycle": "daily",
           "Tags": GO_TAGS, "SSHKeys": ["k1"], "OS": "ubuntu_22_04"}
    spec, problems, ignored = parse_provider_spec(raw, UID)
    assert problems == []
    got = (spec.project_id, spec.metro, spec.operating_system, spec.billing_cycle)
    assert got == ("p", "da", "ubuntu_22_04", "daily")
    assert spec.ssh_keys == ("k1",)
    assert ignored == ["os"]


def test_userdata_in_provider_spec_is_reported_as_ignored() -> None:
    folded, ignored = fold_keys({**GO_GENERIC, "userdata": "#!/bin/sh"})
    assert "userdata" not in folded and ignored == ["userdata"]


def test_every_problem_is_reported_at_once_with_its_field() -> None:
    _, problems, _ = parse_provider_spec({"billingCycle": "weekly", "tags": ["x" * 81], "sshKeys": "k1"}, UID)
    assert problems == [
        "providerSpec.OS: Required value: OS or IPXEScriptURL is required",
        'providerSpec.billingCycle: Unsupported value: "weekly": supported values: "hourly", "daily", "monthly", '
        '"yearly"',
        "providerSpec.machineType: Required value: Machine Type is required",
        "providerSpec.metro: Required value: Metro is required",
        "providerSpec.projectID: Required value: Project ID is required",
        'providerSpec.sshKeys: Invalid value: "k1": must be a list',
        f'providerSpec.tags[0]: Too long: may have at most 80 characters, "{"x" * 56}... has 81',
        "providerSpec.tags: Required value: Tag required of the form kubernetes.io/cluster/****",
        "providerSpec.tags: Required value: Tag required of the form kubernetes.io/role/****",
    ]


def test_ipxe_url_replaces_os() -> None:
    raw = {k: v for k, v in GO_GENERIC.items() if k != "OS"} | {"ipxeScriptUrl": "http://boot.example/ipxe"}
    spec, problems, _ = parse_provider_spec(raw, UID)
    assert problems == [] and spec.operating_system == "custom_ipxe"


def test_missing_billing_cycle_is_named() -> None:
    _, problems, _ = parse_provider_spec({k: v for k, v in GO_GENERIC.items() if k != "billingCycle"}, UID)
    assert problems == ["providerSpec.billingCycle: Required value: Billing cycle is required, one of hourly, daily, "
                        "monthly, yearly"]


def test_reserved_tag_prefix_is_refused() -> None:
    _, problems, _ = parse_provider_spec({**GO_GENERIC, "tags": [*GO_TAGS, "metal-machine-hooks:uid:other"]}, UID)
    assert problems == ['providerSpec.tags[5]: Forbidden: tags starting with "metal-machine-hooks:" are reserved '
                        "for the hooks' ownership tags"]


def test_ownership_tag_length_is_checked() -> None:
    _, problems, _ = parse_provider_spec(GO_GENERIC, "u" * 60)
    assert len(problems) == 1 and problems[0].startswith("metadata.uid: Too long")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Worker_1", "name did not match allowed regex '^[-a-z0-9]+$'"),
        ("a" * 64, "name was length 64, more than the maximum 63"),
    ],
)
def test_machine_name_must_be_a_hostname(name, message) -> None:
    (problem,) = name_problems(name)
    assert problem.startswith("metadata.name: Invalid value:") and message in problem


def resolve(machine: dict, related: dict) -> Resolution:
    """The driver's check of the Machine's class as the Machine hook hands it over (class found by name)."""
    classes = related.get("MachineClass.machine.sapcloud.io/v1alpha1") or {}
    found = classes.get(f"{machine['metadata']['namespace']}/{machine['spec']['class']['name']}")
    return resolve_class(machine, found, related.get("Secret.v1") or {})


def test_resolve_base_fixture() -> None:
    res = resolve(sync_request()["object"], sync_request()["related"])
    assert res.problems == () and res.can_reach_api
    assert res.credentials.token == "test-token"
    assert "hostname: <<MACHINE_NAME>>" in res.credentials.user_data
    assert "test-token" not in repr(res)


def test_credentials_secret_overrides_secret_ref_keys() -> None:
    body = sync_request()
    creds = {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": NS},
        "data": {"apiToken": base64.b64encode(b"override-token").decode()},
    }
    body["related"]["Secret.v1"][f"{NS}/creds"] = creds
    machine_class(body)["credentialsSecretRef"] = {"name": "creds", "namespace": NS}
    res = resolve(body["object"], body["related"])
    assert res.credentials.token == "override-token"
    assert res.credentials.user_data  # still from secretRef


def test_missing_secret_names_the_label() -> None:
    body = sync_request()
    body["related"]["Secret.v1"].clear()
    res = resolve(body["object"], body["related"])
    assert not res.can_reach_api
    assert res.access_problems == (
        f'secretRef: Not found: Secret "{SECRET_ID}" is not visible to the hooks; it must exist in namespace '
        f'"{NS}" and carry the label metal-machine-hooks/credentials: "true"',
    )


def test_secret_in_other_namespace_is_refused() -> None:
    body = sync_request()
    machine_class(body)["secretRef"] = {"name": "metal-credentials", "namespace": "garden"}
    (problem,) = resolve(body["object"], body["related"]).access_problems
    assert problem.startswith('secretRef.namespace: Forbidden: Secret "garden/metal-credentials"')


def test_bad_base64_names_the_key_not_the_value() -> None:
    body = sync_request()
    body["related"]["Secret.v1"][SECRET_ID]["data"]["userData"] = "%%%not-base64%%%"
    res = resolve(body["object"], body["related"])
    assert any("secretRef.data.userData" in p for p in res.problems)
    assert not any("%%%" in p for p in res.problems)


def test_whitespace_token_counts_as_missing() -> None:
    body = sync_request()
    set_secret_value(body, "apiToken", "   ")
    res = resolve(body["object"], body["related"])
    assert res.access_problems == ("secretRef.apiToken: Required value: Required Equinix Metal API Key one of "
                                   "'apiToken' or 'alternateApiToken'",)


def test_user_data_only_blocks_create() -> None:
    body = sync_request()
    set_secret_value(body, "userData", None)
    res = resolve(body["object"], body["related"])
    assert res.can_reach_api
    assert res.problems == ("secretRef.userData: Required value: Required userData",)


def test_wrong_provider_uses_go_message() -> None:
    body = sync_request()
    machine_class(body)["provider"] = "AWS"
    res = resolve(body["object"], body["related"])
    assert res.problems == ("provider: Unsupported value: Requested for Provider 'AWS', we only support "
                            "'EquinixMetal'",)


def test_provider_spec_not_a_mapping() -> None:
    body = sync_request()
    machine_class(body)["providerSpec"] = ["metro", "ny"]
    res = resolve(body["object"], body["related"])
    assert res.problems[0].startswith("providerSpec: Invalid value:")
