"""The drain step of Machine deletion: when finalize declares the drain Job, waits, retries, forces or moves on."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from hooks.config import ConfigError, Settings
from hooks.mcm.drain import (
    JOB_KEY,
    MAX_NAME,
    NODE_ANNOTATION,
    PREVIOUS_ERROR_ANNOTATION,
    DrainSettings,
    build_job,
    job_name,
    plan_drain,
)

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
NS = "shoot--p--c"
MACHINE = "pool-a-5d8f9-x2k7q"
NODE = "pool-a-5d8f9-x2k7q"
SETTINGS = DrainSettings(image="registry.example/hooks:1.2.3", service_account="drainer", timeout=7200.0)
K8S_VERSION = "1.33"


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def machine(
    *,
    deleted_ago: timedelta = timedelta(minutes=1),
    labels: dict[str, str] | None = None,
    phase: str = "Terminating",
    spec: dict[str, Any] | None = None,
    last_operation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "machine.sapcloud.io/v1alpha1",
        "kind": "Machine",
        "metadata": {
            "name": MACHINE,
            "namespace": NS,
            "uid": "0c6f2a1e-7d1b-4f5e-9a8b-1c2d3e4f5a6b",
            "labels": {"node": NODE, "name": "pool-a"} if labels is None else labels,
            "deletionTimestamp": iso(NOW - deleted_ago),
            "finalizers": ["metacontroller.io/decoratorcontroller-metal-machines"],
        },
        "spec": {"class": {"kind": "MachineClass", "name": "small"}, **(spec or {})},
        "status": {
            "currentStatus": {"phase": phase, "lastUpdateTime": iso(NOW - timedelta(hours=3))},
            "lastOperation": last_operation
            or {
                "description": "Set machine status to termination. Now, getting VM Status",
                "state": "Processing",
                "type": "Delete",
                "lastUpdateTime": iso(NOW - deleted_ago),
            },
        },
    }


def node(
    ready: str = "True",
    since: timedelta = timedelta(days=1),
    readonly: str = "False",
    readonly_since: timedelta = timedelta(days=1),
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE}},
        "spec": {"providerID": "equinixmetal://ny/9e2b"},
        "status": {
            "conditions": [
                {"type": "ReadonlyFilesystem", "status": readonly, "lastTransitionTime": iso(NOW - readonly_since)},
                {"type": "Ready", "status": ready, "lastTransitionTime": iso(NOW - since)},
            ]
        },
    }


def observed(job: dict[str, Any], **status: Any) -> dict[str, Any]:
    """The Job as Metacontroller hands it back: server fields, its own annotation, ownerRef and a status."""
    seen = copy.deepcopy(job)
    meta = seen["metadata"]
    meta.update(uid="7d2a-job", resourceVersion="4242", creationTimestamp=iso(NOW - timedelta(seconds=50)))
    meta["annotations"]["metacontroller.k8s.io/decorator-controller"] = "metal-machines"
    meta["ownerReferences"] = [
        {
            "apiVersion": "machine.sapcloud.io/v1alpha1",
            "kind": "Machine",
            "name": MACHINE,
            "uid": "0c6f2a1e-7d1b-4f5e-9a8b-1c2d3e4f5a6b",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    seen["spec"]["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": "7d2a-job"}}
    seen["status"] = status
    return seen


def attachments(*jobs: dict[str, Any]) -> dict[str, Any]:
    return {JOB_KEY: {f"{j['metadata']['namespace']}/{j['metadata']['name']}": j for j in jobs}}


def first_job(m: dict[str, Any] | None = None) -> dict[str, Any]:
    step = plan_drain(m or machine(), node(), attachments(), SETTINGS, NOW)
    assert len(step.attachments) == 1
    return step.attachments[0]


COMPLETE = {"type": "Complete", "status": "True", "reason": "CompletionsReached"}
FAILED = {
    "type": "Failed",
    "status": "True",
    "reason": "BackoffLimitExceeded",
    "message": "Job has reached the specified backoff limit",
}


# --- starting and waiting -------------------------------------------------------------------------------------------


def test_ready_node_gets_a_drain_job_and_the_device_waits() -> None:
    step = plan_drain(machine(), node(), attachments(), SETTINGS, NOW)
    assert not step.ready_to_delete_device
    assert (step.description, step.state, step.forced, step.reason) == (
        "Initiate node drain",
        "Processing",
        False,
        "draining",
    )
    [job] = step.attachments
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    assert job["metadata"]["name"] == f"{MACHINE}-drain"
    assert job["metadata"]["namespace"] == NS
    assert job["metadata"]["annotations"][NODE_ANNOTATION] == NODE
    assert 1.0 <= step.resync_after <= 30.0


def test_drain_job_is_a_valid_least_privilege_job() -> None:
    job = first_job()
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    spec = job["spec"]
    assert "ttlSecondsAfterFinished" not in spec  # the decorator must still see it finished
    assert spec["backoffLimit"] >= 1
    assert spec["activeDeadlineSeconds"] == 7200 + 60
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "drainer"
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    [container] = pod["containers"]
    assert container["image"] == "registry.example/hooks:1.2.3"
    assert container["command"] == ["python", "-m", "drain"]
    assert container["args"][0] == NODE
    assert container["args"][container["args"].index("--deadline") + 1] == iso(
        NOW - timedelta(minutes=1) + timedelta(hours=2)
    )
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    # It must not be scheduled onto the Node it is draining.
    term = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
    assert term["matchFields"] == [{"key": "metadata.name", "operator": "NotIn", "values": [NODE]}]


def test_running_job_is_declared_again_unchanged_so_metacontroller_keeps_it() -> None:
    job = first_job()
    running = observed(job, active=1, startTime=iso(NOW - timedelta(seconds=40)))
    step = plan_drain(machine(), node(), attachments(running), SETTINGS, NOW)
    assert not step.ready_to_delete_device
    assert step.description == "Initiate node drain"
    assert step.attachments == [job]


def test_same_observation_gives_the_same_answer_and_the_job_does_not_move_with_the_clock() -> None:
    m, n = machine(), node()
    first = plan_drain(m, n, attachments(), SETTINGS, NOW)
    again = plan_drain(copy.deepcopy(m), copy.deepcopy(n), attachments(), SETTINGS, NOW)
    later = plan_drain(m, n, attachments(), SETTINGS, NOW + timedelta(seconds=17))
    assert first == again
    assert later.attachments == first.attachments
    assert json.dumps(first.attachments, sort_keys=True) == json.dumps(later.attachments, sort_keys=True)


# --- finishing ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status",
    [{"succeeded": 1, "conditions": [COMPLETE]}, {"succeeded": 1}, {"conditions": [COMPLETE]}],
    ids=["both", "counter", "condition"],
)
def test_succeeded_job_lets_the_device_go(status: dict[str, Any]) -> None:
    job = first_job()
    step = plan_drain(machine(), node(), attachments(observed(job, **status)), SETTINGS, NOW)
    assert step.ready_to_delete_device
    assert not step.forced
    assert (step.description, step.state) == ("Drain successful. Initiate VM deletion", "Processing")
    assert step.attachments == [job]  # still declared: dropping it would delete it before the Machine is gone
    assert step.announce  # first shown on the Machine...
    m = machine(last_operation={"description": step.description, "state": "Processing", "type": "Delete"})
    shown = plan_drain(m, node(), attachments(observed(job, **status)), SETTINGS, NOW)
    assert shown.ready_to_delete_device and not shown.announce  # ...then the device goes
    assert shown.attachments == [job]


@pytest.mark.parametrize(
    "description",
    [
        "VM deletion was successful. Initiate node object deletion",
        "Initiate VM deletion: waiting for device(s) 9e2b to be deleted.",
        "VM deletion failed due to - timeout. However, will re-try in the next resync. Initiate VM deletion",
        "Skipping drain as machine is Failed. Initiate VM deletion",
    ],
)
def test_after_the_drain_a_later_call_never_starts_another_one(description: str) -> None:
    # Finalize already went on to the device; even with no Job left and a healthy Node, no new drain starts
    # (a Failed machine is Terminating by now, so its force rule alone would not hold it back).
    m = machine(last_operation={"description": description, "state": "Processing", "type": "Delete"})
    step = plan_drain(m, node(), attachments(), SETTINGS, NOW)
    assert step.ready_to_delete_device and not step.announce
    assert step.attachments == []
    assert step.description == description


def test_a_drain_failure_is_not_mistaken_for_the_end_of_the_drain() -> None:
    text = "Drain failed due to - drain job x failed (DeadlineExceeded). Will retry in next sync. Initiate node drain"
    m = machine(last_operation={"description": text, "state": "Failed", "type": "Delete"})
    step = plan_drain(m, node(), attachments(), SETTINGS, NOW)
    assert not step.ready_to_delete_device and len(step.attachments) == 1


# --- failing and retrying -------------------------------------------------------------------------------------------


def test_failed_job_is_retried_under_a_new_name_and_the_failure_is_shown() -> None:
    job = first_job()
    step = plan_drain(machine(), node(), attachments(observed(job, failed=4, conditions=[FAILED])), SETTINGS, NOW)
    assert not step.ready_to_delete_device
    assert step.state == "Failed"
    assert step.description == (
        f"Drain failed due to - drain job {MACHINE}-drain failed (BackoffLimitExceeded: Job has reached the "
        "specified backoff limit). Will retry in next sync. Initiate node drain"
    )
    [retry] = step.attachments  # the failed Job is left out, so Metacontroller deletes it
    assert retry["metadata"]["name"] == f"{MACHINE}-drain-2"
    kubernetes_validate.validate(retry, K8S_VERSION, strict=True)

    # While the retry runs, lastOperation keeps saying why (as MCM does) and the retry Job stays declared.
    running = plan_drain(machine(), node(), attachments(observed(retry, active=1)), SETTINGS, NOW)
    assert running.attachments == [retry]
    assert running.description == step.description and running.state == "Failed"
    # The retry succeeding ends the wait.
    done = plan_drain(machine(), node(), attachments(observed(retry, succeeded=1)), SETTINGS, NOW)
    assert done.ready_to_delete_device and done.description == "Drain successful. Initiate VM deletion"


def test_failure_counted_without_a_condition_is_still_a_failure() -> None:
    job = first_job()
    step = plan_drain(machine(), node(), attachments(observed(job, failed=4)), SETTINGS, NOW)
    assert step.reason == "retrying"
    assert step.attachments[0]["metadata"]["annotations"][PREVIOUS_ERROR_ANNOTATION].endswith("(4 pod(s) failed)")


# --- force rules: each one skips the wait ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["True", "true"])
def test_force_deletion_label_skips_the_drain(value: str) -> None:
    m = machine(labels={"node": NODE, "force-deletion": value})
    step = plan_drain(m, node(), attachments(), SETTINGS, NOW)
    assert step.ready_to_delete_device and step.forced
    assert step.reason == "force-label"
    assert step.attachments == []
    assert step.description == "Skipping drain as the force-deletion label is set. Initiate VM deletion"


def test_force_deletion_label_false_does_not_force() -> None:
    step = plan_drain(machine(labels={"node": NODE, "force-deletion": "False"}), node(), attachments(), SETTINGS, NOW)
    assert not step.ready_to_delete_device


def test_default_drain_timeout_forces_after_two_hours() -> None:
    before = plan_drain(
        machine(deleted_ago=timedelta(hours=2) - timedelta(seconds=1)), node(), attachments(), DrainSettings(), NOW
    )
    assert not before.ready_to_delete_device
    after = plan_drain(machine(deleted_ago=timedelta(hours=2, seconds=1)), node(), attachments(), DrainSettings(), NOW)
    assert after.ready_to_delete_device and after.forced and after.reason == "drain-timeout"
    assert after.description == (
        "Skipping drain as the drain timeout of 2h0m0s has passed since deletion. Initiate VM deletion"
    )


@pytest.mark.parametrize(
    "timeout,ago,forced",
    [("30m", 31, True), ("30m", 29, False), ("1h30m", 91, True), ("90s", 2, True), ("nonsense", 119, False)],
)
def test_spec_drain_timeout_overrides_the_default(timeout: str, ago: int, forced: bool) -> None:
    m = machine(deleted_ago=timedelta(minutes=ago), spec={"drainTimeout": timeout})
    step = plan_drain(m, node(), attachments(), SETTINGS, NOW)
    assert step.forced is forced
    assert step.ready_to_delete_device is forced


def test_running_job_is_abandoned_when_the_timeout_passes() -> None:
    m = machine(deleted_ago=timedelta(hours=3))
    job = build_job(m, NODE, SETTINGS)
    step = plan_drain(m, node(), attachments(observed(job, active=1)), SETTINGS, NOW)
    assert step.ready_to_delete_device and step.forced
    assert step.description == (
        f"Drain failed due to - drain job {MACHINE}-drain still running. However, since it's a force deletion shall "
        "continue deletion of VM. Initiate VM deletion"
    )
    assert step.attachments == [job]


@pytest.mark.parametrize("status", ["False", "Unknown"])
def test_node_not_ready_for_over_five_minutes_forces(status: str) -> None:
    step = plan_drain(
        machine(), node(ready=status, since=timedelta(minutes=5, seconds=1)), attachments(), SETTINGS, NOW
    )
    assert step.ready_to_delete_device and step.forced and step.reason == "node-not-ready"
    assert step.description == "Skipping drain as machine is NotReady for over 5minutes. Initiate VM deletion"


def test_node_not_ready_for_less_than_five_minutes_still_drains_and_looks_again_when_they_run_out() -> None:
    step = plan_drain(
        machine(), node(ready="False", since=timedelta(minutes=4, seconds=50)), attachments(), SETTINGS, NOW
    )
    assert not step.ready_to_delete_device and not step.forced
    assert len(step.attachments) == 1
    assert step.resync_after == pytest.approx(11.0)


def test_readonly_filesystem_for_over_five_minutes_forces() -> None:
    step = plan_drain(
        machine(), node(readonly="True", readonly_since=timedelta(minutes=6)), attachments(), SETTINGS, NOW
    )
    assert step.ready_to_delete_device and step.forced and step.reason == "node-readonly-filesystem"
    short = plan_drain(
        machine(), node(readonly="True", readonly_since=timedelta(minutes=2)), attachments(), SETTINGS, NOW
    )
    assert not short.ready_to_delete_device


def test_drain_node_drains_a_failed_machine_as_any_other() -> None:
    """Mirrors MCM's drainNode (machine_util.go): the phase does not skip the drain; only the force rules do."""
    step = plan_drain(machine(phase="Failed"), node(), attachments(), SETTINGS, NOW)
    assert not step.ready_to_delete_device and not step.forced
    assert [j["kind"] for j in step.attachments] == ["Job"]
    assert step.description.endswith("Initiate node drain")
    # Failed for health: its Node has been NotReady past the health timeout, so MCM's 5-minute rule forces it.
    unhealthy = node(ready="False", since=timedelta(minutes=11))
    forced = plan_drain(machine(phase="Failed"), unhealthy, attachments(), SETTINGS, NOW)
    assert forced.ready_to_delete_device and forced.forced and forced.reason == "node-not-ready"


