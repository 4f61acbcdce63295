"""The Node carries its Machine: nodeTemplate with MCM's last-applied bookkeeping, Terminating, removal (issue 16)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from emulator.patches import merge_patch
from hooks.driver import Address, Device, DeviceState
from hooks.mcm import node_jobs
from hooks.mcm.node_side import (
    LAST_APPLIED_ANNOTATION,
    MACHINE_NAME_LABEL,
    NodeTemplate,
    last_applied_json,
    node_template_patch,
    plan_node_removal,
    plan_node_sync,
    plan_node_terminating,
    recorded_device,
    terminating_condition,
)

DEVICE = Device("d-1", "equinixmetal://da/d-1", DeviceState.ACTIVE, addresses=(Address("147.75.1.2", "ExternalIP"),))
NOW = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
SETTINGS = node_jobs.NodeJobSettings()


def node(labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None,
         taints: list[dict[str, Any]] | None = None, *, provider_id: str = "equinixmetal://da/d-1") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "m-1", "uid": "n-uid", "resourceVersion": "7", "labels": labels or {},
                         "annotations": annotations or {}},
            "spec": {"providerID": provider_id, **({"taints": taints} if taints is not None else {})},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}


def template(labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None,
             taints: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    if labels:
        meta["labels"] = labels
    if annotations:
        meta["annotations"] = annotations
    return {"metadata": meta, "spec": {"taints": taints} if taints else {}}


def machine(tmpl: dict[str, Any] | None = None, phase: str = "Running") -> dict[str, Any]:
    return {"metadata": {"name": "m-1", "namespace": "shoot", "uid": "m-uid", "labels": {"node": "m-1"}},
            "spec": {"providerID": "equinixmetal://da/d-1", "nodeTemplate": tmpl or {}},
            "status": {"currentStatus": {"phase": phase}}}


def applied(n: dict[str, Any], tmpl: dict[str, Any]) -> dict[str, Any]:
    """The Node after the patch, as the API server would store it."""
    patch = node_template_patch(n, NodeTemplate.of(tmpl), "m-1")
    return n if patch is None else merge_patch(n, patch)


NO_SCHEDULE = {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}


def test_last_applied_is_what_mcm_writes() -> None:
    """json.Marshal(NodeTemplateSpec): Go's field order, sorted map keys, creationTimestamp null, HTML escapes."""
    tmpl = NodeTemplate.of(template({"b": "2", "a": "1"}, {"note": "<x & y>"}, [NO_SCHEDULE]))
    assert last_applied_json(tmpl) == (
        '{"metadata":{"creationTimestamp":null,"labels":{"a":"1","b":"2"},'
        '"annotations":{"note":"\\u003cx \\u0026 y\\u003e"}},'
        '"spec":{"taints":[{"key":"dedicated","value":"gpu","effect":"NoSchedule"}]}}')
    assert last_applied_json(NodeTemplate.of({})) == '{"metadata":{"creationTimestamp":null},"spec":{}}'
    assert last_applied_json(NodeTemplate.of(template(taints=[{"key": "k", "effect": "NoExecute"}]))) == \
        '{"metadata":{"creationTimestamp":null},"spec":{"taints":[{"key":"k","effect":"NoExecute"}]}}'


@pytest.mark.parametrize(
    ("start", "tmpl", "labels", "annotations", "taints"),
    [
        pytest.param(node(), template({"role": "gpu"}, {"team": "a"}, [NO_SCHEDULE]),
                     {"role": "gpu"}, {"team": "a"}, [NO_SCHEDULE], id="first-apply"),
        pytest.param(node({"kubernetes.io/hostname": "m-1"}, {"kubeadm": "x"},
                          [{"key": "kubelet", "effect": "NoSchedule"}]),
                     template({"role": "gpu"}), {"kubernetes.io/hostname": "m-1", "role": "gpu"}, {"kubeadm": "x"},
                     [{"key": "kubelet", "effect": "NoSchedule"}], id="foreign-keys-untouched"),
        pytest.param(node({"role": "cpu"}), template({"role": "gpu"}), {"role": "gpu"}, {}, [],
                     id="value-changed"),
    ],
)
def test_template_applied_to_a_node(start: dict[str, Any], tmpl: dict[str, Any], labels: dict[str, str],
                                    annotations: dict[str, str], taints: list[dict[str, Any]]) -> None:
    result = applied(start, tmpl)
    assert result["metadata"]["labels"] == {**labels, MACHINE_NAME_LABEL: "m-1"}
    got = dict(result["metadata"]["annotations"])
    assert json.loads(got.pop(LAST_APPLIED_ANNOTATION))["metadata"].get("labels", {}) == (tmpl["metadata"].get("labels")
                                                                                         or {})
    assert got == annotations
    assert result["spec"].get("taints", []) == taints
    assert node_template_patch(result, NodeTemplate.of(tmpl), "m-1") is None  # applied once, stable after


