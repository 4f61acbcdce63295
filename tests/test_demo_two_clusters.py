"""`make demo DEMO_ARGS=--two-clusters`: the whole flow of the one-cluster demo with the Machines in a control
cluster and their Nodes in a target cluster: Machines Running with their Nodes read from the target, the
MachineDeployment scaled and rolled out, drains, bootstrap tokens and Node removals acting there, every device gone."""

from __future__ import annotations

import io
import re

import pytest

from emulator.demo import Demo, Timing

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.timeout(120)
def test_the_two_cluster_demo_runs_the_whole_flow_with_nodes_in_the_target() -> None:
    out = io.StringIO()
    demo = Demo(Timing.fast(), out=out, tty=False, two_clusters=True)
    code = demo.run()
    text = out.getvalue()
    assert code == 0, text[-3000:]
    for step in ("[1/6] apply kubernetes/examples/", "[2/6] read the Nodes from the target cluster",
                 "[3/6] scale eqx-test-machine-deployment to 5", "[4/6] roll out: template class eqx-mc -> eqx-mc-v2",
                 "[5/6] scale eqx-test-machine-deployment to 2", "[6/6] delete Machine eqx-test-machine"):
        assert f"ok {step}" in text, step
    # After step 1: the standalone Machine and 3 of the deployment, every Node in the target, read from there.
    assert "Nodes in the control cluster: 0; in the target cluster: 4" in text
    assert re.search(r"4 of 4 Running Machines have a Ready Node read from http://127\.0\.0\.1:\d+ "
                     r"\(Secret default/target-kubeconfig\)", text)
    assert "devices created: 11, deleted: 11, live now: 0" in text
    assert "leaked devices: 0, duplicates: 0" in text
    found = re.search(r"target cluster API: (\d+) requests \(([^)]*)\), Nodes left in it: 0", text)
    assert found and int(found[1]) > 0 and "get nodes" in found[2], text[-3000:]
    # The Node side acted in the target: bootstrap tokens in its kube-system, Nodes removed by their Machines.
    tokens = re.search(r"bootstrap tokens \(<<BOOTSTRAP_TOKEN>> in userData\): (\d+) created", text)
    assert tokens and int(tokens[1]) == 11, text[-3000:]
    removed = re.search(r"Nodes removed by their Machines after the devices \(node remove Jobs\): (\d+)", text)
    assert removed and int(removed[1]) >= 1, text[-3000:]
    assert demo.target_api is not None and demo.target_token not in text
