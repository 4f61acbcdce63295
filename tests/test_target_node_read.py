"""The hook's one call: no Secret means one cluster; any target failure becomes a read that freezes, never a crash."""

from __future__ import annotations

import base64
import json
from typing import Any

from hooks.target.api import TargetUnavailable
from hooks.target.freeze import UNREACHABLE_SINCE_ANNOTATION
from hooks.target.kubeconfig import TARGET_LABEL, TargetConfig
from hooks.target.node_read import machine_view, read_node

TOKEN = "node-read-canary-token-0123456789"
NODE = {"kind": "Node", "metadata": {"name": "m1"}}


def related(user: dict[str, Any]) -> dict[str, Any]:
    text = json.dumps({"clusters": [{"name": "t", "cluster": {"server": "https://t.example"}}],
                       "contexts": [{"name": "c", "context": {"cluster": "t", "user": "u"}}],
                       "current-context": "c", "users": [{"name": "u", "user": user}]})
    secret = {"kind": "Secret", "metadata": {"name": "k", "namespace": "ns", "labels": {TARGET_LABEL: "true"}},
              "data": {"kubeconfig": base64.b64encode(text.encode()).decode()}}
    return {"Secret.v1": {"ns/k": secret}}


class FakeReader:
    def __init__(self, config: TargetConfig, answer: Any) -> None:
        self.config, self.answer, self.closed, self.asked = config, answer, False, []

    def get_node(self, name: str, *, deadline: float) -> Any:
        self.asked.append((name, deadline))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    def close(self) -> None:
        self.closed = True


def test_no_target_secret_means_the_control_cluster() -> None:
    assert read_node({"Secret.v1": {}}, "ns", "m1", deadline=5) is None
    assert read_node(related({"token": TOKEN}), "other-namespace", "m1", deadline=5) is None


def test_the_node_is_read_with_the_deadline_and_the_secrets_registered() -> None:
    made: list[FakeReader] = []
    registered: list[str] = []

    def factory(config: TargetConfig) -> Any:
        made.append(FakeReader(config, NODE))
        return made[-1]

    read = read_node(related({"token": TOKEN}), "ns", "m1", deadline=4.5, reader=factory,
                     register_secret=registered.append)
    assert read is not None and read.reachable and read.node == NODE
    assert made[0].asked == [("m1", 4.5)] and made[0].closed
    assert TOKEN in registered


def test_an_unreachable_target_or_unusable_kubeconfig_is_a_read_that_freezes() -> None:
    down = read_node(related({"token": TOKEN}), "ns", "m1", deadline=1,
                     reader=lambda c: FakeReader(c, TargetUnavailable("GET node m1: refused", "unreachable")))
    assert down is not None and not down.reachable and down.kind == "unreachable" and "refused" in down.message
    bad = read_node(related({"exec": {"command": "x"}}), "ns", "m1", deadline=1)
    assert bad is not None and not bad.reachable and bad.kind == "config" and "exec" in bad.message


def test_the_machine_view_reads_deletion_and_the_unreachable_mark() -> None:
    machine = {"metadata": {"deletionTimestamp": "2026-12-03T09:00:00Z",
                            "annotations": {UNREACHABLE_SINCE_ANNOTATION: "2026-12-03T08:59:00Z"}}}
    view = machine_view(machine, drain_expired=True)
    assert (view.deleting, view.drain_expired, view.unreachable_since) == (True, True, "2026-12-03T08:59:00Z")
    assert machine_view({"metadata": {}}).unreachable_since is None
