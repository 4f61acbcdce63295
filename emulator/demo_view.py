"""What `make demo` shows: the live tables and the final summary, as pure functions of one observation.

Why separate: the demo's processes and timing are I/O, but what a user reads (and what the test checks) is a
function of the cluster's objects and the simulator's devices at one moment, so it is built and tested here
without any server.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hooks.equinix.tags import owner_uid
from hooks.mcm.machine import DEVICE_ID_ANNOTATION

Obj = dict[str, Any]
MACHINE_API = "machine.sapcloud.io/v1alpha1"


@dataclass(frozen=True)
class Observation:
    """One look at the emulated cluster and the simulator (`GET /_sim/state`)."""

    machines: list[Obj]
    machinesets: list[Obj]
    deployments: list[Obj]
    devices: list[Obj]                       # live devices (any state but deleted)
    deleted: list[Obj] = field(default_factory=list)
    nodes: list[Obj] = field(default_factory=list)

    def ours(self) -> list[Obj]:
        """Live devices carrying our ownership tags: the ones a Machine is responsible for."""
        return [d for d in self.devices if owner_uid(d.get("tags") or []) is not None]

    def device_of(self, machine: Obj) -> Obj | None:
        device_id = annotations_of(machine).get(DEVICE_ID_ANNOTATION)
        uid = meta(machine).get("uid")
        for device in self.devices:
            if (device_id and device.get("id") == device_id) or (uid and owner_uid(device.get("tags") or []) == uid):
                return device
        return None


def meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def annotations_of(obj: Obj) -> Obj:
    return meta(obj).get("annotations") or {}


def status(obj: Obj) -> Obj:
    return obj.get("status") or {}


def phase(machine: Obj) -> str:
    return (status(machine).get("currentStatus") or {}).get("phase") or ""


def last_operation(machine: Obj) -> str:
    return (status(machine).get("lastOperation") or {}).get("description") or ""


def node_text(machine: Obj, nodes: Iterable[Obj]) -> str:
    """The Machine's Node and its Ready condition; the name only when it differs from the Machine's (it rarely
    does: Nodes are named after the device hostname, which is the Machine name)."""
    name = (meta(machine).get("labels") or {}).get("node") or status(machine).get("node") or ""
    if not name:
        return "-"
    node = next((n for n in nodes if meta(n).get("name") == name), None)
    if node is None:
        ready = "not joined"
    else:
        condition: Obj = next((c for c in status(node).get("conditions") or [] if c.get("type") == "Ready"), {})
        ready = {"True": "Ready", "False": "NotReady"}.get(str(condition.get("status")), "Unknown")
    return ready if name == meta(machine).get("name") else f"{name} {ready}"


def plan_of(device: Obj) -> str:
    plan = device.get("plan")
    return (plan.get("slug") or "") if isinstance(plan, dict) else str(plan or "")


def _count(value: Any) -> str:
    return str(value) if isinstance(value, int) else "0"


def _conditions(deployment: Obj) -> str:
    parts = []
    for condition in status(deployment).get("conditions") or []:
        text = f"{condition.get('type')}={condition.get('status')}"
        if condition.get("reason"):
            text += f"({condition['reason']})"
        parts.append(text)
    return " ".join(parts) or "-"


def machine_rows(obs: Observation) -> list[list[str]]:
    rows = []
    for machine in sorted(obs.machines, key=lambda m: meta(m).get("name", "")):
        device = obs.device_of(machine)
        state = str(device.get("state") or "") if device else ""
        percent = ""
        if device and state == "provisioning" and isinstance(device.get("provisioning_percentage"), int | float):
            percent = f"{device['provisioning_percentage']:.0f}%"
        elif state == "active":
            percent = "100%"
        name = meta(machine).get("name", "")
        shown_phase = phase(machine) or "-"
        if meta(machine).get("deletionTimestamp") and shown_phase != "Terminating":
            shown_phase += " (deleting)"
        device_id = annotations_of(machine).get(DEVICE_ID_ANNOTATION) or (device or {}).get("id") or ""
        cls = ((machine.get("spec") or {}).get("class") or {}).get("name", "")
        rows.append([name, cls, shown_phase, node_text(machine, obs.nodes), device_id[:8] or "-", state or "-",
                     percent or "-", last_operation(machine) or "-"])
    return rows


def machineset_rows(obs: Observation) -> list[list[str]]:
    return [[meta(s).get("name", ""), _count((s.get("spec") or {}).get("replicas")), _count(status(s).get("replicas")),
             _count(status(s).get("readyReplicas")), _count(status(s).get("availableReplicas"))]
            for s in sorted(obs.machinesets, key=lambda s: meta(s).get("name", ""))]


def deployment_rows(obs: Observation) -> list[list[str]]:
    rows = []
    for d in sorted(obs.deployments, key=lambda d: meta(d).get("name", "")):
        st = status(d)
        desired = _count((d.get("spec") or {}).get("replicas"))
        rows.append([meta(d).get("name", ""), f"{_count(st.get('readyReplicas'))}/{desired}", desired,
                     _count(st.get("updatedReplicas")), _count(st.get("availableReplicas")), _conditions(d)])
    return rows


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], width: int) -> list[str]:
    """Left-aligned columns two spaces apart; the last column is cut to fit `width`."""
    rows = [list(r) for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    lines = []
    for cells in [list(headers), *rows]:
        text = "  ".join(c.ljust(w) for c, w in zip(cells[:-1], widths[:-1], strict=True))
        text = (text + "  " + cells[-1]).rstrip()
        lines.append(clip(text, width))
    return lines


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 3, 0)] + "..."


def render(obs: Observation, *, width: int = 160, volatile: bool = True) -> list[str]:
    """The three tables. volatile=False blanks what moves on its own (PROV%), to tell real changes apart."""
    machines = machine_rows(obs)
    if not volatile:
        for row in machines:
            row[6] = ""
    lines = [f"Machines ({len(obs.machines)})"]
    lines += table(["NAME", "CLASS", "PHASE", "NODE", "DEVICE", "DEVICE STATE", "PROV%", "LAST OPERATION"],
                   machines, width) if machines else ["  (none)"]
    lines += ["", f"MachineSets ({len(obs.machinesets)})"]
    sets = machineset_rows(obs)
    lines += table(["NAME", "DESIRED", "CURRENT", "READY", "AVAILABLE"], sets, width) if sets else ["  (none)"]
    lines += ["", f"MachineDeployments ({len(obs.deployments)})"]
    deps = deployment_rows(obs)
    lines += (table(["NAME", "READY", "DESIRED", "UP-TO-DATE", "AVAILABLE", "CONDITIONS"], deps, width)
              if deps else ["  (none)"])
    others = len(obs.devices) - len(obs.ours())
    lines += ["", f"Simulator: {len(obs.ours())} live devices of ours"
                  + (f", {others} others" if others else "") + f", {len(obs.deleted)} deleted"]
    return lines


def stuck_report(obs: Observation) -> list[str]:
    """What to print when a step times out: every Machine's phase and last operation, in full."""
    lines = []
    for machine in sorted(obs.machines, key=lambda m: meta(m).get("name", "")):
        op = status(machine).get("lastOperation") or {}
        lines.append(f"  {meta(machine).get('name')}: phase {phase(machine) or '-'}, "
                     f"lastOperation {op.get('type', '-')}/{op.get('state', '-')}: {op.get('description', '-')}")
    for d in obs.deployments:
        lines.append(f"  MachineDeployment {meta(d).get('name')}: {_conditions(d)}")
    return lines or ["  (no Machines)"]


