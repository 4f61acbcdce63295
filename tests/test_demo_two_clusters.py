"""`make demo DEMO_ARGS=--two-clusters`: Nodes join the target cluster, are read from there, and the output says
plainly that the Machine hook is not wired to the target yet."""

from __future__ import annotations

import io

import pytest

from emulator.demo import Demo, Timing

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_the_two_cluster_demo_shows_where_nodes_live_and_what_is_not_wired() -> None:
    out = io.StringIO()
    assert Demo(Timing.fast(), out=out, tty=False, two_clusters=True).run() == 0
    text = out.getvalue()
    assert "Nodes in the control cluster: 0; in the target cluster: 1" in text
    assert "Ready=True" in text and "(Secret default/target-kubeconfig)" in text
    assert "NOT YET WIRED" in text
    assert "leaked devices: 0, duplicates: 0" in text
