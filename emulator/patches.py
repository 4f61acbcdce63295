"""The three PATCH formats the Kubernetes API server accepts, as pure functions on JSON-like values.

Why here and not in the store: the store takes whole objects (PUT semantics); the emulator's REST API
(`emulator/kubeapi.py`) turns a PATCH into a new whole object with these functions and writes that, as the API
server does. Programs such as `python -m drain` and kubectl send merge patches (cordon) and strategic merge
patches, and tools send JSON patches, so all three must behave as on a real cluster:

    merge_patch(doc, patch)            RFC 7386 (application/merge-patch+json): maps merge, null deletes, lists replace
    json_patch(doc, operations)        RFC 6902 (application/json-patch+json): add/remove/replace/move/copy/test
    strategic_merge_patch(doc, patch)  application/strategic-merge-patch+json: as merge, except the lists Kubernetes
                                       merges by key (containers by name, conditions by type, ...), primitive lists
                                       with a merge strategy (finalizers) taken as sets, and the `$patch` directives

All three return a new value and never change their arguments. PatchError carries what the API server would
say; the API maps it to 422 (a failed `test` or a bad path) or 400 (a malformed patch).
"""

from __future__ import annotations

import copy
from typing import Any

# Lists that Kubernetes' strategic merge patch merges by key (`patchMergeKey` in the Go types), by field name.
# A field name maps to the same merge key wherever it appears in the built-in kinds this emulator serves.
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
    "conditions": "type",
    "addresses": "type",
    "ownerReferences": "uid",
    "taints": "key",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
}
# Lists of scalars with `patchStrategy:"merge"`: a patch adds entries instead of replacing the list.
MERGED_PRIMITIVE_LISTS = {"finalizers"}


class PatchError(ValueError):
    """A patch that cannot be applied; `invalid` is True for a well-formed patch that does not fit the object."""

    def __init__(self, message: str, *, invalid: bool = False) -> None:
        super().__init__(message)
        self.invalid = invalid


# ---------------------------------------------------------------- RFC 7386


def merge_patch(doc: Any, patch: Any) -> Any:
    """JSON merge patch: a map patch merges recursively, `null` removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(doc) if isinstance(doc, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


# ---------------------------------------------------------------- RFC 6902


def json_patch(doc: Any, operations: Any) -> Any:
    """Apply a JSON patch (a list of operations) to a copy of `doc`; all or nothing."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be a list of operations")
    out = copy.deepcopy(doc)
    for number, op in enumerate(operations):
        if not isinstance(op, dict) or not isinstance(op.get("op"), str) or not isinstance(op.get("path"), str):
            raise PatchError(f"operation {number}: needs string 'op' and 'path'")
        out = _apply_operation(out, op)
    return out


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"path {path!r} must start with '/'")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _index(container: list[Any], token: str, *, adding: bool) -> int:
    if adding and token == "-":
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise PatchError(f"{token!r} is not a list index", invalid=True)
    index = int(token)
    limit = len(container) if adding else len(container) - 1
    if index > limit:
        raise PatchError(f"list index {index} is out of range", invalid=True)
    return index


def _parent(doc: Any, parts: list[str]) -> Any:
    node = doc
    for token in parts[:-1]:
        if isinstance(node, dict):
            if token not in node:
                raise PatchError(f"path element {token!r} does not exist", invalid=True)
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, adding=False)]
        else:
            raise PatchError(f"path element {token!r} is inside a scalar", invalid=True)
    return node


def _get(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        return doc
    parent = _parent(doc, parts)
    last = parts[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"{path!r} does not exist", invalid=True)
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, adding=False)]
    raise PatchError(f"{path!r} does not exist", invalid=True)


def _add(doc: Any, path: str, value: Any) -> Any:
    parts = _pointer(path)
    if not parts:
        return copy.deepcopy(value)
    parent = _parent(doc, parts)
    if isinstance(parent, dict):
        parent[parts[-1]] = copy.deepcopy(value)
    elif isinstance(parent, list):
        parent.insert(_index(parent, parts[-1], adding=True), copy.deepcopy(value))
    else:
        raise PatchError(f"cannot add {path!r} inside a scalar", invalid=True)
    return doc


