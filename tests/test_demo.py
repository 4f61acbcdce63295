"""`make demo`: the whole flow converges with zero delays, reports no leaked or duplicated device, stops every
process it started, says what is stuck when a step cannot converge, and with --keep stays reachable until Ctrl-C.

The view tests pin down what a user reads in the table and the summary from hand-built observations.
"""

from __future__ import annotations

import dataclasses
import io
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from emulator import demo_view as view
from emulator.demo import Demo, Display, Timing

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
UID_A, UID_B = "11111111-aaaa-4aaa-8aaa-111111111111", "22222222-bbbb-4bbb-8bbb-222222222222"
Obj = dict[str, Any]


def _machine(name: str, uid: str, *, phase: str = "", device_id: str = "", deleting: bool = False,
             description: str = "") -> Obj:
    meta: Obj = {"name": name, "namespace": "default", "uid": uid, "labels": {"node": name} if device_id else {}}
    if device_id:
        meta["annotations"] = {"metal-machine-hooks/device-id": device_id}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-25T10:00:00Z"
    status: Obj = {}
    if phase:
        status = {"currentStatus": {"phase": phase},
                  "lastOperation": {"description": description, "state": "Processing", "type": "Create"}}
    return {"kind": "Machine", "metadata": meta, "spec": {"class": {"name": "eqx-mc"}}, "status": status}


def _device(device_id: str, uid: str | None, state: str, percent: float | None = None) -> Obj:
    tags = ["metal-machine-hooks:managed", f"metal-machine-hooks:uid:{uid}"] if uid else ["foreign"]
    device: Obj = {"id": device_id, "state": state, "tags": tags, "plan": {"slug": "t1.small.x86"}}
    if percent is not None:
        device["provisioning_percentage"] = percent
    return device


def _observation() -> view.Observation:
    machines = [
        _machine("m-provisioning", UID_A, phase="Pending", device_id="aaaaaaaa-1111-4000-8000-000000000001",
                 description="Creating machine on cloud provider"),
        _machine("m-leaving", UID_B, phase="Running", device_id="bbbbbbbb-2222-4000-8000-000000000002",
                 deleting=True),
    ]
    devices = [_device("aaaaaaaa-1111-4000-8000-000000000001", UID_A, "provisioning", 37.4),
               _device("bbbbbbbb-2222-4000-8000-000000000002", UID_B, "active"),
               _device("cccccccc-3333-4000-8000-000000000003", None, "active")]
    sets = [{"metadata": {"name": "md-abc"}, "spec": {"replicas": 3},
             "status": {"replicas": 2, "readyReplicas": 1, "availableReplicas": 1}}]
    deployments = [{"metadata": {"name": "md"}, "spec": {"replicas": 3},
                    "status": {"readyReplicas": 1, "updatedReplicas": 2, "availableReplicas": 1,
                               "conditions": [{"type": "Available", "status": "False",
                                               "reason": "MinimumReplicasUnavailable"}]}}]
    nodes = [{"metadata": {"name": "m-provisioning"}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}},
             {"metadata": {"name": "m-leaving"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}]
    return view.Observation(machines, sets, deployments, devices, nodes=nodes)


def test_table_shows_device_state_progress_and_status_of_each_kind() -> None:
    lines = view.render(_observation(), width=200)
    text = "\n".join(lines)
    provisioning = next(line for line in lines if line.startswith("m-provisioning"))
    assert re.search(r"Pending\s+NotReady\s+aaaaaaaa\s+provisioning\s+37%\s+Creating machine", provisioning)
    leaving = next(line for line in lines if line.startswith("m-leaving"))
    assert re.search(r"Running \(deleting\)\s+Ready\s+bbbbbbbb\s+active\s+100%", leaving)
    assert re.search(r"md-abc\s+3\s+2\s+1\s+1", text)
    assert re.search(r"md\s+1/3\s+3\s+2\s+1\s+Available=False\(MinimumReplicasUnavailable\)", text)
    assert "2 live devices of ours, 1 others" in text


def test_node_column_names_a_node_only_when_it_differs_from_the_machine() -> None:
    machine = _machine("m1", UID_A, phase="Running", device_id="d1")
    assert view.node_text(machine, []) == "not joined"
    machine["metadata"]["labels"]["node"] = "worker-7"
    ready = {"metadata": {"name": "worker-7"}, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}
    assert view.node_text(machine, [ready]) == "worker-7 Unknown"
    assert view.node_text(_machine("m2", UID_B), [ready]) == "-"


