"""Where a Machine's Node is read: its own cluster, or the target cluster its namespace names (docs/operations.md).

One cluster (no target kubeconfig Secret in the Machine's namespace): the Node is the related object Metacontroller
hands over, as always. Two clusters: the Node is read from the target's API once per sync or finalize (bounded by
the hook call's deadline), the related Node of the control cluster is ignored, and hooks.target.freeze decides what
may be concluded when the read fails: a Machine is frozen, never judged from a Node that could not be read.
Every Job the Machine hook declares in that topology gets the kubeconfig Secret mounted (hooks.target.jobs), so the
drain and Node-side programs act in the target.

The Node proof (hooks.mcm.node_proof) applies to the target's Node exactly as to a related one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

from hooks import deadline, events
from hooks.context import HookContext
from hooks.last_applied import kept
from hooks.mcm import machine_state as state
from hooks.mcm import vocabulary as mcm
from hooks.mcm.drain import drain_waived
from hooks.mcm.machine_outcome import Outcome, decide
from hooks.mcm.machine_request import HookRequest
from hooks.mcm.machine_status import observed_phase
from hooks.target import freeze, node_read
from hooks.target.api import TargetReader
from hooks.target.jobs import mount, name_of

log = logging.getLogger("hooks.machine")

# Longest a Node read may take (connect and read bounds are the reader's own); never more than the call has left.
READ_SECONDS = 8.0


@dataclass(frozen=True)
class NodeSource:
    """The request with the Node as read, and what the target said (None: one cluster)."""

    req: HookRequest
    decision: freeze.Decision | None = None
    secret: str = ""  # the kubeconfig Secret's name, mounted into every Job ("" : none)

    @property
    def action(self) -> freeze.Action:
        return self.decision.action if self.decision is not None else freeze.Action.JUDGE

    def annotations(self) -> dict[str, Any]:
        """The change to the unreachable-since mark: set while frozen, removed (None) once the target answers."""
        if self.decision is None:
            return {}
        current = self.req.annotations.get(freeze.UNREACHABLE_SINCE_ANNOTATION)
        if self.decision.since is not None:
            return {} if current == self.decision.since else {freeze.UNREACHABLE_SINCE_ANNOTATION: self.decision.since}
        return {} if current is None else {freeze.UNREACHABLE_SINCE_ANNOTATION: None}

    def jobs(self, attachments: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        """The Jobs as declared in this topology: with the target kubeconfig mounted when there is a target."""
        if attachments is None or not self.secret:
            return attachments
        return [mount(job, self.secret) if job.get("kind") == "Job" else job for job in attachments]


def observe(req: HookRequest, ctx: HookContext) -> NodeSource:
    """Read the Machine's Node where it lives; the decision says whether anything may be concluded from it."""
    if ctx.settings.no_target_cluster:
        return NodeSource(req)
    read = node_read.read_node(
        req.related, req.namespace, req.name,
        deadline=deadline.current().bound(READ_SECONDS, "reading the Node from the target cluster"),
        reader=ctx.target_reader or TargetReader,
        register_secret=lambda value: events.emit(events.SECRET_SEEN, value=value),
    )
    if read is None:
        return NodeSource(req)
    now = ctx.clock()
    view = node_read.machine_view(req.machine)
    if view.deleting:  # the drain clock only matters to a deletion
        view = replace(view, drain_expired=drain_waived(req.machine, ctx.settings.drain, now))
    decision = freeze.decide(read, view, now)
    events.emit(events.TARGET_DECISION, outcome=decision.metric)
    if decision.frozen:
        log.warning("machine %s/%s: %s", req.namespace, req.name, decision.operation)
    nodes = {req.name: decision.node} if decision.node is not None else {}
    seen = replace(req, related={**req.related, mcm.NODE_KEY: nodes})
    return NodeSource(seen, decision, name_of(read.source))


def frozen(req: HookRequest, ctx: HookContext, decision: freeze.Decision) -> Outcome:
    """The answer while the target cannot be read: phase kept, lastOperation says why, every Job kept as declared."""
    outcome = decide(req, ctx, state.TargetFrozen(decision.operation, decision.resync))
    outcome.attachments = kept(req.attachments)
    return outcome


def recovered(req: HookRequest, ctx: HookContext, decision: freeze.Decision) -> Outcome | None:
    """After a freeze, an Unknown Machine's health timeout restarts (MCM's unfreeze); None: judge as usual."""
    if decision.action is not freeze.Action.RECOVERED or observed_phase(req.status) != mcm.UNKNOWN:
        return None
    outcome = decide(req, ctx, state.HealthTimeoutReset(decision.operation, freeze.FROZEN_RESYNC))
    outcome.attachments = kept(req.attachments)
    return outcome
