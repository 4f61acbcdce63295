"""Stand-in for the kubelets that a device's userData would start: Nodes join the store as devices turn active.

Why: the Machine hooks judge health from the Node (Ready condition, `kubernetes.io/hostname`), and nothing in the
emulated cluster would otherwise create one. The joiner reads the Metal simulator through its admin API
(`GET <base_url>/_sim/state`), so it sees exactly what a booted machine would, and knobs let tests make a
Node NotReady or make it vanish.

API:

    joiner = NodeJoiner(store, "http://127.0.0.1:PORT", ready_delay=0.0, poll_interval=0.1, heartbeat_period=0.0)
    joiner.tick()                       # one poll: create / ready / delete Nodes
    joiner.start(); joiner.stop()       # the same in a background thread
    joiner.set_ready(name, "False")     # pin Ready to "True" | "False" | "Unknown" (None: back to automatic)
    joiner.remove(name, rejoin=False)   # delete the Node; with rejoin=False it stays away while the device lives
    joiner.allow_rejoin(name)

Nodes: cluster-scoped v1 Node named after the device hostname, with a providerID in one of the two forms real
clusters show (Equinix's cloud-controller-manager writes `equinixmetal://<id>`, MCM's provider
`equinixmetal://<metro>/<id>`; which one is fixed per device by its id, so a fleet has both), the device's addresses
(public ones as ExternalIP, private IPv4 as InternalIP, plus the Hostname), labels `kubernetes.io/hostname`,
`node.kubernetes.io/instance-type` (plan) and `topology.kubernetes.io/region` (metro), condition Ready=False on
join, Ready=True after `ready_delay` seconds, Ready=Unknown while the device is in any state but active (powered
off, reinstalling, deprovisioning: the kubelet stops posting). A Node whose device is gone is deleted, standing in
for the cloud node lifecycle controller; Nodes without an `equinixmetal://` providerID are never touched. With
`heartbeat_period` > 0 the kubelet also reports status at that period while it posts (Ready True or False):
lastHeartbeatTime moves, nothing else does (`heartbeats` counts those writes).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import requests

from emulator.poller import Poller
from emulator.store import Conflict, NotFound, Store, format_time, utc_now

Obj = dict[str, Any]
PROVIDER_PREFIX = "equinixmetal://"
GONE_STATES = {"deleted"}


def short_form(device_id: str) -> bool:
    """Whether this device's Node gets the cloud-controller-manager's `equinixmetal://<id>` (about half do)."""
    return sum(device_id.encode()) % 2 == 0


def provider_id(device: Obj) -> str:
    """The Node's providerID: either form, fixed per device, so the hooks must accept both (hooks/mcm/node_proof)."""
    if short_form(str(device["id"])):
        return f"{PROVIDER_PREFIX}{device['id']}"
    metro = device.get("metro")
    code = metro.get("code") if isinstance(metro, dict) else metro
    return f"{PROVIDER_PREFIX}{code or ''}/{device['id']}"


def node_addresses(name: str, device: Obj) -> list[dict[str, str]]:
    """What a kubelet with the cloud provider reports: private IPv4 as InternalIP, public addresses as ExternalIP."""
    found: list[dict[str, str]] = []
    for ip in device.get("ip_addresses") or ():
        if not isinstance(ip, dict) or not isinstance(ip.get("address"), str) or ip.get("enabled") is False:
            continue
        private = ip.get("public") is False
        if private and ip.get("address_family") != 4:
            continue
        found.append({"type": "InternalIP" if private else "ExternalIP", "address": ip["address"]})
    found.sort(key=lambda a: (a["type"] != "InternalIP", ":" in a["address"]))
    return [*found, {"type": "Hostname", "address": name}]


