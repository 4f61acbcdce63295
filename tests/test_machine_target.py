"""The Machine hooks in the two-cluster topology (hooks.mcm.machine_target, docs/operations.md "Two clusters").

A labelled kubeconfig Secret in the Machine's namespace names the target cluster: the Machine's Node is read there
(the control cluster's Node of the same name is ignored), every Job gets the kubeconfig mounted, and a target that
cannot be read freezes the Machine as MCM's safety controller does (reconcileClusterMachineSafetyAPIServer):
nothing Failed or Unknown because of it, nothing created, deletions held until the drain timeout, and the health
timeout of Unknown Machines restarted when the target answers again.
"""

from __future__ import annotations

import copy
import json
import logging
import socket
from typing import Any

import pytest

from hooks.config import Settings
from hooks.context import HookContext
from hooks.driver import DeviceState
from hooks.last_applied import LAST_APPLIED
from hooks.mcm import machine
from hooks.target.api import TargetUnavailable
from hooks.target.freeze import UNREACHABLE_SINCE_ANNOTATION
from hooks.target.jobs import mount
from hooks.target.kubeconfig import TargetConfig
from tests.emulator_support import target_kubeconfig_secret
from tests.fake_driver import FakeDriver
from tests.machine_support import (
    NAME,
    NS,
    UID,
    Clock,
    apply,
    cached_crd_schemas,
    clock_fixture,
    decorated,
    finalize_request,
    node,
    sync_request,
    with_node,
)
from tests.test_machine_hook import driver_fixture

__all__ = ["cached_crd_schemas", "clock_fixture", "driver_fixture"]

TARGET_TOKEN = "tgt-canary-7c1e9a44d2b8f0"
SECRET = "target-kubeconfig"


class FakeTarget:
    """The target cluster's API as the hooks' reader sees it: a Node, or down."""

    def __init__(self) -> None:
        self.node: dict[str, Any] | None = None
        self.down = False
        self.reads: list[str] = []
        self.configs: list[TargetConfig] = []

    def __call__(self, config: TargetConfig) -> FakeTarget:  # the reader factory
        self.configs.append(config)
        return self

    def get_node(self, name: str, *, deadline: float) -> dict[str, Any] | None:
        assert 0 < deadline <= 8.0
        self.reads.append(name)
        if self.down:
            raise TargetUnavailable(f"GET node {name} at https://target.example:6443: connection refused",
                                    "unreachable")
        return copy.deepcopy(self.node)

    def close(self) -> None:
        pass


@pytest.fixture(name="target")
def target_fixture() -> FakeTarget:
    return FakeTarget()


def two_clusters(body: dict[str, Any], server: str = "https://target.example:6443") -> dict[str, Any]:
    """The request of a Machine whose namespace names a target cluster (what the customize rule brings)."""
    secret = target_kubeconfig_secret(server, TARGET_TOKEN, NS, SECRET)
    body["related"]["Secret.v1"][f"{NS}/{SECRET}"] = secret
    return body


def context(driver: FakeDriver, clock: Clock, target: FakeTarget | None, **settings: Any) -> HookContext:
    return HookContext(settings=Settings(**settings), metal=lambda token: None, clock=clock, driver=driver,
                       target_reader=target)


def sync(body: dict, driver: FakeDriver, clock: Clock, target: FakeTarget | None, **settings: Any) -> dict:
    return machine.sync(body, context(driver, clock, target, **settings))


def finalize(body: dict, driver: FakeDriver, clock: Clock, target: FakeTarget | None, **settings: Any) -> dict:
    return machine.finalize(body, context(driver, clock, target, **settings))


def op(response: dict) -> dict:
    return response["status"]["lastOperation"]


def phase(response: dict) -> str:
    return response["status"]["currentStatus"]["phase"]


def running(driver: FakeDriver, clock: Clock, target: FakeTarget) -> dict:
    """A Machine of the target topology, Running with its Node (in the target) Ready."""
    body = two_clusters(sync_request())
    body = apply(body, sync(body, driver, clock, target))
    (device,) = driver.devices.values()
    driver.set_state(device.id, DeviceState.ACTIVE)
    target.node = node()
    body = apply(body, sync(body, driver, clock, target))
    assert decorated(body)["status"]["currentStatus"]["phase"] == "Running"
    return body


