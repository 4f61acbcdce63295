"""Spec checks the MachineSet and MachineDeployment hooks share, phrased as the API server phrases its own."""

from __future__ import annotations

from typing import Any


def int_field(value: Any, path: str, problems: list[str], default: int = 0) -> int:
    """A whole-number field, or `default` with a problem recorded (unset is not a problem)."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        problems.append(f"{path}: Invalid value: {value!r}: must be a whole number (0 or more)")
        return default
    return value


def template_problems(template: dict[str, Any]) -> list[str]:
    """What keeps Machines from being built from this template (a MachineSet's, or a MachineDeployment's)."""
    problems: list[str] = []
    tmeta: Any = template.get("metadata", {})
    if not isinstance(tmeta, dict):
        problems.append("spec.template.metadata: Invalid value: must be a mapping")
        tmeta = {}
    for key in ("labels", "annotations"):
        value = tmeta.get(key)
        if value is not None and not (isinstance(value, dict) and all(isinstance(v, str) for v in value.values())):
            problems.append(f"spec.template.metadata.{key}: Invalid value: must map keys to string values")
    tspec: Any = template.get("spec")
    if tspec is not None and not isinstance(tspec, dict):
        problems.append("spec.template.spec: Invalid value: must be a mapping")
    tspec = tspec if isinstance(tspec, dict) else {}
    class_ref = tspec.get("class") if isinstance(tspec.get("class"), dict) else {}
    if not class_ref.get("kind") or not isinstance(class_ref.get("kind"), str):
        problems.append("spec.template.spec.class.kind: Required value: Kind is required")
    if not class_ref.get("name") or not isinstance(class_ref.get("name"), str):
        problems.append("spec.template.spec.class.name: Required value: Name is required")
    return problems
