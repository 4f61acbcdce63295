"""What a Machine asks for: its MachineClass, the class's providerSpec and the credentials Secret, checked as a whole.

The providerSpec keeps the Go provider's contract so existing MachineClasses keep working: keys match
case-insensitively (an exact spelling wins), unknown keys such as `facilities` are ignored but reported, and the
Go provider's rules and messages apply (required metro/machineType/projectID, OS or ipxeScriptUrl, a
`kubernetes.io/cluster/` and a `kubernetes.io/role/` tag). Types are checked with a JSON Schema.
Every problem is reported at once, each naming its field, so one edit fixes a class.

Credentials: the Secrets named by `secretRef` and `credentialsSecretRef` are merged (credentials win) and must
live in the Machine's namespace with the label `metal-machine-hooks/credentials: "true"`. The hooks ask
Metacontroller only for Secrets in the Machine's own namespace: a MachineClass author in one namespace must not be
able to spend credentials kept in another (MCM itself only reads its control namespace). The token is
`apiToken`, or `alternateApiToken` when `apiToken` is empty; userData is required to create a device.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from hooks import objects
from hooks.config import CREDENTIALS_LABEL, CREDENTIALS_LABEL_VALUE
from hooks.equinix import tags

# MachineClass.provider of the classes this driver serves (the Go provider's name).
PROVIDER = "EquinixMetal"
BILLING_CYCLES = ("hourly", "daily", "monthly", "yearly")
CUSTOM_IPXE = "custom_ipxe"
NAME_PATTERN = "^[-a-z0-9]+$"
NAME_MAX_LENGTH = 63
TOKEN_KEY = "apiToken"
ALTERNATE_TOKEN_KEY = "alternateApiToken"
USERDATA_KEY = "userData"
# The token travels in the X-Auth-Token header: anything else fails in the HTTP library (or splits the header).
HEADER_SAFE_TOKEN = re.compile(r"[\x21-\x7e]+")

# The Go provider's providerSpec keys, in their exact spelling. `userdata` and `apiVersion` were never used by it.
KNOWN_KEYS = (
    "apiVersion", "metro", "machineType", "billingCycle", "OS", "ipxeScriptUrl", "projectID", "tags",
    "sshKeys", "userdata", "reservationIDs", "reservedDevicesOnly",
)
UNUSED_KEYS = ("userdata",)
_BY_LOWER = {key.lower(): key for key in KNOWN_KEYS}

_STRING_LIST = {"type": "array", "items": {"type": "string", "minLength": 1}}
PROVIDER_SPEC_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "apiVersion": {"type": "string"},
        "metro": {"type": "string", "minLength": 1},
        "machineType": {"type": "string", "minLength": 1},
        "billingCycle": {"type": "string", "enum": list(BILLING_CYCLES)},
        "OS": {"type": "string"},
        "ipxeScriptUrl": {"type": "string", "pattern": "^https?://."},
        "projectID": {"type": "string", "minLength": 1},
        "tags": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": tags.MAX_TAG_LENGTH}},
        "sshKeys": _STRING_LIST,
        "userdata": {"type": "string"},
        "reservationIDs": _STRING_LIST,
        "reservedDevicesOnly": {"type": "boolean"},
    },
    "required": ["metro", "machineType", "billingCycle", "projectID"],
    # Like the Go provider: an iPXE script URL replaces the OS (the device boots `custom_ipxe`).
    "if": {"required": ["ipxeScriptUrl"]},
    "else": {"required": ["OS"], "properties": {"OS": {"minLength": 1}}},
}
_VALIDATOR = jsonschema.Draft202012Validator(PROVIDER_SPEC_SCHEMA)

# Go's "Required value" texts, so users who know the Go provider recognise them.
_REQUIRED = {
    "metro": "Metro is required",
    "machineType": "Machine Type is required",
    "projectID": "Project ID is required",
    "OS": "OS or IPXEScriptURL is required",
    "billingCycle": "Billing cycle is required, one of " + ", ".join(BILLING_CYCLES),
}
_TYPE_NAMES = {"string": "a string", "array": "a list", "boolean": "true or false", "object": "a mapping"}


@dataclass(frozen=True)
class ProviderSpec:
    """A validated providerSpec in the shape the create request needs."""

    project_id: str
    metro: str
    machine_type: str
    billing_cycle: str
    operating_system: str
    ipxe_script_url: str | None = None
    tags: tuple[str, ...] = ()
    ssh_keys: tuple[str, ...] = ()
    reservation_ids: tuple[str, ...] = ()
    reserved_only: bool = False


@dataclass(frozen=True)
class Credentials:
    """The API token and userData; never printed."""

    token: str = field(repr=False)
    user_data: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Resolution:
    """Everything sync and finalize need from the class side, plus what is wrong with it.

    `access_problems` are the ones that keep us from talking to the API at all (no class, wrong provider, no
    Secret or token, no project); `problems` holds every problem, including the ones that only block a create.
    """

    class_name: str = ""
    spec: ProviderSpec | None = None
    project_id: str | None = None
    credentials: Credentials | None = None
    problems: tuple[str, ...] = ()
    access_problems: tuple[str, ...] = ()
    ignored_keys: tuple[str, ...] = ()

    @property
    def can_reach_api(self) -> bool:
        return not self.access_problems and self.credentials is not None and bool(self.project_id)

    def secrets(self) -> list[str]:
        """Values that must never appear in a response or a log."""
        if self.credentials is None:
            return []
        return [v for v in (self.credentials.token, self.credentials.user_data) if v]


def fold_keys(raw: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Map providerSpec keys to the Go spelling, case-insensitively; return (spec, ignored keys).

    An exact spelling wins over a case variant, and a `null` value counts as absent, as in Go's decoder.
    """
    exact = {key for key in raw if key in KNOWN_KEYS}
    folded: dict[str, Any] = {}
    ignored: list[str] = []
    for key, value in raw.items():
        canonical = key if key in KNOWN_KEYS else _BY_LOWER.get(str(key).lower())
        if canonical is None or (canonical != key and canonical in exact) or canonical in UNUSED_KEYS:
            ignored.append(str(key))
            continue
        if value is not None:
            folded[canonical] = value
    return folded, sorted(ignored)