class NodeJoiner(Poller):
    thread_name = "node-joiner"

    def __init__(
        self,
        store: Store,
        sim_base_url: str,
        *,
        ready_delay: float = 0.0,
        poll_interval: float = 0.1,
        heartbeat_period: float = 0.0,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = utc_now,
        session: requests.Session | None = None,
        delete_gone: bool = True,
    ) -> None:
        """`delete_gone=False`: no cloud node lifecycle controller; a Node whose device is gone stays until someone
        (the Machine's `node remove` Job, docs/nodes.md) deletes it."""
        super().__init__(poll_interval)
        self.delete_gone = delete_gone
        self.store = store
        self.sim_base_url = sim_base_url.rstrip("/")
        self.ready_delay = ready_delay
        self.heartbeat_period = heartbeat_period  # > 0: kubelet status reports at this period (Ready True/False)
        self._beats: dict[str, float] = {}
        self.heartbeats = 0  # status reports that changed nothing but lastHeartbeatTime
        self._now = monotonic
        self._wall = wall
        self._session = session or requests.Session()
        self._joined_at: dict[str, float] = {}
        self._pinned: dict[str, str] = {}
        self._removed: set[str] = set()
        self._lock = threading.Lock()
        self.errors: list[str] = []

    # ------------------------------------------------------------ knobs

    def set_ready(self, name: str, status: str | None) -> None:
        """Pin the Ready condition ("True", "False", "Unknown"); None returns it to the automatic value."""
        with self._lock:
            if status is None:
                self._pinned.pop(name, None)
            else:
                self._pinned[name] = status
        self.tick()

    def remove(self, name: str, *, rejoin: bool = False) -> None:
        with self._lock:
            if not rejoin:
                self._removed.add(name)
            self._joined_at.pop(name, None)
        with contextlib.suppress(NotFound):
            self.store.delete("v1", "Node", name)

    def allow_rejoin(self, name: str) -> None:
        with self._lock:
            self._removed.discard(name)

    # ------------------------------------------------------------ loop

    def _poll(self) -> None:
        try:
            self.tick()
        except (requests.RequestException, ValueError) as exc:  # the simulator restarting: try again next round
            self.errors.append(str(exc))

    def devices(self) -> list[Obj]:
        response = self._session.get(f"{self.sim_base_url}/_sim/state", timeout=5)
        response.raise_for_status()
        state = response.json()
        return list(state.get("devices", []) if isinstance(state, dict) else state)

    def tick(self) -> None:
        """One reconciliation of Nodes against the simulator's live devices."""
        live = {d["hostname"]: d for d in self.devices()
                if d.get("hostname") and d.get("state") not in GONE_STATES}
        for node in self.store.list("v1", "Node"):
            name = node["metadata"]["name"]
            pid = (node.get("spec") or {}).get("providerID", "")
            if not pid.startswith(PROVIDER_PREFIX):
                continue
            device = live.get(name)
            if name in self._removed or (self.delete_gone and (device is None or provider_id(device) != pid)):
                with contextlib.suppress(NotFound):
                    self.store.delete("v1", "Node", name)
                with self._lock:
                    self._joined_at.pop(name, None)
        for name, device in live.items():
            if device.get("state") != "active" and self.store.try_get("v1", "Node", name) is None:
                continue
            with self._lock:
                if name in self._removed:
                    continue
                self._joined_at.setdefault(name, self._now())
                joined = self._joined_at[name]
                pinned = self._pinned.get(name)
            if device.get("state") != "active":
                automatic = "Unknown"  # powered off, reinstalling, deprovisioning: the kubelet stopped posting
            else:
                automatic = "True" if self._now() - joined >= self.ready_delay else "False"
            ready = pinned or automatic
            self._reconcile(name, device, ready)

    def _reconcile(self, name: str, device: Obj, ready: str) -> None:
        node = self.store.try_get("v1", "Node", name)
        if node is None:
            node = self.store.create({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": name, "labels": self._labels(name, device)},
                "spec": {"providerID": provider_id(device)},
            })
        conditions = (node.get("status") or {}).get("conditions") or []
        current = next((c for c in conditions if c.get("type") == "Ready"), None)
        now = self._now()
        if current is not None and current.get("status") == ready:
            # Report k of a Node falls k periods after it joined, so a fleet's reports spread over the period.
            period, joined = self.heartbeat_period, self._joined_at.get(name, now)
            last = self._beats.setdefault(name, now)
            due = period > 0 and ready != "Unknown" and (now - joined) // period > (last - joined) // period
            if due:
                self._heartbeat(name, node, current)
            return
        stamp = format_time(self._wall())
        reason = {"True": "KubeletReady", "False": "KubeletNotReady", "Unknown": "NodeStatusUnknown"}[ready]
        message = {"True": "kubelet is posting ready status", "False": "container runtime network not ready",
                   "Unknown": "Kubelet stopped posting node status."}[ready]
        node["status"] = {
            **(node.get("status") or {}),
            "conditions": [c for c in conditions if c.get("type") != "Ready"] + [{
                "type": "Ready", "status": ready, "reason": reason, "message": message,
                "lastHeartbeatTime": stamp, "lastTransitionTime": stamp,
            }],
            "addresses": node_addresses(name, device),
        }
        with contextlib.suppress(Conflict, NotFound):  # the next tick retries
            self.store.update_status(node)
            self._beats[name] = now

    def _heartbeat(self, name: str, node: Obj, ready: Obj) -> None:
        """A kubelet's periodic status report: the conditions are unchanged, lastHeartbeatTime moves."""
        stamp = format_time(self._wall())
        conditions = [c if c is not ready else {**c, "lastHeartbeatTime": stamp}
                      for c in node["status"]["conditions"]]
        node["status"] = {**node["status"], "conditions": conditions}
        with contextlib.suppress(Conflict, NotFound):  # the next tick retries
            self.store.update_status(node)
            self._beats[name] = self._now()
            self.heartbeats += 1

    @staticmethod
    def _labels(name: str, device: Obj) -> dict[str, str]:
        labels = {"kubernetes.io/hostname": name}
        plan = device.get("plan")
        slug = plan.get("slug") if isinstance(plan, dict) else plan
        metro = device.get("metro")
        code = metro.get("code") if isinstance(metro, dict) else metro
        if slug:
            labels["node.kubernetes.io/instance-type"] = str(slug)
        if code:
            labels["topology.kubernetes.io/region"] = str(code)
        return labels
