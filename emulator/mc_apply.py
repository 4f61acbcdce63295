"""Metacontroller's client-side apply for children (DynamicApply), ported rule for rule from v4.17.2.

Sources: pkg/dynamic/apply/apply.go (the three-way Merge, list-map detection, last-applied annotation) and
pkg/controller/common/manage_children.go (ApplyUpdate: which metadata fields are reverted, status reverted,
the last-applied annotation; claimOwnership on create). Why it matters: a hook's desired child is merged, not
replaced, so fields other writers set (a Job controller's finalizers, labels added by someone else) survive
exactly when they survive under the real Metacontroller, and a hook that relies on more or less than that is
caught here. Pure functions: the I/O (create, update, delete) stays in mc_children.
"""

from __future__ import annotations

import copy
import json
from typing import Any

LAST_APPLIED = "metacontroller.k8s.io/last-applied-configuration"

# manage_children.go objectMetaSystemFields: taken from the observed object after the merge.
SYSTEM_FIELDS = ("selfLink", "uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp",
                 "deletionGracePeriodSeconds", "managedFields")

# apply.go knownMergeKeys, highest precedence first.
KNOWN_MERGE_KEYS = ("containerPort", "port", "mountPath", "name", "uid", "ip", "path")

Obj = dict[str, Any]


class ApplyError(Exception):
    """The observed object's last-applied annotation is not a JSON object (the sync fails, as in Metacontroller)."""


def go_json(value: Any) -> str:
    """encoding/json.Marshal's text: sorted map keys, no spaces, UTF-8, HTML-sensitive characters escaped."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                          ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return text


def merge(observed: Obj, last_applied: Obj | None, desired: Obj) -> Obj:
    """apply.Merge: apply the change from last_applied to desired onto a copy of observed."""
    destination = copy.deepcopy(observed)
    _merge_object(destination, last_applied, desired)
    return destination


def _merge(destination: Any, last_applied: Any, desired: Any) -> Any:
    # apply.go checks `!ok && val != nil` after a failed type assertion, which is never true: a last-applied or
    # desired value of another type is treated as absent (nil), never as an error.
    if isinstance(destination, dict):
        return _merge_object(destination, _as(dict, last_applied), _as(dict, desired))
    if isinstance(destination, list):
        return _merge_array(destination, _as(list, last_applied), _as(list, desired))
    return copy.deepcopy(desired)


def _as(kind: type, value: Any) -> Any:
    return value if isinstance(value, kind) else None


def _merge_object(destination: Obj, last_applied: Obj | None, desired: Obj | None) -> Obj:
    desired = desired or {}
    last_applied = last_applied or {}
    for key in last_applied:
        if key not in desired:
            destination.pop(key, None)
    for key, value in desired.items():
        destination[key] = _merge(destination.get(key), last_applied.get(key), value)
    return destination


def _merge_array(destination: list[Any], last_applied: list[Any] | None, desired: list[Any] | None) -> Any:
    key = detect_list_map_key(destination, last_applied or [], desired or [])
    if key:
        return _merge_list_map(key, destination, last_applied or [], desired or [])
    return copy.deepcopy(desired)  # a plain list is replaced; a desired non-list gives null


def _merge_list_map(key: str, destination: list[Any], last_applied: list[Any], desired: list[Any]) -> list[Any]:
    dest_map = _list_map(key, destination)
    _merge_object(dest_map, _list_map(key, last_applied), _list_map(key, desired))
    out: list[Any] = []
    added: set[str] = set()
    for item in destination:  # items already present keep their order (duplicates are not collapsed here)
        name = merge_key_text(item[key])
        if name in dest_map:
            out.append(dest_map[name])
            added.add(name)
    for item in desired:  # then the new ones, in desired order
        name = merge_key_text(item[key])
        if name not in added:
            out.append(dest_map[name])
            added.add(name)
    return out


def _list_map(key: str, items: list[Any]) -> Obj:
    return {merge_key_text(item[key]): item for item in items}


def merge_key_text(value: Any) -> str:
    """stringMergeKey: strings as they are, anything else as Go's %v prints it."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "<nil>"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return str(value)


def detect_list_map_key(*lists: list[Any]) -> str:
    """detectListMapKey: the first known merge key that every item of every list has; "" if not a list map."""
    common: set[str] | None = None
    for items in lists:
        for item in items:
            if not isinstance(item, dict):
                return ""
            common = set(item) if common is None else common & set(item)
    return next((key for key in KNOWN_MERGE_KEYS if common and key in common), "")


def get_last_applied(obj: Obj) -> Obj | None:
    """GetLastApplied: None when the annotation is absent or empty; ApplyError when it is not a JSON object."""
    text = ((obj.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED) or ""
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ApplyError(f'can\'t unmarshal "{LAST_APPLIED}" annotation: {exc}') from exc
    if not isinstance(value, dict):
        raise ApplyError(f'can\'t unmarshal "{LAST_APPLIED}" annotation: not a JSON object')
    return value


def set_last_applied(obj: Obj, applied: Obj) -> None:
    meta = obj.setdefault("metadata", {})
    annotations = meta.get("annotations") if isinstance(meta.get("annotations"), dict) else {}
    annotations[LAST_APPLIED] = go_json(applied)
    meta["annotations"] = annotations


def revert_system_fields(new: Obj, observed: Obj) -> None:
    """revertObjectMetaSystemFields + revertField(status): observed's value, or absent if observed has none."""
    new_meta = new.setdefault("metadata", {})
    observed_meta = observed.get("metadata") or {}
    for field in SYSTEM_FIELDS:
        if field in observed_meta:
            new_meta[field] = copy.deepcopy(observed_meta[field])
        else:
            new_meta.pop(field, None)
    if "status" in observed:
        new["status"] = copy.deepcopy(observed["status"])
    else:
        new.pop("status", None)


def apply_update(observed: Obj, desired: Obj) -> Obj:
    """ApplyUpdate: the object an InPlace update writes (compare it with observed to see whether to write)."""
    last_applied = get_last_applied(observed)
    update = copy.deepcopy(desired)
    annotations = (update.get("metadata") or {}).get("annotations")
    if isinstance(annotations, dict):
        annotations.pop(LAST_APPLIED, None)  # nullifyLastAppliedAnnotation keeps an emptied map
    new = merge(observed, last_applied, update)
    revert_system_fields(new, observed)
    set_last_applied(new, update)
    return new


def object_to_create(desired: Obj, controller_ref: Obj) -> Obj:
    """DynamicApply's create: last-applied = desired as sent, then our controller ref unless its UID is there."""
    new = copy.deepcopy(desired)
    set_last_applied(new, copy.deepcopy(desired))
    refs = list(new["metadata"].get("ownerReferences") or [])
    if not any(ref.get("uid") == controller_ref["uid"] for ref in refs):
        refs.append(controller_ref)
    new["metadata"]["ownerReferences"] = refs
    return new
