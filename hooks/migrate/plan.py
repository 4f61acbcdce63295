"""What a migration (or a rollback) of one namespace must do, decided from a snapshot of the objects: pure functions.

The program (hooks/migrate/__main__.py) reads the snapshot, asks these functions, prints the answer, and with
`--apply` performs each step as one JSON patch guarded by the object's resourceVersion. Every decision is taken
again from fresh objects on every run, so a run that is interrupted anywhere is finished by running it again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hooks import objects
from hooks.config import CREDENTIALS_LABEL, CREDENTIALS_LABEL_VALUE
from hooks.driver import PROVIDER_ID_ANNOTATION
from hooks.equinix.devices import parse_provider_id, recorded_device_id

# MCM's finalizers (MCM: pkg/controller/controller.go DeleteFinalizerName; pkg/util/provider/machinecontroller/
# controller.go MCMFinalizerName, MCFinalizerName, NodeFinalizerName).
MCM_FINALIZER = "machine.sapcloud.io/machine-controller-manager"  # Machines, classes, MachineSets, -Deployments
MC_SECRET_FINALIZER = "machine.sapcloud.io/machine-controller"  # Secrets a class names
MCM_NODE_FINALIZER = "node.machine.sapcloud.io/machine-controller"  # Nodes with a Machine

# Metacontroller's finalizer of a DecoratorController is "metacontroller.io/decoratorcontroller-<name>"; the names
# are those in metacontroller/machines.yaml, machineclasses.yaml and credentials.yaml.
METACONTROLLER_PREFIX = "metacontroller.io/decoratorcontroller-"
HOOK_FINALIZERS = {
    "Machine": f"{METACONTROLLER_PREFIX}metal-machines",
    "MachineClass": f"{METACONTROLLER_PREFIX}metal-machineclasses",
    "Secret": f"{METACONTROLLER_PREFIX}metal-credentials",
}
MCM_FINALIZERS = {
    "Machine": MCM_FINALIZER,
    "MachineClass": MCM_FINALIZER,
    "MachineSet": MCM_FINALIZER,
    "MachineDeployment": MCM_FINALIZER,
    "Secret": MC_SECRET_FINALIZER,
    "Node": MCM_NODE_FINALIZER,
}
REFERENCE_KEYS = ("secretRef", "credentialsSecretRef")
MCM_DEPLOYMENT = "machine-controller-manager"

Obj = dict[str, Any]


@dataclass(frozen=True)
class Snapshot:
    """The namespace as read: objects by kind (Nodes by name), the Secrets the classes name (None: not found)."""

    namespace: str
    machines: Sequence[Obj] = ()
    classes: Sequence[Obj] = ()
    machinesets: Sequence[Obj] = ()
    deployments: Sequence[Obj] = ()
    secrets: Mapping[str, Obj | None] = field(default_factory=dict)
    nodes: Mapping[str, Obj] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    """One change to one object. `kind`/`name` say which; `what` is the line printed for it."""

    kind: str
    name: str
    what: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    remove_finalizers: tuple[str, ...] = ()
    provider_id: str = ""


@dataclass
class Plan:
    """The steps in the order they must happen, what is awaited before the finalizers go, and what needs a human."""

    label: list[Step] = field(default_factory=list)
    annotate: list[Step] = field(default_factory=list)
    awaiting: list[str] = field(default_factory=list)  # "Machine m-1 lacks metacontroller.io/..."
    release: list[Step] = field(default_factory=list)
    attention: list[str] = field(default_factory=list)


def meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    found = obj.get("metadata")
    return found if isinstance(found, dict) else {}


def name_of(obj: Mapping[str, Any]) -> str:
    return str(meta(obj).get("name") or "")


def finalizers(obj: Mapping[str, Any]) -> list[str]:
    return [f for f in meta(obj).get("finalizers") or () if isinstance(f, str)]


def deleting(obj: Mapping[str, Any]) -> bool:
    return bool(meta(obj).get("deletionTimestamp"))


# ---------------------------------------------------------------------------------------------------- MCM stopped


def mcm_verdict(deployment: Obj | None, status: int, *, stopped_elsewhere: bool, namespace: str,
                name: str = MCM_DEPLOYMENT) -> tuple[bool, str]:
    """(may proceed, why): MCM's Deployment scaled to zero with no pod left, or the explicit confirmation when the
    program cannot see it (`status` is the HTTP code of the read: 200, 404 or 403). A visible MCM that still runs
    is refused even with the confirmation."""
    where = f"Deployment {namespace}/{name}"
    if deployment is None:
        seen = "does not exist" if status == 404 else "cannot be read (forbidden)" if status == 403 else \
            f"cannot be read (HTTP {status})"
        if stopped_elsewhere:
            return True, f"MCM: {where} {seen}; you confirmed with --mcm-stopped-elsewhere that MCM no longer acts " \
                         f"on namespace {namespace}"
        return False, (f"MCM: {where} {seen}. If MCM runs elsewhere (another namespace or cluster), stop it (or "
                       f"remove {namespace} from what it watches) and run again with --mcm-stopped-elsewhere")
    spec = objects.mapping(deployment, "spec")
    status_obj = objects.mapping(deployment, "status")
    wanted = spec.get("replicas", 1)
    running = status_obj.get("replicas") or 0
    if wanted != 0:
        return False, (f"MCM: {where} wants {wanted} replica(s): MCM still acts on this namespace. Scale it to zero "
                       f"first (kubectl -n {namespace} scale deployment {name} --replicas=0); in a shoot that "
                       "Gardener manages, gardenlet scales it back up, see docs/migrating-from-mcm.md")
    if running:
        return False, f"MCM: {where} is scaled to zero but {running} pod(s) still run; run again once they are gone"
    return True, f"MCM: {where} is scaled to zero and no pod of it runs"


# ---------------------------------------------------------------------------------------------------- credentials


def secret_refs(machine_class: Mapping[str, Any], namespace: str) -> list[tuple[str, str, str]]:
    """(key, namespace, name) of each Secret the class names (an empty namespace means the class's own)."""
    found = []
    for key in REFERENCE_KEYS:
        ref = machine_class.get(key)
        if isinstance(ref, dict) and ref.get("name"):
            found.append((key, str(ref.get("namespace") or namespace), str(ref["name"])))
    return found


def used_secret_names(snapshot: Snapshot) -> dict[str, list[str]]:
    """Secret name → names of the classes that name it, for Secrets in the snapshot's namespace."""
    users: dict[str, list[str]] = {}
    for machine_class in snapshot.classes:
        for _, namespace, name in secret_refs(machine_class, snapshot.namespace):
            if namespace == snapshot.namespace:
                users.setdefault(name, []).append(name_of(machine_class))
    return {name: sorted(set(classes)) for name, classes in sorted(users.items())}


# ---------------------------------------------------------------------------------------------------- provider ids


def spec_provider_id(machine: Mapping[str, Any]) -> str:
    return objects.string(machine, "spec", "providerID")


# ---------------------------------------------------------------------------------------------------- migration


def _release(kind: str, obj: Obj, *, extra: str = "") -> Step | None:
    mcm = MCM_FINALIZERS[kind]
    if mcm not in finalizers(obj):
        return None
    return Step(kind, name_of(obj), f"{kind} {name_of(obj)}: remove MCM's finalizer {mcm}{extra}",
                remove_finalizers=(mcm,))


def plan_migration(snapshot: Snapshot) -> Plan:
    """Everything that remains to move the namespace over, from the current objects."""
    plan = Plan()
    used = _plan_credentials(snapshot, plan)
    _plan_provider_ids(snapshot, plan)
    held: list[tuple[str, Obj]] = [("Machine", m) for m in snapshot.machines]
    held += [("MachineClass", c) for c in snapshot.classes]
    held += [("Secret", s) for s in used]
    _plan_finalizers(held, plan)
    _plan_releases(snapshot, held, plan)
    return plan


def _plan_credentials(snapshot: Snapshot, plan: Plan) -> list[Obj]:
    """Secrets the classes name: labelled so the hooks can see them; references they cannot follow, named."""
    ns = snapshot.namespace
    for machine_class in snapshot.classes:
        for key, namespace, name in secret_refs(machine_class, ns):
            if namespace != ns:
                plan.attention.append(
                    f"MachineClass {name_of(machine_class)}: {key} names Secret {namespace}/{name} outside namespace "
                    f"{ns}; the hooks read credentials only from the Machines' namespace: copy it into {ns} (with "
                    f"the label {CREDENTIALS_LABEL}: \"{CREDENTIALS_LABEL_VALUE}\") and point the class at the copy")
    used: list[Obj] = []
    for name, classes in used_secret_names(snapshot).items():
        secret = snapshot.secrets.get(name)
        if secret is None:
            plan.attention.append(f"Secret {name}, named by MachineClass {', '.join(classes)}, does not exist in "
                                  f"{ns}: those classes cannot reach the Metal API")
            continue
        used.append(secret)
        labels = meta(secret).get("labels") or {}
        if labels.get(CREDENTIALS_LABEL) != CREDENTIALS_LABEL_VALUE:
            plan.label.append(Step("Secret", name, f"Secret {name}: add label {CREDENTIALS_LABEL}="
                                                   f"{CREDENTIALS_LABEL_VALUE} (used by MachineClass "
                                                   f"{', '.join(classes)})",
                                   labels={CREDENTIALS_LABEL: CREDENTIALS_LABEL_VALUE}))
    return used


def _plan_provider_ids(snapshot: Snapshot, plan: Plan) -> None:
    for machine in snapshot.machines:
        provider_id = spec_provider_id(machine)
        annotations = meta(machine).get("annotations") or {}
        if provider_id and not annotations.get(PROVIDER_ID_ANNOTATION) and not deleting(machine):
            plan.annotate.append(Step("Machine", name_of(machine), f"Machine {name_of(machine)}: record "
                                                                   f"{provider_id} in annotation "
                                                                   f"{PROVIDER_ID_ANNOTATION} (kubectl -o wide)",
                                      annotations={PROVIDER_ID_ANNOTATION: provider_id}))


def _plan_finalizers(held: list[tuple[str, Obj]], plan: Plan) -> None:
    """What still waits for Metacontroller's finalizers (the program waits for these before releasing MCM's)."""
    for kind, obj in held:
        hook_finalizer = HOOK_FINALIZERS[kind]
        if hook_finalizer in finalizers(obj):
            continue
        if deleting(obj):
            if MCM_FINALIZERS[kind] in finalizers(obj):
                plan.attention.append(
                    f"{kind} {name_of(obj)} was being deleted when MCM stopped and only MCM's finalizer holds it; "
                    f"Metacontroller cannot add its finalizer to a deleting object, so it stays MCM's: let MCM finish "
                    f"it (scale MCM up until it is gone, then down again) and run this program again")
            continue
        plan.awaiting.append(f"{kind} {name_of(obj)} lacks {hook_finalizer}")


def _plan_releases(snapshot: Snapshot, held: list[tuple[str, Obj]], plan: Plan) -> None:
    """MCM's finalizers to remove: listed now, done only once nothing awaits Metacontroller (the program plans
    again after the wait)."""
    candidates = [(kind, obj) for kind, obj in held if HOOK_FINALIZERS[kind] in finalizers(obj) or not deleting(obj)]
    candidates += [("MachineSet", obj) for obj in snapshot.machinesets]
    candidates += [("MachineDeployment", obj) for obj in snapshot.deployments]
    node_names = sorted({str((meta(m).get("labels") or {}).get("node")) for m in snapshot.machines
                         if (meta(m).get("labels") or {}).get("node")})
    candidates += [("Node", snapshot.nodes[n]) for n in node_names if snapshot.nodes.get(n) is not None]
    for kind, obj in candidates:
        step = _release(kind, obj)
        if step:
            plan.release.append(step)


# ---------------------------------------------------------------------------------------------------- rollback


def plan_rollback(snapshot: Snapshot) -> Plan:
    """Back to MCM: write spec.providerID from the hooks' annotations (MCM's orphan collection deletes every device
    with the class tags that no Machine's spec.providerID names, and MCM creates a server for a Machine without
    one), and remove the hooks' finalizers, which nothing removes once their controllers are gone."""
    plan = Plan()
    for machine in snapshot.machines:
        annotations = meta(machine).get("annotations") or {}
        annotated = annotations.get(PROVIDER_ID_ANNOTATION)
        device_id = recorded_device_id(machine)
        if not spec_provider_id(machine):
            if parse_provider_id(annotated):
                plan.annotate.append(Step("Machine", name_of(machine), f"Machine {name_of(machine)}: write "
                                                                       f"spec.providerID {annotated}",
                                          provider_id=str(annotated)))
            elif device_id:
                plan.attention.append(
                    f"Machine {name_of(machine)} records device {device_id} but no provider ID to write back: set "
                    f"spec.providerID to equinixmetal://<metro>/{device_id} before MCM runs, or MCM creates a second "
                    "server and collects this one as an orphan")
    used = used_secret_names(snapshot)
    objs: list[tuple[str, Obj]] = [("Machine", m) for m in snapshot.machines]
    objs += [("MachineClass", c) for c in snapshot.classes]
    objs += [("Secret", s) for n, s in snapshot.secrets.items() if s is not None and n in used]
    for kind, obj in objs:
        hook_finalizer = HOOK_FINALIZERS[kind]
        if hook_finalizer in finalizers(obj):
            plan.release.append(Step(kind, name_of(obj), f"{kind} {name_of(obj)}: remove the hooks' finalizer "
                                                         f"{hook_finalizer}", remove_finalizers=(hook_finalizer,)))
    return plan


# ---------------------------------------------------------------------------------------------------- patches


def json_patch(obj: Obj, step: Step) -> list[Obj]:
    """The JSON patch (RFC 6902) for `step` against `obj` as read: first a test of its resourceVersion, so a change
    made since the read fails the patch instead of being overwritten."""
    version = meta(obj).get("resourceVersion")
    ops: list[Obj] = [{"op": "test", "path": "/metadata/resourceVersion", "value": version}]
    if step.labels:
        ops.append({"op": "add", "path": "/metadata/labels",
                    "value": {**(meta(obj).get("labels") or {}), **step.labels}})
    if step.annotations:
        ops.append({"op": "add", "path": "/metadata/annotations",
                    "value": {**(meta(obj).get("annotations") or {}), **step.annotations}})
    if step.remove_finalizers:
        ops.append({"op": "add", "path": "/metadata/finalizers",
                    "value": [f for f in finalizers(obj) if f not in step.remove_finalizers]})
    if step.provider_id:
        ops.append({"op": "add", "path": "/spec/providerID", "value": step.provider_id})
    return ops


def safe_to_release(obj: Obj, step: Step) -> bool:
    """Whether MCM's finalizer may go from `obj` as read now: a Machine, class or Secret must already carry
    Metacontroller's, so that it is never without a holder."""
    hook_finalizer = HOOK_FINALIZERS.get(step.kind)
    removes_mcm = any(f == MCM_FINALIZERS.get(step.kind) for f in step.remove_finalizers)
    return not (removes_mcm and hook_finalizer and hook_finalizer not in finalizers(obj))


def still_needed(obj: Obj, step: Step) -> bool:
    """Whether `step` still changes `obj` (a re-run, or another writer, may have done it already)."""
    labels = meta(obj).get("labels") or {}
    annotations = meta(obj).get("annotations") or {}
    return (any(labels.get(k) != v for k, v in step.labels.items())
            or any(not annotations.get(k) for k in step.annotations)
            or any(f in finalizers(obj) for f in step.remove_finalizers)
            or (bool(step.provider_id) and not spec_provider_id(obj)))


def describe(plan: Plan, *, rollback: bool = False) -> Iterable[str]:
    """The plan as the lines the program prints."""
    sections: tuple[tuple[str, list[str]], ...]
    if rollback:
        sections = (("Write spec.providerID back (else MCM duplicates servers)", [s.what for s in plan.annotate]),
                    ("Remove the hooks' finalizers", [s.what for s in plan.release]))
    else:
        sections = (("Label the credentials Secrets the classes use", [s.what for s in plan.label]),
                    ("Record MCM's provider IDs where kubectl shows them", [s.what for s in plan.annotate]),
                    ("Wait for Metacontroller's finalizers", plan.awaiting),
                    ("Remove MCM's finalizers", [s.what for s in plan.release]))
    for number, (title, lines) in enumerate(sections, 1):
        yield f"{number}. {title}: {'nothing to do' if not lines else len(lines)}"
        for line in lines:
            yield f"   - {line}"
