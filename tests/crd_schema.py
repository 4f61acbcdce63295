"""Check objects the way the API server would: validate against a CRD's openAPIV3Schema and list the fields it
would silently prune. A status field our CRD (or MCM's) does not define never reaches the user, and a status that
never matches what the hook returns makes Metacontroller loop, so tests use this on every status the hooks return.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO = Path(__file__).resolve().parent.parent
SOURCES = {
    "ours": REPO / "kubernetes" / "crds",
    "mcm": REPO.parent / "shared" / "reference" / "mcm-crds",
}
METACONTROLLER_CRDS = REPO.parent / "shared" / "reference" / "metacontroller" / "metacontroller-crds-v1.yaml"


@functools.cache
def _crd_documents(folder: Path) -> list[dict[str, Any]]:
    """Parsed once per run (the CRDs do not change under a test); callers get copies, never these objects."""
    docs: list[dict[str, Any]] = []
    if not folder.is_dir():
        return docs
    for path in sorted(folder.glob("*.yaml")):
        for doc in yaml.load_all(path.read_text(), Loader=yaml.CSafeLoader):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                docs.append(doc)
    return docs


def load_crd_schema(kind: str, source: str = "ours", version: str = "v1alpha1") -> dict[str, Any] | None:
    """The openAPIV3Schema of `kind` from our CRDs or MCM's, or None when that CRD is not available."""
    for doc in _crd_documents(SOURCES[source]):
        if doc.get("spec", {}).get("names", {}).get("kind") != kind:
            continue
        for entry in doc["spec"].get("versions", []):
            if entry.get("name") == version:
                return copy.deepcopy(entry.get("schema", {}).get("openAPIV3Schema"))
    return None


@functools.cache
def _metacontroller_crds() -> tuple[dict[str, Any], ...]:
    """Metacontroller's own CRDs (a large file), parsed once per run; None of it is handed out uncopied."""
    if not METACONTROLLER_CRDS.is_file():
        return ()
    return tuple(d for d in yaml.load_all(METACONTROLLER_CRDS.read_text(), Loader=yaml.CSafeLoader)
                 if isinstance(d, dict))


def metacontroller_crd_schema(kind: str) -> dict[str, Any] | None:
    """The openAPIV3Schema of Metacontroller's `kind` (CompositeController, DecoratorController), or None when its
    CRDs are not available here."""
    for doc in _metacontroller_crds():
        if doc.get("spec", {}).get("names", {}).get("kind") == kind:
            return copy.deepcopy(doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    return None


def to_jsonschema(schema: Any) -> Any:
    """Translate the Kubernetes extensions that plain JSON Schema does not know."""
    if isinstance(schema, list):
        return [to_jsonschema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key.startswith("x-kubernetes-") or key == "nullable":
            continue
        if key in ("properties", "patternProperties"):
            out[key] = {name: to_jsonschema(sub) for name, sub in value.items()}
        else:
            out[key] = to_jsonschema(value)
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"] if isinstance(out["type"], str) else [*out["type"], "null"]
    return out


def pruned_paths(value: Any, schema: dict[str, Any] | None, path: str = "") -> list[str]:
    """Paths in `value` that a structural schema would drop on write."""
    if not isinstance(schema, dict) or schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found: list[str] = []
    if isinstance(value, dict):
        properties = schema.get("properties")
        additional = schema.get("additionalProperties")
        for key, sub in value.items():
            child = f"{path}.{key}"
            if properties and key in properties:
                found += pruned_paths(sub, properties[key], child)
            elif isinstance(additional, dict):
                found += pruned_paths(sub, additional, child)
            elif additional is True:
                continue
            else:
                found.append(child)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            found += pruned_paths(item, schema["items"], f"{path}[{index}]")
    return found


def problems(value: Any, schema: dict[str, Any], label: str) -> list[str]:
    validator = jsonschema.Draft7Validator(to_jsonschema(copy.deepcopy(schema)))
    errors = [f"{label}: {'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
              for e in validator.iter_errors(value)]
    errors += [f"{label}: would be pruned: {p}" for p in pruned_paths(value, schema)]
    return errors


def status_problems(status: dict[str, Any], kind: str) -> list[str]:
    """Validation errors and pruned paths of `status` against our CRD and MCM's (whichever are present)."""
    found: list[str] = []
    for source in SOURCES:
        schema = load_crd_schema(kind, source)
        if schema is None:
            continue
        status_schema = schema.get("properties", {}).get("status")
        if status_schema is None:
            found.append(f"{source}: {kind} CRD has no status schema")
            continue
        found += problems(status, status_schema, f"{source} {kind}.status")
    return found


def object_problems(obj: dict[str, Any], kind: str, source: str) -> list[str] | None:
    """Problems of a whole object against one source's CRD; None when that CRD is not available."""
    schema = load_crd_schema(kind, source)
    if schema is None:
        return None
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    properties = {k: v for k, v in schema.get("properties", {}).items() if k not in ("apiVersion", "kind", "metadata")}
    return problems(body, {**schema, "properties": properties}, f"{source} {kind}")