# --- nothing to drain -----------------------------------------------------------------------------------------------


def test_no_node_label_goes_straight_to_the_device() -> None:
    step = plan_drain(machine(labels={"name": "pool-a"}), None, attachments(), SETTINGS, NOW)
    assert step.ready_to_delete_device and not step.forced and step.attachments == []
    assert step.description == "Skipping drain as nodeName is not a valid one for machine. Initiate VM deletion"


def test_missing_node_goes_straight_to_the_device() -> None:
    step = plan_drain(machine(), None, attachments(), SETTINGS, NOW)
    assert step.ready_to_delete_device and step.attachments == []
    assert step.description == "Skipping drain as node object does not exist. Initiate VM deletion"


def test_disabled_draining_goes_straight_to_the_device() -> None:
    step = plan_drain(machine(), node(), attachments(), DrainSettings(enabled=False), NOW)
    assert step.ready_to_delete_device and step.attachments == [] and step.reason == "disabled"
    assert step.description == "Skipping drain as draining is disabled. Initiate VM deletion"


def test_job_for_another_node_is_replaced() -> None:
    stale = build_job(machine(), "some-old-node", SETTINGS)
    step = plan_drain(machine(), node(), attachments(observed(stale, active=1)), SETTINGS, NOW)
    [job] = step.attachments
    assert job["metadata"]["annotations"][NODE_ANNOTATION] == NODE