def _path(parts: Any) -> str:
    text = "providerSpec"
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _render(error: jsonschema.ValidationError) -> list[str]:
    where = list(error.absolute_path)
    wanted: Any = error.validator_value  # jsonschema's stubs type it as possibly Unset; it is set for these keywords
    if error.validator == "required":
        present = error.instance if isinstance(error.instance, dict) else {}
        return [
            f"{_path([*where, name])}: Required value: {_REQUIRED.get(name, 'required')}"
            for name in wanted
            if name not in present
        ]
    if error.validator == "minLength" and len(where) == 1 and where[0] in _REQUIRED:
        return [f"{_path(where)}: Required value: {_REQUIRED[where[0]]}"]
    if error.validator == "type":
        names = " or ".join(_TYPE_NAMES.get(t, t) for t in ([wanted] if isinstance(wanted, str) else wanted))
        return [f"{_path(where)}: Invalid value: {_short(error.instance)}: must be {names}"]
    if error.validator == "enum":
        allowed = ", ".join(f'"{v}"' for v in wanted)
        return [f"{_path(where)}: Unsupported value: {_short(error.instance)}: supported values: {allowed}"]
    if error.validator == "maxLength":
        return [
            f"{_path(where)}: Too long: may have at most {wanted} characters, "
            f"{_short(error.instance)} has {len(str(error.instance))}"
        ]
    if error.validator == "minLength":
        return [f"{_path(where)}: Invalid value: \"\": must not be empty"]
    if error.validator == "pattern" and where == ["ipxeScriptUrl"]:
        return [f"{_path(where)}: Invalid value: {_short(error.instance)}: must be an http:// or https:// URL"]
    return [f"{_path(where)}: Invalid value: {_short(error.instance)}: {error.message}"]