def test_removed_template_entries_are_removed_and_others_kept() -> None:
    first = template({"role": "gpu", "tier": "1"}, {"team": "a"},
                     [NO_SCHEDULE, {"key": "spot", "effect": "NoExecute"}])
    on_node = applied(node({"kubernetes.io/hostname": "m-1"}, {"kubeadm": "x"},
                           [{"key": "kubelet", "effect": "NoSchedule"}]), first)
    second = template({"role": "cpu"}, None, [{"key": "dedicated", "value": "cpu", "effect": "NoSchedule"}])
    result = applied(on_node, second)
    assert result["metadata"]["labels"] == {"kubernetes.io/hostname": "m-1", "role": "cpu", MACHINE_NAME_LABEL: "m-1"}
    assert set(result["metadata"]["annotations"]) == {"kubeadm", LAST_APPLIED_ANNOTATION}
    assert result["spec"]["taints"] == [{"key": "kubelet", "effect": "NoSchedule"},
                                        {"key": "dedicated", "value": "cpu", "effect": "NoSchedule"}]
    assert result["metadata"]["annotations"][LAST_APPLIED_ANNOTATION] == last_applied_json(NodeTemplate.of(second))


def test_a_key_set_by_someone_else_is_not_removed_when_it_was_never_applied() -> None:
    # The Node has role=x from its kubelet; the template never had it, so an empty template leaves it alone.
    result = applied(node({"role": "x"}), template())
    assert result["metadata"]["labels"] == {"role": "x", MACHINE_NAME_LABEL: "m-1"}


def test_unreadable_bookkeeping_removes_nothing() -> None:
    start = node({"role": "gpu"}, {LAST_APPLIED_ANNOTATION: "{not json"})
    result = applied(start, template())
    assert result["metadata"]["labels"]["role"] == "gpu"
    assert result["metadata"]["annotations"][LAST_APPLIED_ANNOTATION] == last_applied_json(NodeTemplate.of({}))


def test_a_no_execute_taint_stamped_by_the_api_server_is_not_rewritten() -> None:
    tmpl = template(taints=[{"key": "spot", "effect": "NoExecute"}])
    on_node = applied(node(), tmpl)
    on_node["spec"]["taints"][0]["timeAdded"] = "2026-12-03T10:00:01Z"  # the API server's stamp
    assert node_template_patch(on_node, NodeTemplate.of(tmpl), "m-1") is None


def test_the_patch_pins_the_resource_version() -> None:
    patch = node_template_patch(node(), NodeTemplate.of(template({"a": "1"})), "m-1")
    assert patch is not None and patch["metadata"]["resourceVersion"] == "7"
    assert "spec" not in patch  # taints unchanged: the list is not rewritten


def test_terminating_condition_is_mcms() -> None:
    scale_down = terminating_condition(node(), "Running", NOW)
    assert (scale_down["type"], scale_down["status"], scale_down["reason"], scale_down["message"]) == (
        "Terminating", "True", "ScaleDown", "Machine Controller is scaling down machine")
    failed = terminating_condition(node(), "Failed", NOW)
    assert (failed["reason"], failed["message"]) == ("Unhealthy", "Machine Controller is terminating failed machine")
    already = node()
    already["status"]["conditions"].append(failed)
    kept = terminating_condition(already, "Terminating", NOW)
    assert (kept["reason"], kept["message"]) == ("Unhealthy", "Machine Controller is terminating failed machine")


def _jobs(*jobs: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {node_jobs.JOB_KEY: {f"shoot/{j['metadata']['name']}": {**j, "status": status or {}} for j in jobs}}


COMPLETE = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}


