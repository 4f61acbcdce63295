"""A ValidatingAdmissionPolicy's CEL, evaluated the way the API server does, for the tests of our policies.

kubernetes/drain/admission-policy.yaml and kubernetes/node-jobs/admission-policy.yaml are checked door by door
against admission requests shaped as the API server sends them: variables first, in order, then every validation.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import celpy
import yaml

ENV = celpy.Environment()


@functools.cache
def _program(expression: str) -> Any:
    return ENV.program(ENV.compile(expression))


@functools.cache
def policy_spec(path: Path) -> dict[str, Any]:
    (policy,) = [d for d in yaml.safe_load_all(path.read_text()) if d["kind"] == "ValidatingAdmissionPolicy"]
    return dict(policy["spec"])


def admit(path: Path, resource: str, obj: dict[str, Any] | None, user: str, operation: str = "CREATE",
          old: dict[str, Any] | None = None) -> list[str]:
    """The messages of every validation of the policy in `path` that denies this request ([] = admitted)."""
    spec = policy_spec(path)
    request = {"resource": {"group": "batch" if resource == "jobs" else "", "version": "v1", "resource": resource},
               "operation": operation, "userInfo": {"username": user}}
    variables: dict[str, Any] = {}

    def run(expression: str) -> Any:
        return _program(expression).evaluate({"object": celpy.json_to_cel(obj), "oldObject": celpy.json_to_cel(old),
                                              "request": celpy.json_to_cel(request),
                                              "variables": celpy.json_to_cel(variables)})

    for variable in spec["variables"]:
        variables[variable["name"]] = _plain(run(variable["expression"]))
    return [v["message"] for v in spec["validations"] if not bool(run(v["expression"]))]


def _plain(value: Any) -> Any:
    """A CEL value as JSON again, so a later expression can read a variable (CEL list concatenation gives a plain
    list of CEL values; booleans must stay booleans, not become ints)."""
    if isinstance(value, celpy.celtypes.BoolType):
        return bool(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, celpy.celtypes.IntType):
        return int(value)
    return str(value) if isinstance(value, celpy.celtypes.StringType) else value