def _remove(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        raise PatchError("cannot remove the whole document", invalid=True)
    parent = _parent(doc, parts)
    if isinstance(parent, dict):
        if parts[-1] not in parent:
            raise PatchError(f"{path!r} does not exist", invalid=True)
        del parent[parts[-1]]
    elif isinstance(parent, list):
        del parent[_index(parent, parts[-1], adding=False)]
    else:
        raise PatchError(f"{path!r} does not exist", invalid=True)
    return doc


def _apply_operation(doc: Any, op: dict[str, Any]) -> Any:
    kind, path = op["op"], op["path"]
    if kind in ("add", "replace", "test") and "value" not in op:
        raise PatchError(f"{kind} {path}: needs 'value'")
    if kind in ("move", "copy") and not isinstance(op.get("from"), str):
        raise PatchError(f"{kind} {path}: needs 'from'")
    if kind == "add":
        return _add(doc, path, op["value"])
    if kind == "remove":
        return _remove(doc, path)
    if kind == "replace":
        _get(doc, path)  # must exist
        return _add(_remove(doc, path), path, op["value"]) if _pointer(path) else copy.deepcopy(op["value"])
    if kind == "test":
        if _get(doc, path) != op["value"]:
            raise PatchError(f"test {path}: the value differs", invalid=True)
        return doc
    if kind == "copy":
        return _add(doc, path, _get(doc, op["from"]))
    if kind == "move":
        if path.startswith(op["from"] + "/"):
            raise PatchError(f"move {op['from']} into its own child {path}", invalid=True)
        value = _get(doc, op["from"])
        return _add(_remove(doc, op["from"]), path, value)
    raise PatchError(f"unknown operation {kind!r}")


# ---------------------------------------------------------------- strategic merge


def strategic_merge_patch(doc: Any, patch: Any) -> Any:
    """Kubernetes' strategic merge patch for built-in kinds (CRDs do not support it: the API answers 415)."""
    return _strategic(doc, patch, "")


def _strategic(doc: Any, patch: Any, field: str) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    if directive is not None:
        raise PatchError(f"unknown $patch directive {directive!r}")
    out = copy.deepcopy(doc) if isinstance(doc, dict) else {}
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            drop = value if isinstance(value, list) else []
            if isinstance(out.get(name), list):
                out[name] = [item for item in out[name] if item not in drop]
            continue
        if key.startswith("$setElementOrder/") or key == "$retainKeys":
            continue  # ordering hints and key retention: the merged content is what matters here
        if value is None:
            out.pop(key, None)
        elif isinstance(value, list):
            merged = _strategic_list(out.get(key), value, key)
            if merged is None:
                out.pop(key, None)
            else:
                out[key] = merged
        elif isinstance(value, dict):
            merged = _strategic(out.get(key), value, key)
            if merged is None:
                out.pop(key, None)
            else:
                out[key] = merged
        else:
            out[key] = copy.deepcopy(value)
    return out


def _strategic_list(current: Any, patch: list[Any], field: str) -> list[Any] | None:
    current = current if isinstance(current, list) else []
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [copy.deepcopy(i) for i in patch if not (isinstance(i, dict) and i.get("$patch") == "replace")]
    if field in MERGED_PRIMITIVE_LISTS:
        out = copy.deepcopy(current)
        out.extend(copy.deepcopy(item) for item in patch if item not in out)
        return out
    key = MERGE_KEYS.get(field)
    if key is None or not all(isinstance(item, dict) for item in patch):
        return copy.deepcopy(patch)
    out = copy.deepcopy(current)
    for item in patch:
        if key not in item:
            raise PatchError(f"{field}: every item of a strategic merge patch needs the merge key {key!r}")
        at = next((i for i, old in enumerate(out) if isinstance(old, dict) and old.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if at is not None:
                del out[at]
            continue
        if at is None:
            out.append(_strategic({}, item, field))
        else:
            out[at] = _strategic(out[at], item, field)
    return out
