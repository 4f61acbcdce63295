"""The one call the Machine hook makes per sync/finalize in the two-cluster topology (issue 17 seam).

Why a separate module: it joins the three pieces (kubeconfig from the related Secrets, the bounded reader, the
freeze decision's input) so the hook's wiring is two lines, and it turns every failure into a TargetRead instead of
an exception: an unusable kubeconfig or an unreachable target must freeze the Machine, never fail the hook call.

    read = read_node(body["related"], namespace, machine_name, deadline=seconds_left)
    if read is None: ...  # no target Secret: the Node comes from `related` as today (one cluster)
    decision = freeze.decide(read, machine_view(machine, drain_expired=...), now)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from hooks import objects
from hooks.target.api import TargetReader, TargetUnavailable
from hooks.target.freeze import UNREACHABLE_SINCE_ANNOTATION, MachineView, TargetRead
from hooks.target.kubeconfig import TargetConfig, TargetConfigError, from_related

ReaderFactory = Callable[[TargetConfig], TargetReader]


def read_node(
    related: Mapping[str, Any] | None,
    namespace: str,
    node_name: str,
    *,
    deadline: float,
    reader: ReaderFactory = TargetReader,
    register_secret: Callable[[str], None] | None = None,
) -> TargetRead | None:
    """The Machine's Node from its namespace's target cluster; None when the namespace names no target."""
    try:
        config = from_related(related, namespace)
    except TargetConfigError as exc:
        return TargetRead(False, kind="config", message=str(exc))
    if config is None:
        return None
    if register_secret is not None:
        for secret in config.secrets():
            register_secret(secret)
    client = reader(config)
    try:
        return TargetRead(True, client.get_node(node_name, deadline=deadline), source=config.source)
    except TargetUnavailable as exc:
        return TargetRead(False, kind=exc.kind, message=str(exc), source=config.source)
    finally:
        client.close()


def machine_view(machine: Mapping[str, Any], *, drain_expired: bool = False) -> MachineView:
    """The freeze decision's view of a Machine: deleting, the drain clock, the unreachable-since annotation."""
    meta = objects.meta(machine)
    annotations = objects.annotations(machine)
    since = annotations.get(UNREACHABLE_SINCE_ANNOTATION)
    return MachineView(deleting=bool(meta.get("deletionTimestamp")), drain_expired=drain_expired,
                       unreachable_since=since if isinstance(since, str) and since else None)