def test_node_sync_job_follows_the_template_and_stops_once_applied() -> None:
    tmpl = template({"role": "gpu"})
    step = plan_node_sync(machine(tmpl), node(), DEVICE, {}, SETTINGS)
    (job,) = step.attachments
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:3] == ["node", "sync", "m-1"] and "--device-id" in args and "147.75.1.2" in args
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "metal-machine-node"
    # Still needed while the Job runs; a template change is another Job (the old one is left out, so deleted).
    assert plan_node_sync(machine(tmpl), node(), DEVICE, _jobs(job), SETTINGS).attachments == [job]
    changed = plan_node_sync(machine(template({"role": "cpu"})), node(), DEVICE, _jobs(job), SETTINGS)
    assert [j["metadata"]["name"] for j in changed.attachments] != [job["metadata"]["name"]]
    # Once the Node carries the template nothing is declared.
    assert plan_node_sync(machine(tmpl), applied(node(), tmpl), DEVICE, _jobs(job, status=COMPLETE),
                          SETTINGS).attachments == []


def test_no_node_side_job_for_a_node_that_is_not_the_devices() -> None:
    stranger = node(provider_id="equinixmetal://da/someone-else")
    assert plan_node_sync(machine(template({"a": "1"})), stranger, DEVICE, {}, SETTINGS).attachments == []
    assert plan_node_terminating(machine(), stranger, DEVICE, {}, SETTINGS).attachments == []
    step = plan_node_removal(machine(), stranger, DEVICE, {}, SETTINGS)
    assert step.done and step.attachments == [] and "is not provably this machine's" in step.description


def test_terminating_job_keeps_the_phase_it_was_declared_with() -> None:
    (job,) = plan_node_terminating(machine(phase="Failed"), node(), DEVICE, {}, SETTINGS).attachments
    assert "--machine-phase" in (args := job["spec"]["template"]["spec"]["containers"][0]["args"])
    assert args[args.index("--machine-phase") + 1] == "Failed"
    # The next call sees phase Terminating (the hook wrote it): the same Job is declared again.
    again = plan_node_terminating(machine(phase="Terminating"), node(), DEVICE, _jobs(job), SETTINGS)
    assert again.attachments == [job]
    assert plan_node_terminating(machine(phase=""), node(), DEVICE, {}, SETTINGS).attachments == []


def test_node_removal_with_mcms_texts() -> None:
    device = recorded_device(machine())
    assert device is not None and device.id == "d-1"
    gone = plan_node_removal(machine(), None, device, {}, SETTINGS)
    assert gone.done and gone.description == ('No node object found for "m-1", continuing deletion flow. '
                                              "Initiate machine object finalizer removal")
    unlabelled = machine()
    unlabelled["metadata"]["labels"] = {}
    assert plan_node_removal(unlabelled, None, device, {}, SETTINGS).description == (
        'Label "node" not present on machine "m-1", continuing deletion flow. '
        "Initiate machine object finalizer removal")
    step = plan_node_removal(machine(), node(), device, {}, SETTINGS)
    (job,) = step.attachments
    assert not step.done and step.description == "VM deletion was successful. Initiate node object deletion"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "node", "remove", "m-1", "--device-id", "d-1", "--provider-id", "equinixmetal://da/d-1"]
    done = plan_node_removal(machine(), None, device, _jobs(job, status=COMPLETE), SETTINGS)
    assert done.done and done.attachments == [job]
    assert done.description == ('Deletion of Node Object "m-1" is successful. '
                                "Initiate machine object finalizer removal")
    failed = plan_node_removal(machine(), node(), device, _jobs(job, status={
        "failed": 4, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}), SETTINGS)
    assert not failed.done and failed.state == "Failed"
    assert failed.description.startswith('Deletion of Node Object "m-1" failed due to error: job m-1-node-remove')
    assert failed.description.endswith("Initiate node object deletion")
    assert failed.attachments[0]["metadata"]["name"] == "m-1-node-remove-2"


def test_recorded_device_needs_a_matching_provider_id() -> None:
    assert recorded_device({"spec": {}}) is None
    annotated = {"metadata": {"annotations": {"metal-machine-hooks/device-id": "d-2",
                                              "metal-machine-hooks/provider-id": "equinixmetal://sv/d-2"}}}
    assert recorded_device(annotated) == Device("d-2", "equinixmetal://sv/d-2", DeviceState.GONE)
    annotated["metadata"]["annotations"]["metal-machine-hooks/device-id"] = "d-3"
    assert recorded_device(annotated) is None