def test_unchanged_key_ignores_progress_but_not_state() -> None:
    obs = _observation()
    moved = dataclasses.replace(obs, devices=[{**obs.devices[0], "provisioning_percentage": 80}, *obs.devices[1:]])
    assert view.render(obs, volatile=False) == view.render(moved, volatile=False)
    active = dataclasses.replace(obs, devices=[{**obs.devices[0], "state": "active"}, *obs.devices[1:]])
    assert view.render(obs, volatile=False) != view.render(active, volatile=False)


def test_long_lines_are_cut_to_the_width() -> None:
    assert all(len(line) <= 60 for line in view.render(_observation(), width=60))


def test_device_checks_count_leaks_and_second_devices_per_machine() -> None:
    first = _device("d1", UID_A, "deleted")
    second = _device("d2", UID_A, "active")
    other = _device("d3", UID_B, "deleted")
    foreign = _device("d4", None, "active")
    assert view.device_checks([first, second, other, foreign], [second, foreign]) == (1, 1)
    assert view.device_checks([first, other], []) == (0, 0)


def test_stuck_report_names_every_machine_operation() -> None:
    lines = view.stuck_report(_observation())
    assert any("m-provisioning" in line and "Creating machine on cloud provider" in line for line in lines)
    assert any("MachineDeployment md" in line for line in lines)


def test_terminal_redraws_in_place_and_logs_print_only_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    obs = _observation()
    moved = dataclasses.replace(obs, devices=[{**obs.devices[0], "provisioning_percentage": 80}, *obs.devices[1:]])
    terminal = io.StringIO()
    screen = Display(terminal, tty=True)
    for seen in (obs, moved):
        screen.frame(seen, "[1/5] apply", 1.0)
    screen.step_finished(1, 5, "apply", 2.0)
    frames = terminal.getvalue().split("\x1b[H")[1:]
    assert len(frames) == 3  # two refreshes and the redraw that marks the step done
    assert "80%" in frames[1] and "ok [1/5] apply" in frames[2]
    for frame in frames:
        assert all(len(line.removesuffix("\x1b[K")) < 100 for line in frame.split("\n"))

    log = io.StringIO()
    plain = Display(log, tty=False)
    for seen in (obs, moved, moved):
        plain.frame(seen, "[1/5] apply", 1.0)
    text = log.getvalue()
    assert "\x1b[" not in text
    assert "Machines (2)" not in text, "no tables in a log"
    lines = text.splitlines()
    machines = [m["metadata"]["name"] for m in obs.machines]
    assert len(lines) == len(view.snapshot(obs))  # one line per object, once: progress alone prints nothing
    for name in machines:
        assert sum(f"Machine {name}:" in line for line in lines) == 1


def test_the_log_prints_one_line_per_change() -> None:
    obs = _observation()
    first = obs.machines[0]
    done = {**first, "status": {**first.get("status", {}), "currentStatus": {"phase": "Running"}}}
    later = dataclasses.replace(obs, machines=[done, *obs.machines[1:]])
    log = io.StringIO()
    plain = Display(log, tty=False)
    plain.frame(obs, "[1/5] apply", 1.0)
    before = len(log.getvalue().splitlines())
    plain.frame(later, "[1/5] apply", 2.0)
    new = log.getvalue().splitlines()[before:]
    assert len(new) == 1 and f"Machine {first['metadata']['name']}: Running" in new[0] and "2.0 s" in new[0]
    gone = dataclasses.replace(later, machines=later.machines[1:])
    plain.frame(gone, "[1/5] apply", 3.0)
    assert log.getvalue().splitlines()[-1].endswith(f"Machine {first['metadata']['name']}: gone")


def _run(timing: Timing, **kwargs: Any) -> tuple[int, str, Demo]:
    out = io.StringIO()
    demo = Demo(timing, out=out, tty=False, **kwargs)
    code = demo.run()
    return code, out.getvalue(), demo


@pytest.mark.timeout(60)
def test_fast_demo_runs_the_whole_flow_and_leaves_nothing_behind() -> None:
    code, output, demo = _run(Timing.fast())
    assert code == 0, output[-3000:]
    for step in ("[1/5] apply kubernetes/examples/", "[2/5] scale eqx-test-machine-deployment to 5",
                 "[3/5] roll out: template class eqx-mc -> eqx-mc-v2", "[4/5] scale eqx-test-machine-deployment to 2",
                 "[5/5] delete Machine eqx-test-machine"):
        assert f"ok {step}" in output, step
    assert "leaked devices: 0, duplicates: 0" in output
    # 1 + 3 machines, +2 on scale-up, +5 replaced by the rollout: 11 devices, every one deleted again.
    assert "devices created: 11, deleted: 11, live now: 0" in output
    assert re.search(r"POST /projects/\{id\}/devices: 11 \(201: 11\)", output)
    assert re.search(r"metal-machines finalize: \d+", output)
    assert all(child.process.returncode is not None for child in demo.children)
    assert len(demo.children) == 2
    assert not demo.workdir.exists()


