"""Whether a MachineSet's controlling MachineDeployment still wants Machines: the set side of owner deletion.

Deleting a MachineDeployment deletes its MachineSets and their Machines through the garbage collector, and every
controller sees those deletions through its own informer, some later than others. A MachineSet sync that sees its
Machines gone but not yet its own (or its owner's) deletion would create replacements, and a replacement can get
its finalizer and a server before the collector reaches it. MCM reads the set with an uncached GET before it
scales; a hook cannot, so the MachineSet controller relates the owner (customize hook, by name in the set's
namespace) and the sync creates nothing while that owner is being deleted, is gone, or was replaced by another
object of the same name (another uid: not this set's owner).

Metacontroller sends `related` only when the controller has a customize hook, and an owner that is not found is
then simply absent. So the owner rule applies only when the request's `controller` has a customize hook: a set
controller configured without one (an older manifest, a hand-written request) behaves as before.
"""

from __future__ import annotations

from typing import Any

from hooks import objects
from hooks.mcm import vocabulary as mcm

DEPLOYMENT_KIND = "MachineDeployment"


def controller_owner(machine_set: Any) -> dict[str, Any] | None:
    """The set's controlling ownerReference when it is a MachineDeployment of our API group, else None."""
    for ref in objects.mappings(machine_set, "metadata", "ownerReferences"):
        if ref.get("controller") is True:
            if ref.get("kind") == DEPLOYMENT_KIND and ref.get("apiVersion") == mcm.API_VERSION and ref.get("name"):
                return ref
            return None
    return None


def related_rules(machine_set: Any) -> list[dict[str, Any]]:
    """The customize hook's relatedResources: the controlling MachineDeployment, by name, in the set's namespace."""
    owner = controller_owner(machine_set)
    if owner is None:
        return []
    return [{"apiVersion": mcm.API_VERSION, "resource": "machinedeployments",
             "namespace": objects.namespace(machine_set), "names": [str(owner["name"])]}]


def relates_owner(body: Any) -> bool:
    """Whether this request comes from a controller whose customize hook relates the owner (see the docstring)."""
    return bool(objects.mapping(body, "controller", "spec", "hooks", "customize"))


def owner_problem(machine_set: Any, body: Any) -> str | None:
    """Why the set must not create Machines because of its owner, or None (no owner, or an owner that is alive)."""
    ref = controller_owner(machine_set)
    if ref is None or not relates_owner(body):
        return None
    name = str(ref["name"])
    related = objects.children(body, "related", mcm.MACHINEDEPLOYMENT_KEY).values()
    owner = next((d for d in related if objects.name(d) == name
                  and objects.namespace(d) == objects.namespace(machine_set)), None)
    if owner is None:
        return f"its MachineDeployment {name} is gone"
    if ref.get("uid") and objects.uid(owner) and objects.uid(owner) != ref.get("uid"):
        return f"its MachineDeployment {name} is gone (the one of that name now is another object)"
    if objects.meta(owner).get("deletionTimestamp"):
        return f"its MachineDeployment {name} is being deleted"
    return None
