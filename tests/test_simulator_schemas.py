"""Every simulator answer matches the official Equinix Metal schemas, and carries no field the spec lacks.

jsonschema alone accepts unknown fields (the spec never says additionalProperties: false), so a second check
walks each answer alongside its schema (following $ref and allOf/anyOf/oneOf) and reports any property the
schema does not declare, unless that schema explicitly allows additional properties.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import requests
import yaml
from jsonschema import Draft4Validator, FormatChecker
from referencing import Registry
from referencing.jsonschema import DRAFT4

from tests.clocks import ManualClock

SCHEMAS = Path(__file__).parent / "schemas"
SHARED_SCHEMAS = (Path(__file__).resolve().parents[2] / "shared" / "reference" / "equinix-metal" / "oas3.fetched"
                  / "components" / "schemas")
Resolver = Any  # referencing.Resolver; the package does not export the class name
BASE = "https://metal.spec.invalid/components/schemas/"
OTHER_PROJECT = "9d0e1f2a-3b4c-4d5e-8f6a-7b8c9d0e1f2a"


def _openapi_to_jsonschema(node: Any) -> Any:
    """OpenAPI 3.0 `nullable: true` becomes a JSON-schema null type; everything else is draft-4 compatible."""
    if isinstance(node, list):
        return [_openapi_to_jsonschema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _openapi_to_jsonschema(value) for key, value in node.items()}
    if converted.pop("nullable", False) and "type" in converted:
        converted["type"] = [converted["type"], "null"]
    return converted


def _registry() -> Registry:
    resources = [
        (BASE + path.name, DRAFT4.create_resource(_openapi_to_jsonschema(yaml.safe_load(path.read_text()))))
        for path in sorted(SCHEMAS.glob("*.yaml"))
    ]
    return Registry().with_resources(resources)


REGISTRY = _registry()
FORMATS = FormatChecker(formats=())


@FORMATS.checks("uuid", raises=ValueError)
def _is_uuid(value: object) -> bool:
    return not isinstance(value, str) or str(UUID(value)) == value.lower()


@FORMATS.checks("date-time", raises=ValueError)
def _is_datetime(value: object) -> bool:
    return not isinstance(value, str) or (
        "T" in value and datetime.fromisoformat(value.replace("Z", "+00:00")).tzinfo is not None
    )


def schema_errors(instance: Any, name: str) -> list[str]:
    validator = Draft4Validator({"$ref": BASE + name}, registry=REGISTRY, format_checker=FORMATS)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(instance)]


def _resolve(schema: Any, resolver: Resolver) -> tuple[Any, Resolver]:
    while isinstance(schema, dict) and "$ref" in schema:
        resolved = resolver.lookup(schema["$ref"])
        schema, resolver = resolved.contents, resolved.resolver
    return schema, resolver


def _branches(schema: Any, resolver: Resolver) -> Iterator[tuple[dict, Resolver]]:
    schema, resolver = _resolve(schema, resolver)
    if not isinstance(schema, dict):
        return
    yield schema, resolver
    for key in ("allOf", "anyOf", "oneOf"):
        for part in schema.get(key, []):
            yield from _branches(part, resolver)


def undeclared_fields(instance: Any, schema: Any, resolver: Resolver, path: str = "$") -> list[str]:
    """Paths in `instance` that no (sub)schema declares; objects with no declared properties are free-form."""
    branches = list(_branches(schema, resolver))
    problems: list[str] = []
    if isinstance(instance, dict):
        declared: dict[str, list[tuple[Any, Resolver]]] = {}
        closed = False
        open_ = False
        for part, part_resolver in branches:
            if "properties" in part:
                closed = True
                for key, sub in part["properties"].items():
                    declared.setdefault(key, []).append((sub, part_resolver))
            extra = part.get("additionalProperties")
            open_ = open_ or extra is True or isinstance(extra, dict)
        for key, value in instance.items():
            if key in declared:
                for sub, sub_resolver in declared[key]:
                    problems += undeclared_fields(value, sub, sub_resolver, f"{path}.{key}")
            elif closed and not open_:
                problems.append(f"{path}.{key}")
    elif isinstance(instance, list):
        for part, part_resolver in branches:
            if "items" in part:
                for index, item in enumerate(instance):
                    problems += undeclared_fields(item, part["items"], part_resolver, f"{path}[{index}]")
    return sorted(set(problems))


def strict_problems(instance: Any, name: str) -> list[str]:
    resolver = REGISTRY.resolver(base_uri=BASE)
    return schema_errors(instance, name) + [
        f"field not in spec: {p}" for p in undeclared_fields(instance, {"$ref": BASE + name}, resolver)
    ]


@pytest.fixture
def api(metal_sim):
    session = requests.Session()
    session.headers["X-Auth-Token"] = metal_sim.token
    yield session
    session.close()


def _create(metal_sim, api: requests.Session, **fields: Any) -> requests.Response:
    body = {"metro": "da", "plan": "c3.small.x86", "operating_system": "ubuntu_22_04", **fields}
    return api.post(f"{metal_sim.url}/projects/{metal_sim.project}/devices", json=body)


# ---------------------------------------------------------------------- the checker itself can fail


def test_strict_check_rejects_fields_the_spec_does_not_define(metal_sim, api) -> None:
    device = _create(metal_sim, api).json()
    assert strict_problems(device, "Device.yaml") == []
    for mutate, path in (
        (lambda d: d.update(project_id="x"), "$.project_id"),
        (lambda d: d["metro"].update(slug="da"), "$.metro.slug"),
        (lambda d: d["ip_addresses"][0].update(private=True), "$.ip_addresses[0].private"),
        (lambda d: d["plan"]["specs"]["memory"].update(gb=32), "$.plan.specs.memory.gb"),
    ):
        broken = copy.deepcopy(device)
        mutate(broken)
        assert f"field not in spec: {path}" in strict_problems(broken, "Device.yaml")
    # customdata is declared free-form (additionalProperties: true), so anything goes inside it.
    device["customdata"] = {"anything": {"nested": [1]}}
    assert strict_problems(device, "Device.yaml") == []


def test_schema_check_rejects_wrong_types_and_formats(metal_sim, api) -> None:
    device = _create(metal_sim, api).json()
    for field, value in (("state", "running"), ("locked", "no"), ("id", "not-a-uuid"),
                         ("created_at", "yesterday"), ("tags", "a,b")):
        broken = dict(device, **{field: value})
        assert any(problem.startswith(field) for problem in strict_problems(broken, "Device.yaml")), field
    assert strict_problems({"error": 1}, "Error.yaml")


# ---------------------------------------------------------------------- success answers


def test_device_answers_through_the_whole_lifecycle_match_device_schema(metal_sim_factory) -> None:
    clock = ManualClock(start=5000.0)
    env = metal_sim_factory(clock=clock, provision_seconds=100, deprovision_seconds=50)
    reservation = env.sim.add_reservation(env.project, plan="m3.large.x86", metro="sv")
    session = requests.Session()
    session.headers["X-Auth-Token"] = env.token
    created = _create(env, session, plan="m3.large.x86", metro="sv", hostname="worker-1", description="d",
                      userdata="#cloud-config\n", customdata={"role": {"x": 1}}, tags=["a", "b"],
                      billing_cycle="hourly", locked=False, always_pxe=True, operating_system="custom_ipxe",
                      ipxe_script_url="http://boot.example/ipxe", termination_time="2030-01-01T00:00:00Z",
                      hardware_reservation_id=reservation["id"])
    assert created.status_code == 201
    seen_states = set()
    for step in (0, 20, 60, 200):
        clock.now += step
        for query in ("", "?include=project,hardware_reservation", "?exclude=plan,operating_system,project"):
            answer = session.get(f"{env.url}/devices/{created.json()['id']}{query}").json()
            assert strict_problems(answer, "Device.yaml") == [], (step, query)
            seen_states.add(answer["state"])
    assert session.delete(f"{env.url}/devices/{created.json()['id']}").status_code == 204
    answer = session.get(f"{env.url}/devices/{created.json()['id']}").json()
    seen_states.add(answer["state"])
    assert strict_problems(answer, "Device.yaml") == []
    assert seen_states == {"queued", "provisioning", "active", "deprovisioning"}
    assert strict_problems(created.json(), "Device.yaml") == []


def test_forced_and_seeded_states_match_device_schema(metal_sim, api) -> None:
    for state in ("failed", "inactive", "powering_on", "powering_off", "reinstalling", "provisioning"):
        seeded = metal_sim.sim.add_device(metal_sim.project, state=state, tags=["foreign"])
        answer = api.get(f"{metal_sim.url}/devices/{seeded['id']}").json()
        assert answer["state"] == state
        assert strict_problems(answer, "Device.yaml") == [], state


def test_device_list_pages_match_device_list_schema(metal_sim, api) -> None:
    for index in range(12):
        assert _create(metal_sim, api, hostname=f"node-{index}").status_code == 201
    for page in (1, 2, 3):
        answer = api.get(f"{metal_sim.url}/projects/{metal_sim.project}/devices",
                         params={"page": page, "per_page": 5, "include": "metro"}).json()
        assert strict_problems(answer, "DeviceList.yaml") == [], page
    empty = api.get(f"{metal_sim.url}/projects/{metal_sim.project}/devices", params={"tag": "none"}).json()
    assert strict_problems(empty, "DeviceList.yaml") == []


def test_update_answer_matches_device_schema(metal_sim, api) -> None:
    device = _create(metal_sim, api).json()
    answer = api.put(f"{metal_sim.url}/devices/{device['id']}",
                     json={"tags": ["x"], "hostname": "renamed", "description": "new", "locked": True,
                           "userdata": "u", "customdata": {"k": "v"}})
    assert answer.status_code == 200
    assert strict_problems(answer.json(), "Device.yaml") == []


def test_delete_answers_204_without_a_body(metal_sim, api) -> None:
    device = _create(metal_sim, api).json()
    answer = api.delete(f"{metal_sim.url}/devices/{device['id']}", params={"force_delete": "true"})
    assert answer.status_code == 204
    assert answer.content == b""
    assert "Content-Type" not in answer.headers
    assert answer.headers["X-Request-Id"]


def test_reservation_answers_match_reservation_schemas(metal_sim, api) -> None:
    free = metal_sim.sim.add_reservation(metal_sim.project, plan="c3.small.x86", metro="da")
    used = metal_sim.sim.add_reservation(metal_sim.project, plan="c3.small.x86", metro="da")
    assert _create(metal_sim, api, hardware_reservation_id=used["id"]).status_code == 201
    for reservation in (free, used):
        for query in ("", "?include=device,project", "?exclude=plan,facility,device"):
            answer = api.get(f"{metal_sim.url}/hardware-reservations/{reservation['id']}{query}").json()
            assert strict_problems(answer, "HardwareReservation.yaml") == [], query
    for params in ({}, {"provisionable": "only"}, {"per_page": 1, "page": 2, "include": "device"}):
        answer = api.get(f"{metal_sim.url}/projects/{metal_sim.project}/hardware-reservations", params=params)
        assert strict_problems(answer.json(), "HardwareReservationList.yaml") == [], params


# ---------------------------------------------------------------------- error answers


def _error_answers(metal_sim, api: requests.Session) -> Iterator[tuple[int, requests.Response]]:
    url, project = metal_sim.url, metal_sim.project
    yield 401, requests.get(f"{url}/projects/{project}/devices")
    yield 401, requests.get(f"{url}/devices/{project}", headers={"X-Auth-Token": "wrong"})
    yield 404, api.get(f"{url}/projects/{OTHER_PROJECT}/devices")
    yield 404, api.get(f"{url}/devices/{OTHER_PROJECT}")
    yield 404, api.get(f"{url}/hardware-reservations/{OTHER_PROJECT}")
    yield 422, _create(metal_sim, api, plan="nope", hostname="bad_name")
    yield 422, api.post(f"{url}/projects/{project}/devices", data=b"{not json")
    locked = _create(metal_sim, api, locked=True).json()
    yield 422, api.delete(f"{url}/devices/{locked['id']}")
    yield 422, api.put(f"{url}/devices/{locked['id']}", json={"tags": "a"})
    metal_sim.sim.set_capacity(0)
    yield 422, _create(metal_sim, api)
    yield 422, _create(metal_sim, api, hardware_reservation_id="next-available")
    yield 422, api.get(f"{url}/projects/{project}/devices", params={"per_page": 5000})
    metal_sim.sim.set_faults(rate_429=1.0)
    yield 429, api.get(f"{url}/projects/{project}/devices")
    metal_sim.sim.set_faults(rate_429=0.0, rate_403_ratelimit=1.0)
    yield 403, api.get(f"{url}/projects/{project}/devices")
    metal_sim.sim.set_faults(rate_403_ratelimit=0.0, rate_5xx=1.0, html_fraction=0.0)
    yield 503, api.get(f"{url}/projects/{project}/devices")


def test_error_answers_match_error_schema(metal_sim, api) -> None:
    seen = []
    for expected, answer in _error_answers(metal_sim, api):
        body = answer.json()
        assert answer.status_code == expected or (expected == 503 and answer.status_code in (500, 502, 503))
        assert answer.headers["Content-Type"].startswith("application/json")
        assert answer.headers["X-Request-Id"]
        assert strict_problems(body, "Error.yaml") == [], body
        assert ("error" in body) != ("errors" in body), body
        seen.append(answer.status_code)
    assert {401, 403, 404, 422, 429} <= set(seen)


# ---------------------------------------------------------------------- request bodies: simulator agrees with spec


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"metro": ["da", "any"]},
        {"tags": ["a"], "locked": True, "customdata": {"a": 1},
         "ip_addresses": [{"address_family": 4, "public": False}]},
        {"plan": 3},
        {"tags": "a"},
        {"tags": [1]},
        {"locked": "yes"},
        {"customdata": []},
        {"metro": {"code": "da"}},
        {"billing_cycle": "weekly"},
        {"ip_addresses": [{"address_family": 5, "public": False}]},
        {"hostname": 7},
    ],
)
def test_simulator_accepts_exactly_the_spec_valid_create_types(metal_sim, api, extra: dict[str, Any]) -> None:
    body = {"metro": "da", "plan": "c3.small.x86", "operating_system": "ubuntu_22_04", **extra}
    spec_valid = schema_errors(body, "DeviceCreateInMetroInput.yaml") == []
    answer = api.post(f"{metal_sim.url}/projects/{metal_sim.project}/devices", json=body)
    assert answer.status_code == (201 if spec_valid else 422), answer.text


# ---------------------------------------------------------------------- vendored copies are the official text


@pytest.mark.parametrize("name", sorted(p.name for p in SCHEMAS.glob("*.yaml")))
def test_vendored_schema_matches_the_shared_spec(name: str) -> None:
    if not SHARED_SCHEMAS.is_dir():
        pytest.skip("../shared reference spec is not present")
    assert (SCHEMAS / name).read_bytes() == (SHARED_SCHEMAS / name).read_bytes()


def test_vendored_schemas_are_self_contained() -> None:
    for path in SCHEMAS.glob("*.yaml"):
        text = path.read_text()
        for line in text.splitlines():
            if "$ref:" in line:
                target = line.split("$ref:")[1].strip().strip("'\"").removeprefix("./")
                assert (SCHEMAS / target).is_file(), f"{path.name} refers to missing {target}"