def stamp(clock: Clock) -> str:
    return clock.now.strftime("%Y-%m-%dT%H:%M:%SZ")


def observed_job(job: dict[str, Any]) -> dict[str, Any]:
    """A declared Job as Metacontroller shows it next time: server fields, a status and its last-applied record."""
    seen = copy.deepcopy(job)
    seen["metadata"].update(uid="f00d0000-0000-4000-8000-000000000002", resourceVersion="77")
    seen["metadata"].setdefault("annotations", {})[LAST_APPLIED] = json.dumps(job)
    seen["status"] = {"active": 1}
    return seen


# -- the Node lives in the target -----------------------------------------------------------------------------


def test_the_node_is_read_from_the_target_and_the_control_clusters_is_ignored(driver, clock, target) -> None:
    body = two_clusters(sync_request())
    body = apply(body, sync(body, driver, clock, target))
    (device,) = driver.devices.values()
    driver.set_state(device.id, DeviceState.ACTIVE)
    # A Node of the same name in the control cluster would prove itself (shared public address); it is not read.
    response = sync(with_node(body, node()), driver, clock, target)
    assert phase(response) == "Pending" and target.reads == [NAME, NAME]
    assert target.configs[-1].source == f"{NS}/{SECRET}" and target.configs[-1].token == TARGET_TOKEN
    target.node = node()
    response = sync(with_node(body, None), driver, clock, target)
    assert phase(response) == "Running"
    assert UNREACHABLE_SINCE_ANNOTATION not in response.get("annotations", {})


def test_a_namespace_without_the_secret_keeps_the_one_cluster_behaviour(driver, clock, target) -> None:
    body = sync_request()
    body = apply(body, sync(body, driver, clock, target))
    (device,) = driver.devices.values()
    driver.set_state(device.id, DeviceState.ACTIVE)
    assert phase(sync(with_node(body, node()), driver, clock, target)) == "Running"
    assert target.reads == []


