"""Metacontroller's record of what a hook last declared for a child or an attachment.

Metacontroller writes the desired object it applied into the annotation below (pkg/dynamic/apply/apply.go) and
merges the next desired object against it. That record is what a hook answers when it must keep an object exactly
as it is without deciding it again: a Machine frozen while its target cluster cannot be read still declares its
Jobs (an answer that leaves an attachment out makes Metacontroller delete it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from hooks import objects

LAST_APPLIED = "metacontroller.k8s.io/last-applied-configuration"


def without_last_applied(annotations: dict[str, Any]) -> dict[str, Any]:
    """Observed annotations as a desired child carries them: Metacontroller's own record left out."""
    return {k: v for k, v in annotations.items() if k != LAST_APPLIED}


def as_declared(observed: Any) -> dict[str, Any] | None:
    """The object as the hook last declared it, from Metacontroller's record; None when there is no usable one."""
    raw = objects.annotations(observed).get(LAST_APPLIED)
    try:
        declared = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        return None
    if not isinstance(declared, dict) or objects.name(declared) != objects.name(observed):
        return None
    return declared


def kept(attachments: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every observed attachment declared again exactly as last declared (ones without a record are let go)."""
    out: list[dict[str, Any]] = []
    for group in attachments.values():
        for observed in (group.values() if isinstance(group, Mapping) else ()):
            declared = as_declared(observed)
            if declared is not None:
                out.append(declared)
    return out
