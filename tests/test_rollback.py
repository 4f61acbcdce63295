"""`spec.rollbackTo` and the revision annotations of MachineSets.

Mirrors MCM's `rollback` and `rollbackToTemplate` (gardener/machine-controller-manager,
pkg/controller/deployment_rollback.go) and Kubernetes' `SetNewReplicaSetAnnotations` (revision, revision-history),
which MCM's deployment_util.go copies. A hook cannot write spec, so the rollback is applied once and recorded in the
RollbackApplied condition (hooks/mcm/rollback.py).
"""

from __future__ import annotations

import copy
from typing import Any

from hooks.mcm import machinedeployment as md
from hooks.mcm import rollback
from tests.crd_schema import status_problems
from tests.test_machinedeployment import NOW, OLD, by_name, ctx, new_name, request

KEY = "MachineSet.machine.sapcloud.io/v1alpha1"


def rolled_out() -> dict[str, Any]:
    """Revision 1 (metal-small, scaled to 0) and revision 2 (metal-large, 3 Machines, all available)."""
    body = request()
    created = by_name(md.sync(copy.deepcopy(body), ctx()))[new_name(body)]
    sets = body["children"][KEY]
    old = next(iter(sets.values()))
    old["spec"]["replicas"] = 0
    old["status"] = {"replicas": 0, "availableReplicas": 0, "readyReplicas": 0}
    created["spec"]["replicas"] = 3
    created["metadata"].update(uid="uid-new", creationTimestamp="2026-11-25T09:30:00Z")
    created["metadata"]["annotations"][md.DESIRED] = "3"
    created["status"] = {"replicas": 3, "availableReplicas": 3, "readyReplicas": 3, "fullyLabeledReplicas": 3}
    sets[f"{created['metadata']['namespace']}/{created['metadata']['name']}"] = created
    body["parent"]["metadata"]["generation"] = 2
    return body


def applied(response: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in response["status"]["conditions"] if c["type"] == rollback.CONDITION)


def test_rollback_to_revision_scales_the_old_set_up_and_gives_it_the_next_revision() -> None:
    body = rolled_out()
    body["parent"]["spec"]["rollbackTo"] = {"revision": 1}
    response = md.sync(body, ctx())
    old = by_name(response)[OLD]
    assert old["spec"]["replicas"] == 1  # maxSurge 1: the rollout to the old template has begun
    assert old["metadata"]["annotations"][md.REVISION] == "3"
    assert old["metadata"]["annotations"][rollback.REVISION_HISTORY] == "1"
    assert old["spec"]["template"]["spec"]["class"]["name"] == "metal-small"
    cond = applied(response)
    assert (cond["status"], cond["reason"]) == ("True", "DeploymentRollback")
    assert cond["message"].startswith("Rolled back deployment pool-a to revision 1")
    assert status_problems(response["status"], "MachineDeployment") == []


def test_rollback_is_applied_once_per_request_and_kept_across_generations() -> None:
    body = rolled_out()
    body["parent"]["spec"]["rollbackTo"] = {"revision": 1}
    first = md.sync(copy.deepcopy(body), ctx())
    # The status is written back, the old set took revision 3, and the user scales (a new generation).
    body["parent"]["status"] = first["status"]
    old_key = next(k for k in body["children"][KEY] if k.endswith(OLD))
    body["children"][KEY][old_key]["metadata"]["annotations"] = by_name(first)[OLD]["metadata"]["annotations"]
    body["children"][KEY][old_key]["spec"]["replicas"] = 1
    body["parent"]["metadata"]["generation"] = 3
    body["parent"]["spec"]["replicas"] = 4
    later = md.sync(copy.deepcopy(body), ctx(NOW))
    assert applied(later) == applied(first)  # not applied again: revision 1 is now revision 3, nothing to find
    assert by_name(later)[OLD]["spec"]["replicas"] >= 1  # still rolling towards metal-small
    # The user edits the template: spec.template wins, the same rollbackTo is not applied again.
    body["parent"]["spec"]["template"]["spec"]["class"]["name"] = "metal-xl"
    body["parent"]["spec"]["replicas"] = 3  # a template change alone (a resize only scales)
    edited = md.sync(copy.deepcopy(body), ctx(NOW))
    assert any(c["spec"]["template"]["spec"]["class"]["name"] == "metal-xl" for c in edited["children"])


def test_rollback_to_a_missing_revision_changes_nothing_and_says_so() -> None:
    body = rolled_out()
    body["parent"]["spec"]["rollbackTo"] = {"revision": 7}
    plain = rolled_out()
    response = md.sync(body, ctx())
    assert response["children"] == md.sync(plain, ctx())["children"]
    cond = applied(response)
    assert cond["reason"] == "DeploymentRollbackRevisionNotFound"
    assert cond["message"].startswith("Unable to find the revision to rollback to.")


def test_rollback_to_revision_0_means_the_last_revision() -> None:
    body = rolled_out()
    body["parent"]["spec"]["rollbackTo"] = {"revision": 0}
    response = md.sync(body, ctx())
    assert by_name(response)[OLD]["metadata"]["annotations"][md.REVISION] == "3"
    assert applied(response)["reason"] == "DeploymentRollback"


def test_without_rollback_to_no_condition_is_written() -> None:
    response = md.sync(rolled_out(), ctx())
    assert all(c["type"] != rollback.CONDITION for c in response["status"]["conditions"])


def test_get_new_machine_set_revision_is_written_on_the_deployment() -> None:
    """Mirrors MCM's getNewMachineSet (deployment_sync.go): the deployment carries its newest set's revision."""
    from hooks.mcm import deployment_revision

    body = rolled_out()
    deployment = body["parent"]
    sets = copy.deepcopy(body["children"][KEY])
    for ms in sets.values():
        ms["metadata"]["ownerReferences"] = [{"apiVersion": "machine.sapcloud.io/v1alpha1", "kind":
                                              "MachineDeployment", "name": "pool-a",
                                              "uid": deployment["metadata"]["uid"], "controller": True}]
    foreign = copy.deepcopy(next(iter(sets.values())))
    foreign["metadata"].update(name="other", ownerReferences=[])
    foreign["metadata"]["annotations"][md.REVISION] = "9"
    sets["ns/other"] = foreign
    answer = deployment_revision.sync({"object": deployment, "attachments": {}, "related": {KEY: sets}}, ctx())
    assert answer["annotations"] == {md.REVISION: "2"}
    assert answer["status"] is None  # the composite hook owns the status
    rules = deployment_revision.customize({"parent": deployment}, ctx())["relatedResources"]
    assert rules == [{"apiVersion": "machine.sapcloud.io/v1alpha1", "resource": "machinesets",
                      "namespace": deployment["metadata"]["namespace"],
                      "labelSelector": deployment["spec"]["selector"]}]
