"""Metacontroller v4.17.2's hook request types, written down as data from its Go source (read, not copied).

Sources (`git show v4.17.2:<path>` in the Metacontroller repository):

- pkg/controller/decorator/api/v1/hooks.go and .../v2/hooks.go, `DecoratorHookRequest`: JSON tags `controller`,
  `object`, `attachments`, `related`, `finalizing` in both versions (the v2 Go fields are named Parent/Children,
  but the tags are object/attachments).
- pkg/controller/composite/api/v1/hooks.go and .../v2/hooks.go, `CompositeHookRequest`: `controller`, `parent`,
  `children`, `related`, `finalizing`.
- pkg/controller/common/customize/api/v1/hooks.go and .../v2/hooks.go, `CustomizeHookRequest`: `controller`,
  `parent`, for composite and decorator controllers alike.
- pkg/controller/common/api/api.go, `GroupVersionKind.MarshalText`: the outer key of every object map is
  `Kind.version` for the core group and `Kind.group/version` otherwise.
- pkg/controller/common/api/v2/common.go, `UniformObjectMap`: v2 inner keys are `namespace/name` for namespaced
  objects and `name` for cluster-scoped ones, whatever the parent's scope.
- pkg/controller/common/api/v2/common.go `UniformObjectMap.Convert` and .../v1/common.go `relativeName`: the
  controllers build uniform maps (decorator getChildren, composite claimChildren, customize GetRelatedObjects) and
  v1 requests convert them: for a cluster-scoped parent every object is kept, keyed `namespace/name` when
  namespaced and `name` otherwise; for a namespaced parent only objects of the parent's namespace are kept, keyed
  by `name` (cluster-scoped and other-namespace objects are dropped).
- Every map is present even when empty: getChildren calls InitGroup for every attachment/child rule, and
  GetRelatedObjects returns an empty map when there is no customize hook.
"""

from __future__ import annotations

import re

DECORATOR = "DecoratorController"
COMPOSITE = "CompositeController"
VERSIONS = ("v1", "v2")

_DECORATOR_SYNC = frozenset({"controller", "object", "attachments", "related", "finalizing"})
_COMPOSITE_SYNC = frozenset({"controller", "parent", "children", "related", "finalizing"})
_CUSTOMIZE = frozenset({"controller", "parent"})

# (controller kind, hook version, hook) -> the JSON keys of the request, all always present.
REQUEST_KEYS: dict[tuple[str, str, str], frozenset[str]] = {
    **{(DECORATOR, v, hook): _DECORATOR_SYNC for v in VERSIONS for hook in ("sync", "finalize")},
    **{(COMPOSITE, v, hook): _COMPOSITE_SYNC for v in VERSIONS for hook in ("sync", "finalize")},
    **{(kind, v, "customize"): _CUSTOMIZE for kind in (DECORATOR, COMPOSITE) for v in VERSIONS},
}

# The key holding the object the request is about, and the keys holding object maps.
ROOT_KEY = {DECORATOR: "object", COMPOSITE: "parent"}
MAP_KEYS = {DECORATOR: ("attachments", "related"), COMPOSITE: ("children", "related")}

OUTER_KEY = re.compile(r"^[A-Z][A-Za-z0-9]*\.(?:[a-z0-9.-]+/)?v[0-9]+(?:(?:alpha|beta)[0-9]+)?$")


def outer_key(api_version: str, kind: str) -> str:
    """`Kind.version` (core group) or `Kind.group/version`: GroupVersionKind.MarshalText."""
    group, _, version = api_version.rpartition("/")
    return f"{kind}.{group}/{version}" if group else f"{kind}.{version}"


def inner_key(version: str, parent_namespace: str, obj_namespace: str, name: str) -> str | None:
    """The inner map key of an object in a request of hook `version`, or None when that version drops it."""
    qualified = f"{obj_namespace}/{name}" if obj_namespace else name
    if version == "v2" or not parent_namespace:
        return qualified
    return name if obj_namespace == parent_namespace else None