# --- settings and names ---------------------------------------------------------------------------------------------


def test_settings_from_environment() -> None:
    default = DrainSettings.from_env({})
    assert default.enabled and default.service_account == "metal-machine-drain"
    assert default.timeout == 7200.0 and default.image
    custom = DrainSettings.from_env(
        {
            "DRAIN_ENABLED": "false",
            "DRAIN_IMAGE": "r.example/x:9",
            "DRAIN_SERVICE_ACCOUNT": "d",
            "MACHINE_DRAIN_TIMEOUT": "600",
        }
    )
    assert (custom.enabled, custom.image, custom.service_account, custom.timeout) == (False, "r.example/x:9", "d", 600)
    assert not DrainSettings.from_env({"NO_TARGET_CLUSTER": "true"}).enabled
    assert DrainSettings.from_env({}, Settings(drain_timeout=60.0)).timeout == 60.0


@pytest.mark.parametrize(
    "env,word",
    [
        ({"DRAIN_ENABLED": "maybe"}, "DRAIN_ENABLED"),
        ({"DRAIN_SERVICE_ACCOUNT": "Not_Valid"}, "DRAIN_SERVICE_ACCOUNT"),
        ({"DRAIN_IMAGE": "a b"}, "DRAIN_IMAGE"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], word: str) -> None:
    with pytest.raises(ConfigError, match=word):
        DrainSettings.from_env(env)


def test_long_machine_names_give_short_unique_job_names() -> None:
    a, b = "m" * 60 + "-aaaa", "m" * 60 + "-bbbb"
    names = {job_name(a), job_name(b), job_name(a, 2), job_name(b, 2)}
    assert len(names) == 4
    assert all(len(n) <= MAX_NAME and n[0].isalnum() for n in names)
    assert job_name(a).endswith("-drain") and job_name(a, 2).endswith("-drain-2")
    assert job_name("short") == "short-drain"
    job = build_job(machine() | {"metadata": {**machine()["metadata"], "name": a}}, NODE, SETTINGS)
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)


