"""End to end, two clusters (issue 17): Machines in the control cluster, their Nodes in a target cluster.

The emulator runs both: the control store under the Metacontroller emulator with our hooks, and a target store with
its own REST API where the Node joiner puts the Nodes. The kubeconfig Secret in the Machine's namespace is what
the hooks get from Metacontroller (the customize rule of hooks/target/kubeconfig.py); from it hooks/target/api.py
reads the Machine's Node from the target on every sync, and the Jobs the Machine hook declares get the Secret
mounted (hooks/target/jobs.py), so their programs act there through KUBECONFIG.

The main flows run in both topologies in their own modules (test_e2e_machine, test_e2e_scenarios,
test_e2e_drain_program, test_e2e_node_side_wired). Here: the pieces on their own, and the target going away in the
middle of a MachineDeployment rollout, which MCM answers by freezing: no Machine is marked Failed for it, the
Machines say why in lastOperation, nothing is created twice or left behind, the rollout finishes once the API is
back, and the target's token shows nowhere.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from emulator.store import Store, WatchEvent
from hooks.target.api import TargetReader, TargetUnavailable
from hooks.target.freeze import UNREACHABLE_SINCE_ANNOTATION, Action, MachineView, TargetRead, decide
from hooks.target.jobs import mount
from hooks.target.kubeconfig import from_related
from tests.emulator_support import RealCluster, example_tokens, real_cluster

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "kubernetes" / "examples"
MACHINE = "eqx-test-machine"
Obj = dict[str, Any]




@pytest.fixture
def two(metal_sim_factory: Callable[..., Any]) -> Iterator[RealCluster]:
    sim = metal_sim_factory(tokens=example_tokens())
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
    # A Job as the hooks declare one (hooks/target/jobs.py's mount), but with no ServiceAccount token at all: what
    # it does in the target, it does with the mounted kubeconfig only.
    two.store.create(mount({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "drain-probe", "namespace": "default"},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never", "automountServiceAccountToken": False,
            "containers": [{"name": "drain", "image": "hooks", "command": ["python", "-m", "drain", MACHINE,
                                                                           "--timeout", "20"]}],
        }}},
    }, target.secret_name))
    job = wait(lambda: _finished(two.store.get("batch/v1", "Job", "drain-probe", "default")), 30, "the Job")
    assert job == "Complete", two.jobs.logs
    assert target.store.get("v1", "Node", MACHINE)["spec"].get("unschedulable") is True
    assert any(r.verb == "patch" and r.resource == "nodes" for r in target.api.requests())


def _finished(job: Obj) -> str:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return str(condition["type"])
    return ""



# ------------------------------------------------------------------------------------------------ the outage

MACHINE_API = "machine.sapcloud.io/v1alpha1"
DEPLOYMENT = "eqx-test-machine-deployment"
NEW_CLASS = "eqx-mc-v2"
# Several of the Machines' 1 s resyncs (real_cluster's target_resync): the acceptance's minute, shortened, since what
# a frozen Machine does at each sync is the same at the 8th and the 60th. E2E_TARGET_OUTAGE_SECONDS=60 runs the minute.
OUTAGE_SECONDS = float(os.environ.get("E2E_TARGET_OUTAGE_SECONDS") or 8.0)


def _phase(machine: Obj) -> str:
    return str(((machine.get("status") or {}).get("currentStatus") or {}).get("phase") or "")


def _owner(device: Obj) -> str:
    return next((t.split(":", 2)[2] for t in device.get("tags") or [] if t.startswith("metal-machine-hooks:uid:")), "")


def _counter(text: str, name: str, outcome: str) -> float:
    """A counter's value from the /metrics text (its labels are created at 0, so presence proves nothing)."""
    prefix = f'{name}{{outcome="{outcome}"}} '
    return sum(float(line[len(prefix):]) for line in text.splitlines() if line.startswith(prefix))