def parse_provider_spec(raw: Any, machine_uid: str = "") -> tuple[ProviderSpec | None, list[str], list[str]]:
    """Validate a providerSpec; return (spec or None, problems, ignored keys)."""
    if not isinstance(raw, dict):
        return None, [f"providerSpec: Invalid value: {_short(raw)}: must be a mapping"], []
    spec, ignored = fold_keys(raw)
    # Sorted by field, so the same class always yields the same message (and status).
    problems = sorted({message for error in _VALIDATOR.iter_errors(spec) for message in _render(error)})
    tag_list = [t for t in spec.get("tags", []) if isinstance(t, str)] if isinstance(spec.get("tags"), list) else []
    problems += _tag_problems(tag_list, machine_uid)
    if problems:
        return None, problems, ignored
    ipxe = spec.get("ipxeScriptUrl")
    return (
        ProviderSpec(
            project_id=spec["projectID"],
            metro=spec["metro"],
            machine_type=spec["machineType"],
            billing_cycle=spec["billingCycle"],
            operating_system=CUSTOM_IPXE if ipxe else spec["OS"],
            ipxe_script_url=ipxe,
            tags=tuple(tag_list),
            ssh_keys=tuple(spec.get("sshKeys", ())),
            reservation_ids=tuple(spec.get("reservationIDs", ())),
            reserved_only=bool(spec.get("reservedDevicesOnly", False)),
        ),
        [],
        ignored,
    )


def _tag_problems(tag_list: list[str], machine_uid: str) -> list[str]:
    problems = []
    if not any(tags.CLUSTER_TAG_MARKER in t for t in tag_list):
        problems.append("providerSpec.tags: Required value: Tag required of the form kubernetes.io/cluster/****")
    if not any(tags.ROLE_TAG_MARKER in t for t in tag_list):
        problems.append("providerSpec.tags: Required value: Tag required of the form kubernetes.io/role/****")
    for index, tag in enumerate(tag_list):
        if tag.startswith(tags.PREFIX + ":"):
            problems.append(
                f"providerSpec.tags[{index}]: Forbidden: tags starting with \"{tags.PREFIX}:\" are reserved for "
                "the hooks' ownership tags"
            )
    for tag in tags.ownership_tags(machine_uid) if machine_uid else ():
        if len(tag) > tags.MAX_TAG_LENGTH:
            problems.append(
                f"metadata.uid: Too long: the ownership tag {tag!r} has {len(tag)} characters, "
                f"at most {tags.MAX_TAG_LENGTH} are allowed"
            )
    return problems


def name_problems(name: Any) -> list[str]:
    """The Machine name becomes the device hostname; the Go provider's rules and messages."""
    if not isinstance(name, str) or name == "":
        return ["metadata.name: Invalid value: \"\": name must not be blank"]
    errors = []
    if len(name) > NAME_MAX_LENGTH:
        errors.append(f"name was length {len(name)}, more than the maximum {NAME_MAX_LENGTH}")
    if not re.match(NAME_PATTERN, name):
        errors.append(f"name did not match allowed regex '{NAME_PATTERN}'")
    if not errors:
        return []
    return [f"metadata.name: Invalid value: {_short(name)}: " + "; ".join(errors)]


def _ref(obj: dict[str, Any], key: str, default_namespace: str) -> tuple[str, str] | None:
    ref = obj.get(key)
    if not isinstance(ref, dict) or not ref.get("name"):
        return None
    return str(ref.get("namespace") or default_namespace), str(ref["name"])


def _secret_data(
    key: str, ref: tuple[str, str], namespace: str, secrets: Mapping[str, Any]
) -> tuple[dict[str, str], list[str]]:
    ref_ns, ref_name = ref
    if ref_ns != namespace:
        return {}, [
            f"{key}.namespace: Forbidden: Secret \"{ref_ns}/{ref_name}\" is outside the Machine's namespace "
            f"\"{namespace}\"; the hooks read credentials only from the Machine's own namespace"
        ]
    secret = secrets.get(f"{ref_ns}/{ref_name}")
    if not isinstance(secret, dict):
        return {}, [
            f"{key}: Not found: Secret \"{ref_ns}/{ref_name}\" is not visible to the hooks; it must exist in "
            f"namespace \"{namespace}\" and carry the label {CREDENTIALS_LABEL}: \"{CREDENTIALS_LABEL_VALUE}\""
        ]
    data = secret.get("data") or {}
    if not isinstance(data, dict):
        return {}, [f"{key}: Invalid value: Secret \"{ref_ns}/{ref_name}\" has a malformed data field"]
    decoded: dict[str, str] = {}
    problems = []
    for name, value in data.items():
        try:
            decoded[str(name)] = base64.b64decode(str(value), validate=True).decode("utf-8")
        except (binascii.Error, ValueError, UnicodeDecodeError):
            problems.append(f"{key}.data.{name}: Invalid value: Secret \"{ref_ns}/{ref_name}\" key {name} is not "
                            "valid base64-encoded UTF-8")
    return decoded, problems


