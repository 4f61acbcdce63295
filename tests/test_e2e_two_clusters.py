"""End to end, two clusters (issue 17): Machines in the control cluster, their Nodes in a target cluster.

The emulator runs both: the control store under the Metacontroller emulator with our hooks, and a target store with
its own REST API where the Node joiner puts the Nodes. The kubeconfig Secret in the Machine's namespace is what
the hooks get from Metacontroller (the customize rule of hooks/target/kubeconfig.py); from it hooks/target/api.py
reads the Machine's Node from the target, and a Job program with that Secret mounted (KUBECONFIG) acts there.
The Machine hook does not read the target yet (the lead wires it): these tests show the pieces it will use.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from emulator.store import Store
from hooks.target.api import TargetReader, TargetUnavailable
from hooks.target.freeze import Action, MachineView, TargetRead, decide
from hooks.target.kubeconfig import from_related
from tests.emulator_support import RealCluster, real_cluster

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "kubernetes" / "examples"
MACHINE = "eqx-test-machine"
Obj = dict[str, Any]


def _example_project() -> str:
    docs = yaml.safe_load_all((EXAMPLES / "machine-class.yaml").read_text())
    return next(d for d in docs if d and d.get("kind") == "MachineClass")["providerSpec"]["projectID"]


def _example_token() -> str:
    return yaml.safe_load((EXAMPLES / "secret.yaml").read_text())["stringData"]["apiToken"]


@pytest.fixture
def two(metal_sim_factory: Callable[..., Any]) -> Iterator[RealCluster]:
    sim = metal_sim_factory(tokens={_example_token(): [_example_project()]})
    with real_cluster(sim.url, sim.base_url, two_clusters=True, jobs="program") as running:
        running.store.load_yaml([EXAMPLES / "secret.yaml", EXAMPLES / "machine-class.yaml",
                                 EXAMPLES / "machine.yaml"])
        yield running


def related_secrets(store: Store, rule: Obj) -> Obj:
    """What Metacontroller hands a hook for a customize rule on secrets: the matching Secrets, keyed ns/name."""
    return {"Secret.v1": {f"{s['metadata']['namespace']}/{s['metadata']['name']}": s
                          for s in store.list("v1", "Secret", rule["namespace"], rule["labelSelector"])}}


def wait(predicate: Callable[[], Any], timeout: float, message: str) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {message}")


def test_the_machines_node_is_read_from_the_target_cluster(two: RealCluster) -> None:
    from hooks.target.kubeconfig import customize_rule

    target = two.target
    node = wait(lambda: target.store.try_get("v1", "Node", MACHINE), 60, "the Node in the target cluster")
    assert two.store.try_get("v1", "Node", MACHINE) is None  # the control cluster has no Nodes at all
    assert two.store.list("v1", "Node") == []

    config = from_related(related_secrets(two.store, customize_rule("default")), "default")
    assert config is not None and config.server == target.api.url and config.source == "default/target-kubeconfig"
    reader = TargetReader(config)
    read = reader.get_node(MACHINE, deadline=5)
    assert read is not None and read["spec"]["providerID"] == node["spec"]["providerID"]
    assert reader.get_node("no-such-node", deadline=5) is None
    assert {r.user for r in target.api.requests()} == {"system:serviceaccount:kube-system:metal-machine-hooks-target"}

    # Another namespace has no target Secret: its Machines' target is the control cluster.
    assert from_related(related_secrets(two.store, customize_rule("other")), "other") is None

    # The target goes away: the read says so quickly, and the decision is to freeze, not "Node gone".
    target.api.stop()
    started = time.monotonic()
    with pytest.raises(TargetUnavailable) as caught:
        reader.get_node(MACHINE, deadline=3)
    assert time.monotonic() - started < 3.5
    decision = decide(TargetRead(False, kind=caught.value.kind, message=str(caught.value)), MachineView(False),
                      datetime.now(UTC))
    assert decision.action is Action.FREEZE and decision.node is None
    assert target.token not in str(caught.value)


def test_a_job_program_with_the_kubeconfig_mounted_acts_on_the_target(two: RealCluster) -> None:
    """The drain program in a Job of the control cluster cordons the Node in the target (Secret volume + KUBECONFIG)."""
    target = two.target
    wait(lambda: target.store.try_get("v1", "Node", MACHINE), 60, "the Node in the target cluster")
    two.store.create({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "drain-probe", "namespace": "default"},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never", "automountServiceAccountToken": False,
            "volumes": [{"name": "target", "secret": {"secretName": target.secret_name}}],
            "containers": [{"name": "drain", "image": "hooks", "command": ["python", "-m", "drain", MACHINE,
                                                                           "--timeout", "20"],
                            "env": [{"name": "KUBECONFIG", "value": "/etc/target/kubeconfig"}],
                            "volumeMounts": [{"name": "target", "mountPath": "/etc/target", "readOnly": True}]}],
        }}},
    })
    job = wait(lambda: _finished(two.store.get("batch/v1", "Job", "drain-probe", "default")), 30, "the Job")
    assert job == "Complete", two.jobs.logs
    assert target.store.get("v1", "Node", MACHINE)["spec"].get("unschedulable") is True
    assert any(r.verb == "patch" and r.resource == "nodes" for r in target.api.requests())


def _finished(job: Obj) -> str:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return str(condition["type"])
    return ""