def test_a_target_outage_during_a_rollout_freezes_machines_and_the_rollout_finishes_after_it(
        metal_sim_factory: Callable[..., Any], capfd: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    sim = metal_sim_factory(tokens=example_tokens())
    seen: dict[str, Any] = {"phases": set(), "operations": [], "marked": set(), "uids": set()}
    lock = threading.Lock()

    def record(event: WatchEvent) -> None:
        obj = event.object
        if obj.get("kind") != "Machine":
            return
        status = obj.get("status") or {}
        with lock:
            seen["uids"].add(obj["metadata"]["uid"])
            seen["phases"].add((obj["metadata"]["name"], _phase(obj)))
            description = str((status.get("lastOperation") or {}).get("description") or "")
            if description and description not in seen["operations"]:
                seen["operations"].append(description)
            if UNREACHABLE_SINCE_ANNOTATION in (obj["metadata"].get("annotations") or {}):
                seen["marked"].add(obj["metadata"]["name"])

    with real_cluster(sim.url, sim.base_url, two_clusters=True, jobs="program", keep_bodies=True) as cluster:
        caplog.set_level(logging.DEBUG)  # after the app set the root level from LOG_LEVEL
        store, mc, target = cluster.store, cluster.mc, cluster.target
        store.watch(record)
        store.load_yaml([EXAMPLES / "secret.yaml", EXAMPLES / "machine-class.yaml"])
        deployment = yaml.safe_load((EXAMPLES / "machine-deployment.yaml").read_text())
        deployment["spec"].update(replicas=3, minReadySeconds=0)
        store.create(deployment)

        def status(s: Store) -> Obj:
            return s.get(MACHINE_API, "MachineDeployment", DEPLOYMENT, "default").get("status") or {}

        def machines(s: Store) -> list[Obj]:
            return s.list(MACHINE_API, "Machine", "default")

        mc.wait_for(lambda s: status(s).get("availableReplicas") == 3
                    and [_phase(m) for m in machines(s)] == ["Running"] * 3, timeout=60, message="3 Running")
        assert store.list("v1", "Node") == [] and len(target.store.list("v1", "Node")) == 3

        md = store.get(MACHINE_API, "MachineDeployment", DEPLOYMENT, "default")
        md["spec"]["template"]["spec"]["class"]["name"] = NEW_CLASS
        store.update(md)
        mc.wait_for(lambda s: any(m["spec"]["class"]["name"] == NEW_CLASS for m in machines(s)), timeout=30,
                    message="the rollout under way: a Machine of the new class")

        target.api.stop()
        went = time.monotonic()
        mc.wait_for(lambda s: any("target cluster API unavailable" in str(
            ((m.get("status") or {}).get("lastOperation") or {}).get("description")) for m in machines(s)),
            timeout=30, message="a Machine saying the target is unavailable")
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - went)))
        during = {m["metadata"]["name"]: _phase(m) for m in machines(store)}
        target.api.start()

        def rolled_out(s: Store) -> bool:
            st, live = status(s), [m for m in machines(s) if not m["metadata"].get("deletionTimestamp")]
            return ((st.get("updatedReplicas"), st.get("availableReplicas"), st.get("replicas")) == (3, 3, 3)
                    and len(live) == 3 and all(m["spec"]["class"]["name"] == NEW_CLASS and _phase(m) == "Running"
                                               for m in live))

        mc.wait_for(rolled_out, timeout=120, message="the rollout finished after the target came back")
        plan = next(d for d in yaml.safe_load_all((EXAMPLES / "machine-class.yaml").read_text())
                    if d and d["metadata"]["name"] == NEW_CLASS)["providerSpec"]["machineType"]
        mc.wait_for(lambda s: len(machines(s)) == 3 and [d["plan"]["slug"] for d in sim.sim.devices()] == [plan] * 3,
                    timeout=60, message="the old Machines and devices gone, three of the new class")
        mc.wait_for(lambda s: not any(UNREACHABLE_SINCE_ANNOTATION in (m["metadata"].get("annotations") or {})
                                      for m in machines(s)), timeout=30, message="the outage marks removed")
        final = machines(store)
        metrics_text = requests.get(f"{cluster.hooks_url}/metrics", timeout=5).text
        objects = [o for o in store.snapshot() + target.store.snapshot() if o.get("kind") != "Secret"]
        hook_events = copy.deepcopy(mc.events)

    with lock:
        phases, operations, marked, uids = set(seen["phases"]), list(seen["operations"]), seen["marked"], seen["uids"]
    # Frozen, never failed: no Machine was marked Failed (MCM freezes rather than judge from stale data) ...
    assert not [p for p in phases if p[1] == "Failed"], phases
    assert "Failed" not in during.values(), during
    # ... and the Machines said why, with the mark the next syncs measure the outage from.
    unavailable = [o for o in operations if o.startswith("target cluster API unavailable since ")]
    assert unavailable, operations
    assert marked, "no Machine carried the target-unreachable-since annotation"
    # No device leaked or created twice: one device per Machine that ever existed, the live ones exactly the
    # Machines left.
    every = sim.sim.devices(include_deleted=True)
    owners = [_owner(d) for d in every]
    assert len(owners) == len(set(owners)) and set(owners) <= uids, (owners, uids)
    assert sorted(_owner(d) for d in sim.sim.devices()) == sorted(m["metadata"]["uid"] for m in final)
    assert len(every) == 6, [(d["hostname"], d["state"]) for d in every]  # 3, then 3 of the new class
    # The outage is in the metrics: Machines frozen, then recovered.
    assert _counter(metrics_text, "metal_machine_hooks_target_decisions_total", "frozen") > 0, metrics_text
    assert _counter(metrics_text, "metal_machine_hooks_target_decisions_total", "recovered") > 0, metrics_text
    # The target's token (the canary: random per run) is nowhere but in its Secret: not in a log line, an answer of
    # the hooks, a status, an object of either cluster, or the metrics.
    token = target.token
    captured = capfd.readouterr()
    assert '"logger": "hooks.machine"' in captured.err, "the hook server's log lines were not captured"
    assert token not in captured.err + captured.out
    for record_ in caplog.records:
        fields = {k: v for k, v in vars(record_).items() if k != "message"}
        assert token not in record_.getMessage() + json.dumps(fields, default=str), record_
    for entry in hook_events:
        shown = {k: v for k, v in entry.items() if k != "request"}  # requests carry the Secret by design
        assert token not in json.dumps(shown, default=str), entry
    for obj in objects:
        assert token not in json.dumps(obj), obj
    assert token not in metrics_text