# ---------------------------------------------------------------- summary

def device_checks(all_devices: Iterable[Obj], live: Iterable[Obj]) -> tuple[int, int]:
    """(leaked, duplicates): live devices of ours left, and extra devices ever created for one Machine."""
    leaked = sum(1 for d in live if owner_uid(d.get("tags") or []) is not None)
    per_machine = Counter(owner_uid(d.get("tags") or []) for d in all_devices)
    per_machine.pop(None, None)
    return leaked, sum(n - 1 for n in per_machine.values() if n > 1)


def hook_call_counts(events: Iterable[Obj]) -> dict[tuple[str, str], Counter[str]]:
    """Hook calls from the emulator's event log: (controller, hook) -> outcome counts."""
    counts: dict[tuple[str, str], Counter[str]] = {}
    for event in events:
        if event.get("hook"):
            counts.setdefault((event["controller"], event["hook"]), Counter())[event.get("outcome") or "?"] += 1
    return counts


@dataclass
class NodeSide:
    """What the Node-side Jobs did, seen from the store's watch: bootstrap token Secrets in kube-system (their
    names hold the token id, never the secret half); and the Nodes the `node remove` Jobs deleted after their
    devices (docs/nodes.md), from the Jobs' output (the Node joiner also deletes Nodes, as a cloud controller would).
    """

    tokens_created: list[str] = field(default_factory=list)
    tokens_deleted: list[str] = field(default_factory=list)
    nodes_removed: list[str] = field(default_factory=list)

    def record(self, event: Any) -> None:
        obj = event.object
        meta = obj.get("metadata") or {}
        name = str(meta.get("name") or "")
        if obj.get("kind") == "Secret" and meta.get("namespace") == "kube-system" \
                and name.startswith("bootstrap-token-"):
            if event.type == "ADDED":
                self.tokens_created.append(name.removeprefix("bootstrap-token-"))
            elif event.type == "DELETED":
                self.tokens_deleted.append(name.removeprefix("bootstrap-token-"))

    def removed_by_jobs(self, job_logs: Iterable[str]) -> None:
        self.nodes_removed = [found[1] for text in job_logs
                              if (found := re.search(r'Deletion of Node Object "([^"]+)" is successful', text))]

    def lines(self) -> list[str]:
        shown = ", ".join(self.tokens_created[:4]) + (" ..." if len(self.tokens_created) > 4 else "")
        return [f"  bootstrap tokens (<<BOOTSTRAP_TOKEN>> in userData): {len(self.tokens_created)} created in "
                f"kube-system (token ids {shown or '-'}), {len(self.tokens_deleted)} deleted after their Node joined "
                "or their Machine went; the secret halves are only in the devices' userData and the Secrets",
                f"  Nodes removed by their Machines after the devices (node remove Jobs): {len(self.nodes_removed)}"
                + (f" ({', '.join(self.nodes_removed[:4])}{' ...' if len(self.nodes_removed) > 4 else ''})"
                   if self.nodes_removed else "")]


