"""A Machine hook request, checked: its shape (a 400 when it is not a Metacontroller request for a Machine) and
what is wrong with the Machine, its class and Secret (a status, not a 400).

Related keys are v2's `namespace/name`: a body whose MachineClass or Secret keys lack the namespace comes from a
hook configured with version v1, which also drops objects from other namespaces, and is answered 400 naming the fix.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from hooks import decorator_request, objects
from hooks.context import BadRequest
from hooks.driver import Driver, MachineRequest
from hooks.mcm import vocabulary as mcm
from hooks.mcm.timefmt import parse_duration

USER_DATA_KEY = "userData"  # MCM's key for the userData in the class's Secret


@dataclass(frozen=True)
class HookRequest:
    """A checked decorator request: the Machine, the v2 related map and the attachments."""

    machine: dict[str, Any]
    related: dict[str, Any]
    attachments: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.machine["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.machine["metadata"]["namespace"])

    @property
    def annotations(self) -> dict[str, Any]:
        return objects.annotations(self.machine)

    @property
    def labels(self) -> dict[str, Any]:
        return objects.labels(self.machine)

    @property
    def status(self) -> dict[str, Any]:
        return objects.mapping(self.machine, "status")

    @property
    def node(self) -> dict[str, Any] | None:
        node = objects.mapping(self.related, mcm.NODE_KEY).get(self.name)
        return node if isinstance(node, dict) else None

    def machine_class(self) -> tuple[dict[str, Any] | None, list[str]]:
        """The Machine's MachineClass from the related map, or None and the problem that says why."""
        ref = objects.mapping(self.machine, "spec", "class")
        name = objects.string(ref, "name")
        if not name:
            return None, ["spec.class.name: Required value: Name is required"]
        if ref.get("kind") not in (None, "", "MachineClass"):
            return None, [f"spec.class.kind: Unsupported value: {_short(ref.get('kind'))}: supported values: "
                          "\"MachineClass\""]
        found = objects.mapping(self.related, mcm.MACHINECLASS_KEY).get(f"{self.namespace}/{name}")
        if not isinstance(found, dict):
            return None, [f"spec.class.name: Not found: MachineClass \"{self.namespace}/{name}\" does not exist"]
        return found, []

    def for_driver(self, user_data: str | None = None, installation_id: str = "") -> MachineRequest:
        """The driver's request; `user_data` the rendered userData to create with (None: the Secret's as it is);
        `installation_id` (hooks.mcm.installation) lets it mark what it creates."""
        machine_class, _ = self.machine_class()
        return MachineRequest(self.machine, machine_class, objects.mapping(self.related, mcm.SECRET_KEY), user_data,
                              installation_id=installation_id)

    def user_data(self) -> str | None:
        """The class Secret's `userData`, as MCM's core reads it to replace its placeholders (secretRef, then
        credentialsSecretRef, the later winning as for the credentials); None when there is none or it is unreadable
        (the driver's validation names that problem)."""
        machine_class, _ = self.machine_class()
        secrets = objects.mapping(self.related, mcm.SECRET_KEY)
        found: str | None = None
        for key in ("secretRef", "credentialsSecretRef"):
            ref = objects.mapping(machine_class, key)
            name, namespace = objects.string(ref, "name"), objects.string(ref, "namespace") or self.namespace
            if not name or namespace != self.namespace:
                continue
            raw = objects.mapping(secrets.get(f"{namespace}/{name}"), "data").get(USER_DATA_KEY)
            if raw is None:
                continue
            try:
                found = base64.b64decode(str(raw), validate=True).decode("utf-8") or found
            except (binascii.Error, ValueError):
                continue
        return found


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def check_machine(obj: Any, where: str, *, need_uid: bool) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise BadRequest(f"request has no '{where}' object: this route expects a Metacontroller request for a Machine")
    if obj.get("kind") not in (None, "Machine") or obj.get("apiVersion") not in (None, mcm.API_VERSION):
        raise BadRequest(
            f"'{where}' is a {obj.get('apiVersion')} {obj.get('kind')}, expected a {mcm.API_VERSION} Machine"
        )
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        raise BadRequest(f"'{where}.metadata' must be an object")
    for key in ("name", "namespace", *(("uid",) if need_uid else ())):
        if not isinstance(meta.get(key), str) or not meta[key]:
            raise BadRequest(f"'{where}.metadata.{key}' must be a non-empty string")
    for key in ("labels", "annotations"):
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            raise BadRequest(f"'{where}.metadata.{key}' must be an object")
    for key in ("spec", "status"):
        if obj.get(key) is not None and not isinstance(obj[key], dict):
            raise BadRequest(f"'{where}.{key}' must be an object")
    return obj


def _kind_map(value: Any, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(v is None or isinstance(v, dict) for v in value.values()):
        raise BadRequest(f"'{key}' must map 'Kind.group/version' to objects keyed by 'namespace/name'")
    return {k: v or {} for k, v in value.items()}


def parse_request(body: Any) -> HookRequest:
    """Check the shape of a sync/finalize request; anything that is not one is a 400, not a status."""
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    machine = check_machine(*decorator_request.decorated_object(body), need_uid=True)
    related = _kind_map(body.get("related"), "related")
    for kind_key in (mcm.MACHINECLASS_KEY, mcm.SECRET_KEY):
        for key in related.get(kind_key) or {}:
            if "/" not in key:
                raise BadRequest(
                    f"related {kind_key} key {key!r} has no namespace: the hooks of DecoratorController "
                    "metal-machines must use version: v2 (keys 'namespace/name')"
                )
    attachments, attachments_key = decorator_request.attachments(body)
    return HookRequest(machine=machine, related=related, attachments=_kind_map(attachments, attachments_key))


@dataclass(frozen=True)
class Checked:
    """The driver's validation plus the Machine's own problems (class reference, timeouts), in one order."""

    problems: tuple[str, ...]
    access_problems: tuple[str, ...]
    ignored_keys: tuple[str, ...]


def check(req: HookRequest, driver: Driver) -> Checked:
    _, class_problems = req.machine_class()
    found = driver.validate(req.for_driver())
    timeouts = []
    for key in ("creationTimeout", "healthTimeout"):
        value = objects.mapping(req.machine, "spec").get(key)
        if value is not None and (parse_duration(value) is None or (parse_duration(value) or 0) < 0):
            timeouts.append(f"spec.{key}: Invalid value: {_short(value)}: must be a duration such as \"20m\", "
                            "\"1h30m\" or \"90s\"")
    return Checked(
        problems=tuple(dict.fromkeys([*class_problems, *found.problems, *timeouts])),
        access_problems=tuple(dict.fromkeys([*class_problems, *found.access_problems])),
        ignored_keys=found.ignored_keys,
    )