def credentials(
    machine_class: dict[str, Any], namespace: str, secrets: Mapping[str, Any]
) -> tuple[Credentials | None, list[str], list[str]]:
    """Merge the class's Secrets; return (credentials or None, problems blocking access, problems blocking create)."""
    found = [(key, _ref(machine_class, key, namespace)) for key in ("secretRef", "credentialsSecretRef")]
    refs = [(key, ref) for key, ref in found if ref is not None]
    if not refs:
        missing = "secretRef: Required value: the MachineClass names neither secretRef nor credentialsSecretRef"
        return None, [missing], []
    merged: dict[str, str] = {}
    access: list[str] = []
    for key, ref in refs:
        data, problems = _secret_data(key, ref, namespace, secrets)
        merged.update(data)
        access += problems
    token = merged.get(TOKEN_KEY, "").strip() or merged.get(ALTERNATE_TOKEN_KEY, "").strip()
    if not token:
        if not access:
            access.append(
                f"secretRef.{TOKEN_KEY}: Required value: Required Equinix Metal API Key one of "
                f"'{TOKEN_KEY}' or '{ALTERNATE_TOKEN_KEY}'"
            )
        return None, access, []
    if not HEADER_SAFE_TOKEN.fullmatch(token):
        key = TOKEN_KEY if merged.get(TOKEN_KEY, "").strip() else ALTERNATE_TOKEN_KEY
        access.append(
            f"secretRef.{key}: Invalid value: the API token holds characters an HTTP header cannot carry (spaces, "
            "control or non-ASCII characters, often pasted along with it); only visible ASCII is allowed"
        )
        return None, access, []
    user_data = merged.get(USERDATA_KEY) or None
    create = [] if user_data else [f"secretRef.{USERDATA_KEY}: Required value: Required userData"]
    return Credentials(token=token, user_data=user_data), access, create


def resolve(machine: Mapping[str, Any], machine_class: Mapping[str, Any] | None,
            secrets: Mapping[str, Any]) -> Resolution:
    """Check the Machine's class (None: the hooks found none, they say why), providerSpec and credentials.

    The Machine's name becomes the device hostname, so its problems are reported here too (they block a create).
    """
    namespace, uid = objects.namespace(machine), objects.uid(machine)
    class_name = objects.string(machine, "spec", "class", "name")
    create = name_problems(objects.meta(machine).get("name"))
    if machine_class is None:
        return Resolution(class_name, problems=tuple(create))
    provider = machine_class.get("provider")
    if provider != PROVIDER:
        access = [f"provider: Unsupported value: Requested for Provider '{provider or ''}', we only support "
                  f"'{PROVIDER}'"]
        return Resolution(class_name, problems=tuple(access + create), access_problems=tuple(access))
    spec, spec_problems, ignored = parse_provider_spec(machine_class.get("providerSpec"), uid)
    folded, _ = fold_keys(objects.mapping(machine_class, "providerSpec"))
    project = folded.get("projectID") if isinstance(folded.get("projectID"), str) and folded.get("projectID") else None
    access = [] if project else [p for p in spec_problems if p.startswith("providerSpec.projectID")]
    creds, cred_access, cred_create = credentials(dict(machine_class), namespace, secrets)
    access += cred_access
    problems = [*spec_problems, *cred_access, *cred_create, *create]
    return Resolution(
        class_name=class_name,
        spec=spec,
        project_id=project,
        credentials=creds,
        problems=tuple(dict.fromkeys(problems)),
        access_problems=tuple(dict.fromkeys(access)),
        ignored_keys=tuple(ignored),
    )