@pytest.mark.timeout(60)
def test_a_step_that_cannot_converge_fails_with_what_is_stuck() -> None:
    code, output, demo = _run(dataclasses.replace(Timing.fast(), step_timeout=0.0))
    assert code == 1
    assert f"Logs: {demo.workdir}" in output  # kept for the user to read
    shutil.rmtree(demo.workdir)
    assert "FAILED: step 'apply kubernetes/examples/" in output
    assert re.search(r"eqx-test-machine: phase \S+, lastOperation", output)
    assert "Summary" not in output
    assert all(child.process.returncode is not None for child in demo.children)
    with pytest.raises(requests.ConnectionError):
        requests.get(demo.sim_url + "/_sim/state", timeout=2)


@pytest.mark.timeout(60)
def test_a_simulator_that_dies_fails_the_demo_and_stops_the_hook_server(monkeypatch: pytest.MonkeyPatch) -> None:
    apply = Demo.apply_examples

    def apply_then_lose_the_simulator(demo: Demo) -> None:
        apply(demo)
        demo.children[0].process.kill()
        demo.children[0].process.wait()

    monkeypatch.setattr(Demo, "apply_examples", apply_then_lose_the_simulator)
    code, output, demo = _run(Timing.fast())
    assert code == 1
    assert "FAILED: the simulator stopped answering" in output
    assert "simulator (exit code -9)" in output
    assert demo.children[1].process.returncode is not None
    shutil.rmtree(demo.workdir)


def _read_until(process: subprocess.Popen[str], marker: str, timeout: float) -> str:
    """Output of the process up to the line holding `marker` (a reader thread keeps the pipe drained)."""
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(process.stdout or ()), daemon=True).start()
    deadline = time.monotonic() + timeout
    while not any(marker in line for line in list(lines)):
        assert process.poll() is None, "".join(lines)
        assert time.monotonic() < deadline, "".join(lines)
        time.sleep(0.05)
    return "".join(lines)


@pytest.mark.timeout(60)
def test_keep_leaves_the_cluster_reachable_until_ctrl_c() -> None:
    process = subprocess.Popen([sys.executable, "-m", "emulator.demo", "--fast", "--keep"], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output = _read_until(process, "Stop: Ctrl-C", 45)
        assert "live devices: 3 (kept running), duplicates: 0" in output
        assert "[5/5]" not in output  # nothing is deleted
        sim = re.search(r"Equinix Metal simulator\s+(http://\S+)/metal/v1", output).group(1)  # type: ignore[union-attr]
        hooks = re.search(r"Hook server \(gunicorn\)\s+(http://\S+)", output).group(1)  # type: ignore[union-attr]
        listing = re.search(r"curl -s -H 'X-Auth-Token: (\S+)' '(\S+)'", output)
        assert listing is not None
        devices = requests.get(listing.group(2), headers={"X-Auth-Token": listing.group(1)}, timeout=5).json()
        assert len(devices["devices"]) == 3
        assert requests.get(hooks + "/healthz", timeout=5).status_code == 200
        request_file = re.search(r"--data @(\S+) ", output).group(1)  # type: ignore[union-attr]
        bearer = re.search(r"-H '(Authorization: Bearer \S+)'", output).group(1)  # type: ignore[union-attr]
        unauthenticated = requests.post(hooks + "/machine/sync", data=Path(request_file).read_bytes(),
                                        headers={"Content-Type": "application/json"}, timeout=10)
        assert unauthenticated.status_code == 401  # the demo runs the hooks as an installation does
        answer = requests.post(hooks + "/machine/sync", data=Path(request_file).read_bytes(),
                               headers={"Content-Type": "application/json",
                                        "Authorization": bearer.split(": ", 1)[1]}, timeout=10)
        assert answer.status_code == 200
        assert answer.json()["status"]["currentStatus"]["phase"] == "Running"
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
        for url in (sim + "/_sim/state", hooks + "/healthz"):
            with pytest.raises(requests.ConnectionError):
                requests.get(url, timeout=2)
        assert not Path(request_file).exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
