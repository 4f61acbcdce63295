"""Device tags that tie an Equinix Metal device to the Machine that owns it.

The API has no idempotency key, so ownership lives in tags: a create whose answer was lost is found again by
its UID tag, and nothing without our tags is ever deleted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

PREFIX = "metal-machine-hooks"
MANAGED_TAG = f"{PREFIX}:managed"
UID_TAG_PREFIX = f"{PREFIX}:uid:"
MAX_TAG_LENGTH = 80
CLUSTER_TAG_MARKER = "kubernetes.io/cluster/"
# Marks a device as a MachineClass's, so a class that relates only its own Machines can tell another class's living
# device from an orphan (hooks/equinix/inventory.py).
CLASS_TAG_PREFIX = f"{PREFIX}:class:"
ROLE_TAG_MARKER = "kubernetes.io/role/"


def uid_tag(machine_uid: str) -> str:
    return f"{UID_TAG_PREFIX}{machine_uid}"


def ownership_tags(machine_uid: str) -> list[str]:
    return [MANAGED_TAG, uid_tag(machine_uid)]


def owner_uid(tags: Iterable[str]) -> str | None:
    """The Machine UID a device belongs to, or None if the device is not ours."""
    tags = list(tags or ())
    if MANAGED_TAG not in tags:
        return None
    for tag in tags:
        if isinstance(tag, str) and tag.startswith(UID_TAG_PREFIX):
            return tag[len(UID_TAG_PREFIX):] or None
    return None


def is_owned_by(tags: Iterable[str], machine_uid: str) -> bool:
    return bool(machine_uid) and owner_uid(tags) == machine_uid


def cluster_tag(tags: Iterable[str]) -> str | None:
    """The class's cluster tag (the last one, as the Go provider picks it)."""
    found = None
    for tag in tags or ():
        if isinstance(tag, str) and CLUSTER_TAG_MARKER in tag:
            found = tag
    return found


def class_tag(class_name: str) -> str:
    """The tag marking a device as a class's; a name too long for the API's 80 characters keeps a prefix and a hash."""
    tag = f"{CLASS_TAG_PREFIX}{class_name}"
    if len(tag) <= MAX_TAG_LENGTH:
        return tag
    digest = hashlib.sha256(class_name.encode()).hexdigest()[:16]
    return f"{CLASS_TAG_PREFIX}{class_name[:MAX_TAG_LENGTH - len(CLASS_TAG_PREFIX) - 17]}~{digest}"


def class_marks(device_tags: Iterable[Any]) -> list[str]:
    return [t for t in device_tags if isinstance(t, str) and t.startswith(CLASS_TAG_PREFIX)]


def owner_class(device_tags: list[str], class_name: str) -> str | None:
    """`class_name` when the device carries that class's mark, else the other class's mark as written, else None."""
    marks = class_marks(device_tags)
    if class_tag(class_name) in marks:
        return class_name
    return marks[-1][len(CLASS_TAG_PREFIX):] if marks else None