def summary(*, state: Obj, calls: Obj, events: Iterable[Obj], peak_machines: int,
            phases: Sequence[tuple[str, float]], total_seconds: float, deleted_all: bool,
            node_side: NodeSide | None = None) -> list[str]:
    """The closing report. `state` and `calls` are the simulator's /_sim/state and /_sim/calls answers."""
    live = state.get("devices") or []
    gone = state.get("deleted") or []
    ours_ever = [d for d in [*live, *gone] if owner_uid(d.get("tags") or []) is not None]
    ours_gone = [d for d in gone if owner_uid(d.get("tags") or []) is not None]
    leaked, duplicates = device_checks(ours_ever, live)
    lines = ["Summary", f"  devices created: {len(ours_ever)}, deleted: {len(ours_gone)}, live now: {leaked}",
             f"  peak machines: {peak_machines}", *(node_side.lines() if node_side else []),
             "  hook calls (controller hook: outcomes):"]
    for (controller, hook), outcomes in sorted(hook_call_counts(events).items()):
        detail = ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
        lines.append(f"    {controller} {hook}: {sum(outcomes.values())} ({detail})")
    lines.append("  Metal API calls (simulator):")
    responses = calls.get("responses") or {}
    for route, count in sorted((calls.get("calls") or {}).items()):
        statuses = {k[len(route) + 1:]: v for k, v in responses.items() if k.startswith(route + " ")}
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))
        lines.append(f"    {route}: {count}" + (f" ({detail})" if detail else ""))
    lines.append("  elapsed per phase:")
    for title, seconds in phases:
        lines.append(f"    {seconds:6.1f} s  {title}")
    lines.append(f"    {total_seconds:6.1f} s  total")
    if deleted_all:
        lines.append(f"leaked devices: {leaked}, duplicates: {duplicates}")
    else:
        lines.append(f"live devices: {leaked} (kept running), duplicates: {duplicates}")
    return lines


def snapshot(obs: Observation) -> dict[str, str]:
    """One short line per object (provisioning progress left out): what a log shows when the output is not a
    terminal, one line per change instead of a table per change."""
    lines: dict[str, str] = {}
    for name, cls, shown_phase, node, device, state, _, operation in machine_rows(obs):
        where = f"device {device} {state}" if device != "-" else "no device"
        lines[f"Machine {name}"] = f"{shown_phase}, class {cls or '-'}, node {node}, {where}: {clip(operation, 100)}"
    for name, desired, current, ready, available in machineset_rows(obs):
        lines[f"MachineSet {name}"] = f"desired {desired}, current {current}, ready {ready}, available {available}"
    for name, ready, _, updated, available, conditions in deployment_rows(obs):
        lines[f"MachineDeployment {name}"] = (f"ready {ready}, up-to-date {updated}, available {available}, "
                                              f"{conditions}")
    others = len(obs.devices) - len(obs.ours())
    lines["Simulator"] = (f"{len(obs.ours())} live devices of ours" + (f", {others} others" if others else "")
                          + f", {len(obs.deleted)} deleted")
    return lines


def changes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """The lines of `after` that are new or different from `before`, and the objects that went away, in a stable
    order (kind and name)."""
    found = [f"{key}: {text}" for key, text in sorted(after.items()) if before.get(key) != text]
    found += [f"{key}: gone" for key in sorted(before) if key not in after]
    return found
