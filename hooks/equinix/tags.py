"""Device tags that tie an Equinix Metal device to the Machine that owns it.

The API has no idempotency key, so ownership lives in tags: a create whose answer was lost is found again by
its UID tag, and nothing without our tags is ever deleted.
"""

from __future__ import annotations

from collections.abc import Iterable

PREFIX = "metal-machine-hooks"
MANAGED_TAG = f"{PREFIX}:managed"
UID_TAG_PREFIX = f"{PREFIX}:uid:"
MAX_TAG_LENGTH = 80
CLUSTER_TAG_MARKER = "kubernetes.io/cluster/"
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