def test_every_job_mounts_the_target_kubeconfig(driver, clock, target) -> None:
    """The drain Job acts in the target: the kubeconfig Secret mounted read-only and KUBECONFIG pointing at it."""
    body = finalize_request(running(driver, clock, target))
    response = finalize(body, driver, clock, target)
    (job,) = response["attachments"]
    pod = job["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (volume,) = [v for v in volumes.values() if v.get("secret", {}).get("secretName") == SECRET]
    (container,) = pod["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True
    assert {"name": "KUBECONFIG", "value": f"{mount['mountPath']}/kubeconfig"} in container["env"]
    assert TARGET_TOKEN not in json.dumps(response)


# -- the target cannot be read --------------------------------------------------------------------------------


def test_an_unreachable_target_freezes_a_running_machine(driver, clock, target) -> None:
    body = running(driver, clock, target)
    kept = mount({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": f"{NAME}-node-sync", "namespace": NS},
                  "spec": {"template": {"spec": {"containers": [{"name": "node", "image": "x"}]}}}}, SECRET)
    body["attachments"] = {"Job.batch/v1": {f"{NS}/{kept['metadata']['name']}": observed_job(kept)}}
    target.down = True
    driver.calls.clear()
    clock.advance(seconds=20)
    response = sync(body, driver, clock, target)
    assert phase(response) == "Running"
    assert op(response)["description"].startswith("target cluster API unavailable since ")
    assert "Machine frozen" in op(response)["description"]
    assert response["annotations"][UNREACHABLE_SINCE_ANNOTATION] == stamp(clock)
    assert response["resyncAfterSeconds"] == 30
    assert driver.ops() == []  # nothing asked of the provider, nothing created
    assert response["attachments"] == [kept]  # the Job as last declared: not deleted, not changed

    # Level-based: the same frozen Machine a minute later gets the same answer and no new mark.
    body = apply(body, response)
    clock.advance(seconds=60)
    again = sync(body, driver, clock, target)
    assert again["status"] == response["status"] and UNREACHABLE_SINCE_ANNOTATION not in again.get("annotations", {})


def test_a_frozen_machine_never_fails_for_health(driver, clock, target) -> None:
    body = running(driver, clock, target)
    target.node = node(ready=False)
    body = apply(body, sync(body, driver, clock, target))
    assert decorated(body)["status"]["currentStatus"]["phase"] == "Unknown"
    target.down = True
    clock.advance(minutes=30)  # past the 10 minute health timeout
    response = sync(body, driver, clock, target)
    assert phase(response) == "Unknown" and op(response)["state"] == "Processing"


def test_recovery_restarts_the_health_timeout_of_unknown_machines(driver, clock, target) -> None:
    """MCM's unfreeze: Unknown Machines become Running with lastUpdateTime now, then are judged again."""
    body = running(driver, clock, target)
    target.node = node(ready=False)
    body = apply(body, sync(body, driver, clock, target))
    target.down = True
    clock.advance(minutes=5)
    body = apply(body, sync(body, driver, clock, target))
    target.down = False
    clock.advance(minutes=25)
    response = sync(body, driver, clock, target)
    assert phase(response) == "Running"
    assert op(response)["description"].startswith(
        "Machine Health Timeout was reset due to APIServer being unreachable")
    assert op(response)["state"] == "Successful" and op(response)["type"] == "HealthCheck"
    assert response["annotations"] == {UNREACHABLE_SINCE_ANNOTATION: None}
    assert response["status"]["currentStatus"]["lastUpdateTime"] == stamp(clock)
    body = apply(body, response)
    clock.advance(seconds=30)
    assert phase(sync(body, driver, clock, target)) == "Unknown"  # the Node is still NotReady: a new timeout runs


def test_a_deletion_waits_for_the_target(driver, clock, target) -> None:
    body = finalize_request(running(driver, clock, target))
    target.down = True
    driver.calls.clear()
    response = finalize(body, driver, clock, target)
    assert response["finalized"] is False and phase(response) == "Terminating"
    assert "deletion waits: the Node cannot be drained or known gone" in op(response)["description"]
    assert driver.ops() == []  # the device is not deleted under a Node that may still run pods
    assert len(driver.devices) == 1


def test_past_the_drain_timeout_the_device_goes_but_the_machine_waits(driver, clock, target) -> None:
    body = finalize_request(running(driver, clock, target))
    decorated(body)["spec"]["drainTimeout"] = "1m"
    decorated(body)["metadata"]["deletionTimestamp"] = stamp(clock)
    clock.advance(minutes=2)
    target.down = True
    driver.calls.clear()
    response = finalize(body, driver, clock, target)
    assert driver.ops() == ["delete_machine"] and response["finalized"] is False
    body = apply(body, response)
    driver.calls.clear()
    response = finalize(body, driver, clock, target)
    assert driver.devices == {} and response["finalized"] is False
    assert "drain timed out, deleting the device; the Machine stays until its Node can be removed" in \
        op(response)["description"]
    target.down = False  # the target answers: the Node (proven by the device recorded) is removed, then it goes
    response = finalize(apply(body, response), driver, clock, target)
    assert response["annotations"] == {UNREACHABLE_SINCE_ANNOTATION: None}


def test_an_unusable_kubeconfig_freezes_with_the_reason(driver, clock, target) -> None:
    body = two_clusters(sync_request())
    secret = body["related"]["Secret.v1"][f"{NS}/{SECRET}"]
    exec_config = ("apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: https://t:6443\n  name: t\n"
                   "contexts:\n- context:\n    cluster: t\n    user: u\n  name: t\ncurrent-context: t\n"
                   "users:\n- name: u\n  user:\n    exec:\n      command: gke-gcloud-auth-plugin\n")
    import base64

    secret["data"]["kubeconfig"] = base64.b64encode(exec_config.encode()).decode()
    response = sync(body, driver, clock, target)
    assert "target cluster API unavailable" in op(response)["description"]
    assert "stateless" in op(response)["description"]
    assert driver.ops() == [] and target.reads == []


def test_the_target_token_never_appears_in_an_answer_or_a_log(driver, clock, caplog) -> None:
    """Canary, with the real reader against a port nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    body = two_clusters(sync_request(), server=f"http://127.0.0.1:{port}")
    with caplog.at_level(logging.DEBUG):
        response = sync(body, driver, clock, None)
        later = finalize(finalize_request(apply(body, response)), driver, clock, None)
    assert "target cluster API unavailable" in op(response)["description"]
    text = json.dumps([response, later]) + caplog.text
    assert TARGET_TOKEN not in text and TARGET_TOKEN[:8] not in text
    assert UID  # the Machine is the fixture's
