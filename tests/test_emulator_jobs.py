"""Jobs finish the way the Job controller reports it, so hooks waiting on a drain Job can move on."""

from __future__ import annotations

from emulator.jobs import JobRunner
from emulator.store import Store
from tests.clocks import ManualClock


def job(name: str) -> dict:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": "default"},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x"}]}}}}


def conditions(store: Store, name: str) -> dict[str, str]:
    status = store.get("batch/v1", "Job", name, "default").get("status") or {}
    return {c["type"]: c["status"] for c in status.get("conditions", [])}


def test_jobs_succeed_after_the_delay_or_fail_when_told() -> None:
    store, clock = Store(), ManualClock(start=0.0)
    runner = JobRunner(store, delay=2.0, monotonic=clock)
    runner.set_outcome("bad", "failed")
    store.create(job("good"))
    store.create(job("bad"))
    runner.tick()
    assert store.get("batch/v1", "Job", "good", "default")["status"]["active"] == 1
    assert conditions(store, "good") == {}
    clock.now = 2.0
    runner.tick()
    assert conditions(store, "good")["Complete"] == "True"
    assert store.get("batch/v1", "Job", "good", "default")["status"]["succeeded"] == 1
    assert conditions(store, "bad")["Failed"] == "True"
    assert sorted(runner.finished) == ["bad", "good"]


def test_running_jobs_never_finish() -> None:
    store = Store()
    runner = JobRunner(store, default_outcome="running")
    store.create(job("slow"))
    runner.tick()
    runner.tick()
    assert conditions(store, "slow") == {} and runner.finished == []


def test_node_side_jobs_run_their_program_against_the_store(tmp_path) -> None:
    """`make demo`'s stand-in runs the nodejobs program: the token Secret appears in kube-system (never printed),
    a Node proven the device's is removed, and a failing program fails its Job."""
    import base64

    from hooks.mcm import bootstrap, node_jobs

    key = b"stand-in-bootstrap-token-key-of-32-bytes-or-more"
    (tmp_path / "key").write_bytes(key)
    store = Store()
    runner = JobRunner(store, delay=5.0, node_jobs_key_file=str(tmp_path / "key"))
    machine = {"metadata": {"name": "m1", "namespace": "default", "uid": "uid-1"}}
    settings = node_jobs.NodeJobSettings()
    store.create(node_jobs.build_job(machine, node_jobs.TOKEN_CREATE, "m1-token", [
        "token", "create", "--machine", "m1", "--machine-uid", "uid-1", "--expiration", "2030-01-01T00:00:00Z"],
        settings))
    store.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "m1"},
                  "spec": {"providerID": "equinixmetal://da/d-1"}})
    store.create(node_jobs.build_job(machine, node_jobs.NODE_REMOVE, "m1-node-remove", [
        "node", "remove", "m1", "--device-id", "d-1", "--provider-id", "equinixmetal://d-1"], settings))
    store.create(node_jobs.build_job(machine, node_jobs.NODE_REMOVE, "m1-node-remove-2", ["node", "bogus"],
                                     settings))
    runner.tick()  # the programs have run: no drain delay for them
    token = bootstrap.derive(key, "uid-1")
    secret = store.get("v1", "Secret", token.secret_name, "kube-system")
    assert base64.b64decode(secret["data"]["token-secret"]).decode() == token.secret
    assert base64.b64decode(secret["data"]["expiration"]).decode() == "2030-01-01T00:00:00Z"
    assert store.try_get("v1", "Node", "m1") is None
    assert conditions(store, "m1-token")["Complete"] == "True"
    assert conditions(store, "m1-node-remove")["Complete"] == "True"
    assert conditions(store, "m1-node-remove-2")["Failed"] == "True"
    assert all(token.secret not in text for text in runner.logs.values())
    assert "Deletion of Node Object \"m1\" is successful" in runner.logs["m1-node-remove"]


def test_jobs_mounting_the_target_kubeconfig_act_on_the_target_cluster(tmp_path) -> None:
    """Two clusters: a Job with the target kubeconfig mounted cordons and removes the target's Node and puts the
    bootstrap token in the target's kube-system; a Job without it acts on the control cluster; Jobs stay put."""
    from hooks.config import DrainSettings
    from hooks.mcm import bootstrap, drain_job, node_jobs
    from hooks.target.jobs import mount

    key = b"stand-in-bootstrap-token-key-of-32-bytes-or-more"
    (tmp_path / "key").write_bytes(key)
    control, target = Store(), Store()
    runner = JobRunner(control, node_jobs_key_file=str(tmp_path / "key"), node_store=target)
    machine = {"metadata": {"name": "m1", "namespace": "default", "uid": "uid-1"}}
    settings = node_jobs.NodeJobSettings()
    for store in (control, target):
        store.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "m1"},
                      "spec": {"providerID": "equinixmetal://d-1"}})
    control.create(mount(drain_job.build_job(machine, "m1", DrainSettings()), "target-kubeconfig"))
    control.create(mount(node_jobs.build_job(machine, node_jobs.TOKEN_CREATE, "m1-token", [
        "token", "create", "--machine", "m1", "--machine-uid", "uid-1", "--expiration", "2030-01-01T00:00:00Z"],
        settings), "target-kubeconfig"))
    runner.tick()
    token = bootstrap.derive(key, "uid-1")
    assert target.get("v1", "Secret", token.secret_name, "kube-system")
    assert control.try_get("v1", "Secret", token.secret_name, "kube-system") is None
    assert target.get("v1", "Node", "m1")["spec"]["unschedulable"] is True
    assert not control.get("v1", "Node", "m1")["spec"].get("unschedulable")
    assert conditions(control, "m1-drain")["Complete"] == "True" and target.list("batch/v1", "Job") == []

    control.create(node_jobs.build_job(machine, node_jobs.NODE_REMOVE, "m1-node-remove", [
        "node", "remove", "m1", "--device-id", "d-1", "--provider-id", "equinixmetal://d-1"], settings))
    runner.tick()  # not mounted: the control cluster's Node, as in one cluster
    assert control.try_get("v1", "Node", "m1") is None and target.try_get("v1", "Node", "m1") is not None
