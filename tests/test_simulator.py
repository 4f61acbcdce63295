"""The Equinix Metal simulator behaves like the real API where our client and hooks can tell the difference."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator.metal import MetalSimulator
from tests.clocks import ManualClock

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
OTHER_PROJECT = "9d0e1f2a-3b4c-4d5e-8f6a-7b8c9d0e1f2a"
MINIMAL = {"metro": "da", "plan": "c3.small.x86", "operating_system": "ubuntu_22_04"}


class Api:
    """A thin HTTP helper bound to one simulator and token."""

    def __init__(self, env: Any, token: str | None = None) -> None:
        self.env = env
        self.session = requests.Session()
        self.session.headers["X-Auth-Token"] = token or env.token

    def create(self, project: str | None = None, **fields: Any) -> requests.Response:
        return self.session.post(f"{self.env.url}/projects/{project or self.env.project}/devices",
                                 json={**MINIMAL, **fields})

    def list(self, project: str | None = None, **params: Any) -> requests.Response:
        return self.session.get(f"{self.env.url}/projects/{project or self.env.project}/devices", params=params)

    def get(self, device_id: str, **params: Any) -> requests.Response:
        return self.session.get(f"{self.env.url}/devices/{device_id}", params=params)

    def put(self, device_id: str, body: Any) -> requests.Response:
        return self.session.put(f"{self.env.url}/devices/{device_id}", json=body)

    def delete(self, device_id: str, **params: Any) -> requests.Response:
        return self.session.delete(f"{self.env.url}/devices/{device_id}", params=params)

    def reservations(self, project: str | None = None, **params: Any) -> requests.Response:
        return self.session.get(f"{self.env.url}/projects/{project or self.env.project}/hardware-reservations",
                                params=params)

    def reservation(self, reservation_id: str) -> requests.Response:
        return self.session.get(f"{self.env.url}/hardware-reservations/{reservation_id}")


@pytest.fixture
def api(metal_sim) -> Api:
    return Api(metal_sim)


def _errors(response: requests.Response) -> str:
    body = response.json()
    return " | ".join(body.get("errors") or [body.get("error", "")])


# ---------------------------------------------------------------------- create, read, list


def test_create_answers_201_with_the_requested_device(api: Api, metal_sim) -> None:
    answer = api.create(hostname="worker-1", tags=["team:a", "role:worker"], description="first",
                        billing_cycle="monthly", customdata={"k": [1]}, userdata="#!/bin/sh\n")
    assert answer.status_code == 201
    device = answer.json()
    assert device["hostname"] == "worker-1"
    assert device["tags"] == ["team:a", "role:worker"]
    assert device["metro"] == {"id": device["metro"]["id"], "code": "da", "name": "Dallas", "country": "US"}
    assert device["facility"]["code"] == "da11"
    assert (device["plan"]["slug"], device["plan"]["class"], device["plan"]["line"]) == (
        "c3.small.x86", "c3.small.x86", "baremetal")
    assert (device["operating_system"]["slug"], device["operating_system"]["distro"],
            device["operating_system"]["version"]) == ("ubuntu_22_04", "ubuntu", "22.04")
    assert device["project"] == {"href": f"/metal/v1/projects/{metal_sim.project}"}
    assert device["href"] == f"/metal/v1/devices/{device['id']}"
    assert device["short_id"] == device["id"][:8]
    assert device["billing_cycle"] == "monthly"
    assert device["description"] == "first"
    assert (device["customdata"], device["userdata"]) == ({"k": [1]}, "#!/bin/sh\n")
    assert "hardware_reservation" not in device and "ipxe_script_url" not in device
    assert api.get(device["id"]).json() == device


def test_create_fills_in_defaults_and_leaves_out_unset_optional_fields(api: Api) -> None:
    device = api.create().json()
    assert device["billing_cycle"] == "hourly"
    assert device["hostname"]
    assert (device["locked"], device["always_pxe"], device["customdata"]) == (False, False, {})
    for absent in ("description", "userdata", "ipxe_script_url", "termination_time", "provisioning_percentage"):
        assert absent not in device


def test_metro_list_and_any_fall_back_to_metros_with_capacity(metal_sim_factory) -> None:
    env = metal_sim_factory(capacity={"c3.small.x86:da": 0, "c3.small.x86:ny": 0})
    api = Api(env)
    assert api.create(metro=["da", "sv"]).json()["metro"]["code"] == "sv"
    assert api.create(metro=["da", "any"]).json()["metro"]["code"] == "sv"
    assert api.create(metro="AM").json()["metro"]["code"] == "am"


def test_every_answer_has_request_id_and_rate_limit_headers(api: Api) -> None:
    answers = [api.create(), api.list(), api.get(OTHER_PROJECT), api.create(plan="nope")]
    answers.append(api.delete(answers[0].json()["id"]))
    ids = {a.headers["X-Request-Id"] for a in answers}
    assert len(ids) == len(answers)
    remaining = [int(a.headers["X-RateLimit-Remaining"]) for a in answers]
    assert remaining == sorted(remaining, reverse=True) and len(set(remaining)) == len(remaining)
    assert all(int(a.headers["X-RateLimit-Limit"]) >= remaining[0] for a in answers)
    assert all(int(a.headers["X-RateLimit-Reset"]) > time.time() for a in answers)
    assert all(a.headers["Content-Type"].startswith("application/json") for a in answers[:-1])


def test_pagination_meta_over_three_pages(api: Api, metal_sim) -> None:
    created = [api.create(hostname=f"node-{i:02d}").json()["id"] for i in range(25)]
    base = f"/metal/v1/projects/{metal_sim.project}/devices"
    pages = [api.list(page=page, per_page=10).json() for page in (1, 2, 3)]
    assert [len(p["devices"]) for p in pages] == [10, 10, 5]
    assert [d["id"] for p in pages for d in p["devices"]] == created
    for number, page in enumerate(pages, start=1):
        meta = page["meta"]
        assert (meta["total"], meta["current_page"], meta["last_page"]) == (25, number, 3)
        assert meta["first"] == {"href": f"{base}?page=1&per_page=10"}
        assert meta["last"] == {"href": f"{base}?page=3&per_page=10"}
        assert meta["self"] == {"href": f"{base}?page={number}&per_page=10"}
        assert meta.get("next") == ({"href": f"{base}?page={number + 1}&per_page=10"} if number < 3 else None)
        assert meta.get("previous") == ({"href": f"{base}?page={number - 1}&per_page=10"} if number > 1 else None)
    assert len(api.list().json()["devices"]) == 10  # per_page defaults to 10
    assert len(api.list(per_page=1000).json()["devices"]) == 25
    beyond = api.list(page=4, per_page=10).json()
    assert beyond["devices"] == [] and "next" not in beyond["meta"]


def test_meta_links_keep_the_filters(api: Api) -> None:
    for i in range(3):
        api.create(tags=["pool:a"], hostname=f"a-{i}")
    meta = api.list(tag="pool:a", per_page=2).json()["meta"]
    assert "tag=pool%3Aa" in meta["next"]["href"] and "page=2" in meta["next"]["href"]


@pytest.mark.parametrize("params", [{"per_page": 1001}, {"per_page": 0}, {"page": 0}, {"page": "x"}])
def test_bad_paging_parameters_are_422(api: Api, params: dict[str, Any]) -> None:
    answer = api.list(**params)
    assert answer.status_code == 422
    assert next(iter(params)) in _errors(answer)


def test_list_filters(api: Api) -> None:
    a = api.create(hostname="web-01", tags=["role:web", "env:prod"]).json()
    b = api.create(hostname="web-02", tags=["role:web-canary"], plan="m3.large.x86").json()
    c = api.create(hostname="db-01", tags=["role:db"], metro="ny").json()

    def ids(**params: Any) -> list[str]:
        return [d["id"] for d in api.list(**params).json()["devices"]]

    assert ids(tag="role:web") == [a["id"]]  # exact tag, not a prefix
    assert ids(tag="role") == []
    assert ids(hostname="web") == [a["id"], b["id"]]
    assert ids(hostname="DB") == [c["id"]]
    assert ids(search="canary") == [b["id"]]
    assert ids(search="m3.large") == [b["id"]]
    assert ids(search=c["short_id"]) == [c["id"]]
    assert ids(search=a["ip_addresses"][0]["address"]) == [a["id"]]
    assert ids(metro="ny") == [c["id"]]
    assert ids(tag="role:web", hostname="02") == []


def test_include_and_exclude(api: Api, metal_sim) -> None:
    device = api.create().json()
    included = api.get(device["id"], include="project").json()
    assert included["project"] == {"id": metal_sim.project, "href": device["project"]["href"]}
    excluded = api.get(device["id"], exclude="plan,operating_system,ip_addresses").json()
    assert "plan" not in excluded and "operating_system" not in excluded
    assert excluded["ip_addresses"] == [{"href": ip["href"]} for ip in device["ip_addresses"]]


# ---------------------------------------------------------------------- auth


def test_missing_or_unknown_token_is_401(metal_sim) -> None:
    url = f"{metal_sim.url}/projects/{metal_sim.project}/devices"
    for headers in ({}, {"X-Auth-Token": "nope"}, {"X-Auth-Token": ""}):
        for answer in (requests.get(url, headers=headers), requests.post(url, json=MINIMAL, headers=headers)):
            assert answer.status_code == 401
            assert set(answer.json()) == {"error"}
            assert answer.headers["X-Request-Id"]
    assert metal_sim.sim.devices() == []


def test_projects_and_their_devices_the_token_cannot_see_are_404(metal_sim_factory) -> None:
    env = metal_sim_factory(tokens={"test-token": ["2f3c1a52-5d7e-4b8a-9c1d-2e3f4a5b6c7d"],
                                    "other": [OTHER_PROJECT]})
    mine, theirs = Api(env), Api(env, token="other")
    foreign = theirs.create(project=OTHER_PROJECT).json()
    reservation = env.sim.add_reservation(OTHER_PROJECT, plan="c3.small.x86", metro="da")
    for answer in (mine.list(project=OTHER_PROJECT), mine.create(project=OTHER_PROJECT),
                   mine.reservations(project=OTHER_PROJECT), mine.get(foreign["id"]),
                   mine.put(foreign["id"], {"tags": []}), mine.delete(foreign["id"]),
                   mine.reservation(reservation["id"]), mine.get("not-a-uuid")):
        assert answer.status_code == 404
        assert answer.json() == {"error": "Not found"}
    assert theirs.get(foreign["id"]).status_code == 200
    assert len(env.sim.devices()) == 1


# ---------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"plan": None}, "plan is required"),
        ({"metro": None}, "metro is required"),
        ({"operating_system": None}, "operating_system is required"),
        ({"plan": "c9.huge.x86"}, "'c9.huge.x86' is not a valid plan"),
        ({"metro": "zz"}, "'zz' is not a valid metro"),
        ({"metro": ["da", "zz"]}, "'zz' is not a valid metro"),
        ({"operating_system": "windows_95"}, "'windows_95' is not a valid operating system"),
        ({"billing_cycle": "weekly"}, "billing_cycle 'weekly' is not valid"),
        ({"facility": "da11"}, "facility is no longer supported"),
        ({"facility": ["da11"], "metro": None}, "facility is no longer supported"),
        ({"tags": ["ok", "x" * 81]}, "maximum is 80 characters"),
        ({"hostname": "bad_name"}, "underscores are not allowed"),
        ({"hostname": "-leading-hyphen"}, "is invalid"),
        ({"hostname": "a..b"}, "is invalid"),
        ({"hostname": "x" * 64}, "is invalid"),
        ({"hostname": "spaces here"}, "is invalid"),
        ({"plan": 1}, "plan must be a string"),
        ({"tags": "a,b"}, "tags must be an array of strings"),
        ({"tags": [1]}, "tags must be an array of strings"),
        ({"locked": "true"}, "locked must be a boolean"),
        ({"customdata": "{}"}, "customdata must be an object"),
        ({"metro": 5}, "metro must be a metro code"),
        ({"operating_system": "custom_ipxe"}, "ipxe_script_url is required"),
        ({"termination_time": "tomorrow"}, "termination_time 'tomorrow' is not a valid date-time"),
        ({"ip_addresses": [{"address_family": 4, "public": True}]}, "Private IPv4 address is required"),
        ({"spot_instance": True}, "Spot Market has been discontinued"),
        ({"hardware_reservation_id": "123a45b6"}, "123a45b6 is not a valid hardware reservation"),
    ],
)
def test_invalid_create_is_422_with_errors_list(api: Api, metal_sim, change: dict[str, Any], message: str) -> None:
    body = {k: v for k, v in {**MINIMAL, **change}.items() if v is not None}
    answer = api.session.post(f"{metal_sim.url}/projects/{metal_sim.project}/devices", json=body)
    assert answer.status_code == 422
    assert list(answer.json()) == ["errors"]
    assert message in _errors(answer)
    assert metal_sim.sim.devices() == []


def test_all_problems_are_reported_together(api: Api) -> None:
    answer = api.create(plan="nope", hostname="a_b", billing_cycle="weekly")
    assert len(answer.json()["errors"]) == 3


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1, 2]", b'"text"'])
def test_create_body_that_is_not_a_json_object_is_422(api: Api, metal_sim, raw: bytes) -> None:
    answer = api.session.post(f"{metal_sim.url}/projects/{metal_sim.project}/devices", data=raw,
                              headers={"Content-Type": "application/json"})
    assert answer.status_code == 422
    assert "errors" in answer.json()


def test_custom_ipxe_with_script_url_is_accepted(api: Api) -> None:
    device = api.create(operating_system="custom_ipxe", ipxe_script_url="http://boot/x.ipxe", always_pxe=True)
    assert device.status_code == 201
    assert (device.json()["ipxe_script_url"], device.json()["always_pxe"]) == ("http://boot/x.ipxe", True)


def test_update_changes_allowed_fields_and_validates(api: Api) -> None:
    device = api.create(tags=["a"]).json()
    answer = api.put(device["id"], {"tags": ["b", "c"], "hostname": "renamed", "description": "d",
                                    "locked": True, "userdata": "u", "customdata": {"x": 1}, "unknown": 1})
    assert answer.status_code == 200
    updated = api.get(device["id"]).json()
    assert (updated["tags"], updated["hostname"], updated["description"], updated["locked"],
            updated["userdata"], updated["customdata"]) == (["b", "c"], "renamed", "d", True, "u", {"x": 1})
    for body, message in (({"hostname": "a_b"}, "underscores"), ({"tags": "x"}, "tags must be"),
                          ({"tags": ["y" * 81]}, "maximum is 80"), ({"locked": 1}, "locked must be"),
                          ([], "JSON object")):
        rejected = api.put(device["id"], body)
        assert rejected.status_code == 422 and message in _errors(rejected)
    assert api.get(device["id"]).json()["tags"] == ["b", "c"]


# ---------------------------------------------------------------------- capacity


def test_capacity_exhaustion_is_422_with_the_real_message(metal_sim_factory) -> None:
    env = metal_sim_factory(capacity={"c3.small.x86:da": 2})
    api = Api(env)
    first = api.create().json()
    assert api.create().status_code == 201
    exhausted = api.create()
    assert exhausted.status_code == 422
    assert exhausted.json() == {
        "errors": ["The facility da11 has no provisionable c3.small.x86 servers matching your criteria"]}
    assert api.create(metro="ny").status_code == 201  # other metros keep the default capacity
    assert api.create(plan="m3.large.x86").status_code == 201
    assert api.delete(first["id"]).status_code == 204
    assert api.create().status_code == 201  # a deleted server is free again


def test_capacity_int_applies_everywhere_and_can_change_at_run_time(metal_sim_factory) -> None:
    env = metal_sim_factory(capacity=1)
    api = Api(env)
    assert api.create().status_code == 201
    assert api.create().status_code == 422
    multi = api.create(metro=["da", "sv"], plan="c3.small.x86")
    assert multi.status_code == 201
    env.sim.set_capacity({"default": 0})
    assert "The metros ny, da, sv, am have no provisionable" in _errors(api.create(metro="any", plan="t1.small.x86"))


def test_concurrent_creates_never_exceed_capacity(metal_sim_factory) -> None:
    env = metal_sim_factory(capacity={"c3.small.x86:da": 7})
    api = Api(env)
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda i: Api(env).create(hostname=f"n{i}").status_code, range(20)))
    assert sorted(statuses) == [201] * 7 + [422] * 13
    assert len(env.sim.devices()) == 7
    assert len({d["id"] for d in api.list(per_page=100).json()["devices"]}) == 7


# ---------------------------------------------------------------------- lifecycle


def test_lifecycle_follows_the_clock(metal_sim_factory) -> None:
    clock = ManualClock()
    env = metal_sim_factory(clock=clock, provision_seconds=100, deprovision_seconds=30)
    api = Api(env)
    device = api.create().json()
    assert device["state"] == "queued" and device["ip_addresses"] == []
    clock.advance(5)
    assert api.get(device["id"]).json()["state"] == "queued"
    clock.advance(15)
    early = api.get(device["id"]).json()
    clock.advance(40)
    later = api.get(device["id"]).json()
    assert early["state"] == later["state"] == "provisioning"
    assert 0 < early["provisioning_percentage"] < later["provisioning_percentage"] < 100
    assert early["ip_addresses"] == []
    assert later["updated_at"] >= early["updated_at"] >= device["created_at"]
    clock.advance(40)
    active = api.get(device["id"]).json()
    assert active["state"] == "active" and "provisioning_percentage" not in active
    assert api.get(device["id"]).json() == active  # a read changes nothing
    families = {(ip["address_family"], ip["public"]) for ip in active["ip_addresses"]}
    assert families == {(4, True), (4, False), (6, True)}
    for ip in active["ip_addresses"]:
        assert ip["management"] is True
        assert {"address", "gateway", "netmask", "cidr", "network", "public", "address_family"} <= set(ip)
    private = next(ip for ip in active["ip_addresses"] if not ip["public"])
    assert private["address"].startswith("10.") and private["cidr"] == 31 and private["netmask"] == "255.255.255.254"

    assert api.delete(device["id"]).status_code == 204
    going = api.get(device["id"]).json()
    assert going["state"] == "deprovisioning"
    assert [d["id"] for d in api.list().json()["devices"]] == [device["id"]]
    clock.advance(29)
    assert api.get(device["id"]).json()["state"] == "deprovisioning"
    clock.advance(1)
    assert api.get(device["id"]).status_code == 404
    assert api.delete(device["id"]).status_code == 404
    assert api.list().json()["devices"] == []
    history = env.sim.devices(include_deleted=True)
    assert [(d["id"], d["state"], d["deleted"]) for d in history] == [(device["id"], "deleted", True)]
    assert env.sim.devices() == []


def test_ids_are_reproducible_under_a_seed() -> None:
    def ids(seed: int) -> list[str]:
        sim = MetalSimulator({"t": ["p"]}, seed=seed)
        sim.add_reservation("p", plan="c3.small.x86", metro="da")
        return [sim.add_device("p")["id"] for _ in range(3)] + [r["id"] for r in sim.reservations()]

    assert ids(1) == ids(1)
    assert ids(1) != ids(2)


def test_ip_addresses_are_unique_per_device(api: Api) -> None:
    addresses = [ip["address"] for _ in range(5) for ip in api.create().json()["ip_addresses"]]
    assert len(addresses) == len(set(addresses)) == 15


def test_locked_device_cannot_be_deleted(api: Api) -> None:
    device = api.create(locked=True).json()
    refused = api.delete(device["id"], force_delete="true")
    assert refused.status_code == 422 and "locked" in _errors(refused)
    assert api.get(device["id"]).json()["state"] == "active"
    api.put(device["id"], {"locked": False})
    assert api.delete(device["id"]).status_code == 204
    assert api.get(device["id"]).status_code == 404


def test_forced_states(metal_sim, api: Api) -> None:
    device = api.create().json()
    metal_sim.sim.set_device_state(device["id"], "failed")
    failed = api.get(device["id"]).json()
    assert failed["state"] == "failed" and failed["ip_addresses"] == []
    metal_sim.sim.set_device_state(device["id"], "deleted")
    assert api.get(device["id"]).status_code == 404
    with pytest.raises(ValueError):
        metal_sim.sim.set_device_state(device["id"], "exploded")


# ---------------------------------------------------------------------- hardware reservations


def test_reservation_by_uuid_is_used_then_not_provisionable(metal_sim, api: Api) -> None:
    reservation = metal_sim.sim.add_reservation(metal_sim.project, plan="c3.small.x86", metro="sv")
    assert reservation["provisionable"] is True
    device = api.create(hardware_reservation_id=reservation["id"], metro="sv")
    assert device.status_code == 201
    assert device.json()["hardware_reservation"] == {"href": f"/metal/v1/hardware-reservations/{reservation['id']}"}
    assert device.json()["metro"]["code"] == "sv"
    seen = api.reservation(reservation["id"]).json()
    assert seen["provisionable"] is False
    assert seen["device"] == {"href": f"/metal/v1/devices/{device.json()['id']}"}
    assert seen["facility"]["metro"]["code"] == "sv" and seen["plan"]["slug"] == "c3.small.x86"
    again = api.create(hardware_reservation_id=reservation["id"], metro="sv")
    assert again.status_code == 422 and _errors(again) == "Server is not provisionable"
    included = api.get(device.json()["id"], include="hardware_reservation").json()
    assert included["hardware_reservation"]["id"] == reservation["id"]


def test_next_available_picks_a_matching_provisionable_reservation(metal_sim, api: Api) -> None:
    sim, project = metal_sim.sim, metal_sim.project
    sim.add_reservation(project, plan="m3.large.x86", metro="da")
    sim.add_reservation(project, plan="c3.small.x86", metro="ny")
    disabled = sim.add_reservation(project, plan="c3.small.x86", metro="da", provisionable=False)
    wanted = sim.add_reservation(project, plan="c3.small.x86", metro="da")
    device = api.create(hardware_reservation_id="next-available").json()
    assert device["hardware_reservation"]["href"].endswith(wanted["id"])
    none_left = api.create(hardware_reservation_id="next-available")
    assert none_left.status_code == 422
    assert _errors(none_left) == "There are no available hardware reservations for selected plan and metro"
    assert _errors(api.create(hardware_reservation_id=disabled["id"])) == "Server is not provisionable"
    listed = api.reservations(provisionable="only").json()["hardware_reservations"]
    assert sorted(r["plan"]["slug"] + "@" + r["facility"]["metro"]["code"] for r in listed) == [
        "c3.small.x86@ny", "m3.large.x86@da"]
    assert api.reservations().json()["meta"]["total"] == 4
    assert api.reservations(provisionable="yes").status_code == 422


def test_reservations_do_not_use_on_demand_capacity(metal_sim_factory) -> None:
    env = metal_sim_factory(capacity=0)
    env.sim.add_reservation(env.project, plan="c3.small.x86", metro="da")
    api = Api(env)
    assert api.create(hardware_reservation_id="next-available").status_code == 201
    assert "no provisionable" in _errors(api.create())


def test_reservation_errors(metal_sim, api: Api) -> None:
    sim, project = metal_sim.sim, metal_sim.project
    reservation = sim.add_reservation(project, plan="c3.small.x86", metro="da")
    foreign = sim.add_reservation(OTHER_PROJECT, plan="c3.small.x86", metro="da")
    unknown = "0b6c7f0e-5c1b-4a8e-bb2d-7e0f3a9d1c55"
    for wanted in (unknown, foreign["id"]):
        answer = api.create(hardware_reservation_id=wanted)
        assert answer.status_code == 422 and _errors(answer) == f"{wanted} is not a valid hardware reservation"
    wrong_plan = api.create(hardware_reservation_id=reservation["id"], plan="m3.large.x86")
    assert wrong_plan.status_code == 422 and "is for plan c3.small.x86" in _errors(wrong_plan)
    wrong_metro = api.create(hardware_reservation_id=reservation["id"], metro="ny")
    assert wrong_metro.status_code == 422 and "is in metro da" in _errors(wrong_metro)
    assert api.create(hardware_reservation_id=reservation["id"], metro="any").status_code == 201
    assert api.reservation(foreign["id"]).status_code == 404
    assert api.reservation(unknown).status_code == 404


def test_reservation_cooldown_after_its_device_is_gone(metal_sim_factory) -> None:
    clock = ManualClock()
    env = metal_sim_factory(clock=clock, deprovision_seconds=10, reservation_cooldown_seconds=60)
    api = Api(env)
    reservation = env.sim.add_reservation(env.project, plan="c3.small.x86", metro="da")
    device = api.create(hardware_reservation_id=reservation["id"]).json()
    assert api.delete(device["id"]).status_code == 204
    clock.advance(10)  # deprovisioned: the device is gone, the hardware is being cleaned
    assert api.get(device["id"]).status_code == 404
    state = api.reservation(reservation["id"]).json()
    assert state["provisionable"] is False and "device" not in state
    assert _errors(api.create(hardware_reservation_id=reservation["id"])) == "Server is not provisionable"
    assert "no available hardware reservations" in _errors(api.create(hardware_reservation_id="next-available"))
    clock.advance(59.9)
    assert api.reservation(reservation["id"]).json()["provisionable"] is False
    clock.advance(0.1)
    assert api.reservation(reservation["id"]).json()["provisionable"] is True
    assert api.create(hardware_reservation_id="next-available").status_code == 201


# ---------------------------------------------------------------------- faults


def _statuses(env: Any, count: int = 40) -> list[Any]:
    api = Api(env)
    outcomes: list[Any] = []
    for _ in range(count):
        try:
            answer = api.list()
        except requests.ConnectionError:
            outcomes.append("dropped")
            api = Api(env)
            continue
        outcomes.append(answer.status_code)
    return outcomes


@pytest.mark.parametrize(
    ("knobs", "expected"),
    [
        ({"rate_429": 0.3}, {200, 429}),
        ({"rate_5xx": 0.3}, {200, 500, 502, 503}),
        ({"rate_403_ratelimit": 0.3}, {200, 403}),
        ({"rate_drop": 0.3}, {200, "dropped"}),
    ],
)
def test_each_fault_is_deterministic_under_a_seed(metal_sim_factory, knobs: dict[str, Any], expected: set) -> None:
    runs = [_statuses(metal_sim_factory(seed=seed, faults=knobs)) for seed in (7, 7, 8)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    assert set(runs[0]) | set(runs[2]) == expected
    faulted = sum(1 for outcome in runs[0] if outcome != 200)
    assert 4 <= faulted <= 20  # about 30% of 40


def test_a_rate_of_one_faults_every_request_and_zero_none(metal_sim) -> None:
    metal_sim.sim.set_faults(rate_429=1.0)
    assert set(_statuses(metal_sim, 5)) == {429}
    metal_sim.sim.set_faults(rate_429=0.0)
    assert set(_statuses(metal_sim, 5)) == {200}


def test_429_carries_retry_after_and_an_error_body(metal_sim, api: Api) -> None:
    metal_sim.sim.set_faults(rate_429=1.0, retry_after=2.5)
    answer = api.list()
    assert answer.status_code == 429
    assert answer.headers["Retry-After"] == "3"
    assert answer.headers["X-RateLimit-Remaining"] == "0"
    assert set(answer.json()) == {"error"} and answer.headers["X-Request-Id"]


def test_403_rate_limit_masquerade(metal_sim, api: Api) -> None:
    metal_sim.sim.set_faults(rate_403_ratelimit=1.0)
    answer = api.get(OTHER_PROJECT)
    assert answer.status_code == 403
    assert "rate limit" in answer.json()["error"].lower()
    assert answer.headers["X-RateLimit-Remaining"] == "0"
    assert 0 <= int(answer.headers["X-RateLimit-Reset"]) - time.time() <= 2  # retry_after defaults to 1 s


def test_5xx_from_a_load_balancer_is_html_without_request_id(metal_sim, api: Api) -> None:
    metal_sim.sim.set_faults(rate_5xx=1.0, html_fraction=1.0)
    answer = api.list()
    assert answer.status_code in (500, 502, 503)
    assert answer.headers["Content-Type"].startswith("text/html") and "<html>" in answer.text
    assert "X-Request-Id" not in answer.headers
    metal_sim.sim.set_faults(html_fraction=0.0)
    answer = api.list()
    assert answer.headers["X-Request-Id"] and "error" in answer.json()


def test_faulted_creates_are_not_processed(metal_sim, api: Api) -> None:
    for knob in ("rate_429", "rate_5xx", "rate_403_ratelimit", "rate_drop"):
        metal_sim.sim.clear_faults()
        metal_sim.sim.set_faults(**{knob: 1.0})
        with pytest.raises(requests.ConnectionError) if knob == "rate_drop" else _no_error():
            assert api.create().status_code >= 400
    assert metal_sim.sim.devices() == []


class _no_error:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False


def test_latency_is_added_before_answering(metal_sim_factory) -> None:
    slept: list[float] = []
    env = metal_sim_factory(faults={"latency_seconds": 0.25}, sleep=slept.append)
    Api(env).list()
    assert slept == [0.25]
    real = metal_sim_factory(faults={"latency_seconds": 0.1})
    started = time.monotonic()
    assert Api(real).list().status_code == 200
    assert time.monotonic() - started >= 0.1


@pytest.mark.parametrize(("drop_fraction", "seen"), [(1.0, "dropped"), (0.0, 503)])
def test_lost_create_leaves_the_device_but_the_client_sees_a_failure(
    metal_sim, api: Api, drop_fraction: float, seen: Any
) -> None:
    metal_sim.sim.set_faults(rate_lost_create=1.0, lost_create_drop_fraction=drop_fraction, html_fraction=0.0)
    try:
        outcome: Any = api.create(tags=["uid:abc"]).status_code
    except requests.ConnectionError:
        outcome = "dropped"
    assert outcome == seen
    found = Api(metal_sim).list(tag="uid:abc").json()["devices"]
    assert len(found) == 1 and [d["id"] for d in metal_sim.sim.devices()] == [found[0]["id"]]
    assert Api(metal_sim).get(found[0]["id"]).status_code == 200  # lost-create faults only creates


def test_only_methods_and_only_paths_limit_faults(metal_sim, api: Api) -> None:
    device = api.create().json()
    metal_sim.sim.set_faults(rate_5xx=1.0, html_fraction=0.0, only_methods=["POST"])
    assert api.list().status_code == 200 and api.get(device["id"]).status_code == 200
    assert api.create().status_code >= 500
    metal_sim.sim.set_faults(only_methods=[], only_paths=["/devices/{id}"])
    assert api.list().status_code == 200
    assert api.get(device["id"]).status_code >= 500
    metal_sim.sim.set_faults(only_paths=["/metal/v1/projects/*/devices"])
    assert api.list().status_code >= 500
    assert api.get(device["id"]).status_code == 200


def test_set_faults_seed_restarts_the_sequence(metal_sim) -> None:
    metal_sim.sim.set_faults(rate_429=0.5, seed=3)
    first = _statuses(metal_sim, 20)
    metal_sim.sim.set_faults(seed=3)
    assert _statuses(metal_sim, 20) == first


def test_fault_knobs_are_validated(metal_sim) -> None:
    with pytest.raises(ValueError, match="unknown fault knob"):
        metal_sim.sim.set_faults(rate_teapot=1)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        metal_sim.sim.set_faults(rate_429=2)
    with pytest.raises(ValueError, match="must be a number"):
        metal_sim.sim.set_faults(latency_seconds="slow")


def test_server_survives_dropped_connections_and_concurrent_clients(metal_sim) -> None:
    metal_sim.sim.set_faults(rate_drop=0.5)
    outcomes = _statuses(metal_sim, 30)
    assert "dropped" in outcomes and 200 in outcomes
    metal_sim.sim.clear_faults()
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert set(pool.map(lambda _: Api(metal_sim).list().status_code, range(40))) == {200}


# ---------------------------------------------------------------------- admin API


def test_admin_endpoints(metal_sim, api: Api) -> None:
    admin = f"{metal_sim.base_url}/_sim"
    seeded = requests.post(f"{admin}/devices", json={"project_id": metal_sim.project, "hostname": "foreign",
                                                      "tags": ["someone-else"], "state": "active"})
    assert seeded.status_code == 201
    device_id = seeded.json()["id"]
    assert [d["hostname"] for d in api.list().json()["devices"]] == ["foreign"]
    forced = requests.post(f"{admin}/devices/{device_id}/state", json={"state": "failed"})
    assert forced.status_code == 200 and forced.json()["state"] == "failed"
    assert api.get(device_id).json()["state"] == "failed"
    reservation = requests.post(f"{admin}/reservations", json={"project_id": metal_sim.project,
                                                               "plan": "c3.medium.x86", "metro": "am"})
    assert reservation.status_code == 201
    assert api.reservation(reservation.json()["id"]).json()["plan"]["slug"] == "c3.medium.x86"

    faults = requests.put(f"{admin}/faults", json={"rate_429": 1.0, "retry_after": 0})
    assert faults.status_code == 200 and faults.json()["rate_429"] == 1.0
    assert api.list().status_code == 429
    assert requests.get(f"{admin}/state").status_code == 200  # admin endpoints are never faulted
    assert requests.put(f"{admin}/faults", json={"bogus": 1}).status_code == 400
    assert requests.delete(f"{admin}/faults").json()["rate_429"] == 0.0
    assert api.list().status_code == 200

    assert requests.put(f"{admin}/capacity", json={"capacity": {"c3.small.x86:da": 0}}).status_code == 200
    assert api.create().status_code == 422
    api.delete(device_id)

    state = requests.get(f"{admin}/state").json()
    assert state["projects"] == [metal_sim.project]
    assert state["devices"] == [] and [d["id"] for d in state["deleted"]] == [device_id]
    assert state["deleted"][0]["project_id"] == metal_sim.project
    assert [r["id"] for r in state["reservations"]] == [reservation.json()["id"]]
    assert metal_sim.token not in json.dumps(state)

    calls = requests.get(f"{admin}/calls").json()
    assert calls["calls"]["GET /projects/{id}/devices"] == 3
    assert calls["calls"]["DELETE /devices/{id}"] == 1
    assert calls["responses"]["GET /projects/{id}/devices 429"] == 1
    assert metal_sim.sim.calls["POST /projects/{id}/devices"] == 1
    assert not any(key.startswith(("GET /_sim", "PUT /_sim")) for key in calls["calls"])


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/devices", {"plan": "nope"}, 400),
        ("POST", "/devices", {"tags": "x"}, 400),
        ("POST", "/devices", {"colour": "red"}, 400),
        ("POST", "/devices/00000000-0000-4000-8000-000000000000/state", {"state": "failed"}, 404),
        ("POST", "/reservations", {"plan": "c3.small.x86"}, 400),
        ("GET", "/nothing", None, 404),
    ],
)
def test_admin_rejects_bad_input(metal_sim, method: str, path: str, body: Any, status: int) -> None:
    answer = requests.request(method, f"{metal_sim.base_url}/_sim{path}", json=body)
    assert answer.status_code == status
    assert "error" in answer.json()


def test_unknown_api_routes(metal_sim, api: Api) -> None:
    assert api.session.get(f"{metal_sim.url}/plans").status_code == 404
    wrong = api.session.patch(f"{metal_sim.url}/devices/{OTHER_PROJECT}")
    assert wrong.status_code == 405 and "error" in wrong.json()


def test_in_process_handle_without_a_server() -> None:
    sim = MetalSimulator({"t": ["p"]})
    answer = sim.handle("POST", "/metal/v1/projects/p/devices", {"x-auth-token": "t"}, json.dumps(MINIMAL).encode())
    assert answer.status == 201
    assert sim.devices()[0]["project_id"] == "p"


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=90),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
_FIELDS = ["metro", "plan", "operating_system", "hostname", "tags", "billing_cycle", "customdata", "userdata",
           "locked", "ip_addresses", "hardware_reservation_id", "termination_time", "ipxe_script_url", "facility",
           "project_ssh_keys", "spot_instance", "description"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(overrides=st.dictionaries(st.sampled_from(_FIELDS), _JSON, max_size=4), put=_JSON)
def test_any_json_body_gets_a_clear_answer_never_a_500(overrides: dict[str, Any], put: Any) -> None:
    sim = MetalSimulator({"t": ["p"]})
    sim.add_reservation("p", plan="c3.small.x86", metro="da")
    headers = {"x-auth-token": "t"}
    body = json.dumps({**MINIMAL, **overrides}).encode()
    created = sim.handle("POST", "/metal/v1/projects/p/devices", headers, body)
    assert created.status in (201, 422), created.body
    if created.status == 422:
        assert list(json.loads(created.body)) == ["errors"]
    device_id = sim.add_device("p")["id"]
    updated = sim.handle("PUT", f"/metal/v1/devices/{device_id}", headers, json.dumps(put).encode())
    assert updated.status in (200, 422), updated.body


# ---------------------------------------------------------------------- command line


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_cli(*args: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen([sys.executable, "-m", "emulator.metal", *args], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline() if process.stdout else ""
    match = re.search(r"http://\S+/metal/v1", line)
    if not match:
        process.kill()
        pytest.fail(f"no URL printed: {line!r} {process.stderr.read() if process.stderr else ''}")
    return process, match.group(0)


def test_cli_serves_the_readme_curl_example() -> None:
    project = "7f3c1a52-5d7e-4b8a-9c1d-2e3f4a5b6c7d"
    port = _free_port()
    process, url = _start_cli("--port", str(port), "--token", "t", "--project", project)
    try:
        assert url == f"http://127.0.0.1:{port}/metal/v1"
        # curl -H 'X-Auth-Token: t' -H 'Content-Type: application/json' -d '{"metro": ...}' $URL/projects/$P/devices
        created = requests.post(f"{url}/projects/{project}/devices", headers={"X-Auth-Token": "t"},
                                data=json.dumps(MINIMAL), timeout=5)
        assert created.status_code == 201 and created.json()["state"] == "active"
        listed = requests.get(f"{url}/projects/{project}/devices", headers={"X-Auth-Token": "t"}, timeout=5)
        assert [d["id"] for d in listed.json()["devices"]] == [created.json()["id"]]
        assert requests.get(f"{url}/projects/{project}/devices", timeout=5).status_code == 401
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


def test_cli_options() -> None:
    a, b = "7f3c1a52-5d7e-4b8a-9c1d-2e3f4a5b6c7d", OTHER_PROJECT
    process, url = _start_cli(
        "--port", "0", "--token", f"ta={a}", "--token", f"tb={b}", "--reservation", "c3.small.x86:sv",
        "--capacity", "c3.small.x86:da=0", "--provision-seconds", "600", "--seed", "4",
        "--fault", "only_methods=DELETE", "--fault", "rate_5xx=1", "--fault", "html_fraction=0",
    )
    try:
        ta, tb = {"X-Auth-Token": "ta"}, {"X-Auth-Token": "tb"}
        assert requests.get(f"{url}/projects/{b}/devices", headers=ta, timeout=5).status_code == 404
        assert requests.get(f"{url}/projects/{b}/devices", headers=tb, timeout=5).status_code == 200
        reservations = requests.get(f"{url}/projects/{a}/hardware-reservations", headers=ta, timeout=5).json()
        assert [r["facility"]["metro"]["code"] for r in reservations["hardware_reservations"]] == ["sv"]
        refused = requests.post(f"{url}/projects/{a}/devices", headers=ta, json=MINIMAL, timeout=5)
        assert "The facility da11 has no provisionable c3.small.x86" in _errors(refused)
        device = requests.post(f"{url}/projects/{a}/devices", headers=ta, json={**MINIMAL, "metro": "ny"}, timeout=5)
        assert device.json()["state"] == "queued"
        assert requests.delete(f"{url}/devices/{device.json()['id']}", headers=ta, timeout=5).status_code >= 500
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_cli_help_and_bad_arguments() -> None:
    shown = subprocess.run([sys.executable, "-m", "emulator.metal", "--help"], cwd=ROOT, capture_output=True,
                           text=True, timeout=30)
    assert shown.returncode == 0
    for option in ("--token", "TOKEN=P1,P2", "--project", "--provision-seconds", "--deprovision-seconds",
                   "--capacity", "--seed", "--reservation", "--fault"):
        assert option in shown.stdout
    for args in (["--project", OTHER_PROJECT], ["--token", "t"], ["--token", "t", "--project", "p",
                                                                   "--fault", "rate_teapot=1"]):
        failed = subprocess.run([sys.executable, "-m", "emulator.metal", "--port", "0", *args], cwd=ROOT,
                                capture_output=True, text=True, timeout=30)
        assert failed.returncode == 2 and "error" in failed.stderr