# --- a whole Metacontroller finalize request ------------------------------------------------------------------------


def test_recorded_finalize_request_keeps_the_running_drain() -> None:
    request = json.loads((Path(__file__).parent / "fixtures" / "drain_finalize_request.json").read_text())
    assert request["finalizing"] is True
    nodes = request["related"]["Node.v1"]
    the_node = nodes.get(request["object"]["metadata"]["labels"]["node"])
    when = datetime(2026, 11, 25, 10, 2, 0, tzinfo=UTC)
    step = plan_drain(request["object"], the_node, request["attachments"], DrainSettings(), when)
    [(_key, observed_job)] = request["attachments"][JOB_KEY].items()
    assert not step.ready_to_delete_device
    assert [j["metadata"]["name"] for j in step.attachments] == [observed_job["metadata"]["name"]]
    assert step.description == "Initiate node drain"


def test_finalize_calls_in_a_row_show_each_step_in_order() -> None:
    """A stand-in for Metacontroller and the Job controller around plan_drain, as finalize will use it."""
    m = machine()
    observed_jobs: list[dict[str, Any]] = []
    shown: list[str] = []
    device_deleted_at = None
    for call in range(6):
        step = plan_drain(m, node(), attachments(*observed_jobs), SETTINGS, NOW + timedelta(seconds=call))
        # Metacontroller: create what is declared, keep what is declared again.
        names = {j["metadata"]["name"] for j in observed_jobs}
        observed_jobs = [
            j for j in observed_jobs if j["metadata"]["name"] in {a["metadata"]["name"] for a in step.attachments}
        ]
        observed_jobs += [observed(a, active=1) for a in step.attachments if a["metadata"]["name"] not in names]
        if not step.ready_to_delete_device or step.announce:
            description = step.description
        else:
            device_deleted_at = device_deleted_at if device_deleted_at is not None else call
            description = "Initiate VM deletion: waiting for device(s) 9e2b to be deleted."
        m["status"]["lastOperation"] = {"description": description, "state": step.state, "type": "Delete"}
        if not shown or shown[-1] != description:
            shown.append(description)
        if call == 1:  # the drain pod finishes
            observed_jobs = [observed(j, succeeded=1, conditions=[COMPLETE]) for j in observed_jobs]
    assert shown == [
        "Initiate node drain",
        "Drain successful. Initiate VM deletion",
        "Initiate VM deletion: waiting for device(s) 9e2b to be deleted.",
    ]
    assert device_deleted_at == 3
    assert len(observed_jobs) == 1  # one Job all along, kept until the Machine is gone


@pytest.mark.parametrize("field,value", [("status", ["not", "a", "map"]), ("spec", "x"),
                                         ("status", {"conditions": "Failed"})])
def test_an_observed_job_of_an_odd_shape_is_still_followed(field: str, value: Any) -> None:
    job = first_job()
    job[field] = value
    step = plan_drain(machine(), node(), attachments(job), SETTINGS, NOW)
    assert not step.ready_to_delete_device and step.reason == "draining"  # still running, as far as anyone can tell
    assert [j["metadata"]["name"] for j in step.attachments] == [job["metadata"]["name"]]
