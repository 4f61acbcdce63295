"""The state MCM leaves in a namespace, built in an emulator store and the Metal simulator, for the migration tests.

What MCM and its Equinix provider would have written: a credentials Secret without our label but with MCM's
finalizer, a MachineClass, a MachineDeployment at its second revision with two MachineSets (the old one scaled to
zero), Machines with `spec.providerID: equinixmetal://<facility>/<id>`, the `node` label and a Running status,
devices tagged only with the class's tags and named after their Machines, Nodes with MCM's finalizer, and MCM's own
Deployment scaled to zero. Finalizers are MCM's only: Metacontroller has not seen anything yet.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from emulator.store import Conflict, Store
from hooks.migrate.plan import MC_SECRET_FINALIZER, MCM_FINALIZER, MCM_NODE_FINALIZER

MACHINE_API = "machine.sapcloud.io/v1alpha1"
TOKEN = "mcm-era-token"
PROJECT = "4a1b2c3d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
CLASS_TAGS = ["kubernetes.io/cluster/shoot--dev--eqx", "kubernetes.io/role/node"]
Obj = dict[str, Any]

DEPLOYMENT_CRD: Obj = {
    # A stand-in for the built-in apps/v1 Deployment, which the emulator does not serve: MCM's own Deployment.
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "deployments.apps"},
    "spec": {"group": "apps", "scope": "Namespaced",
             "names": {"kind": "Deployment", "plural": "deployments", "singular": "deployment",
                       "listKind": "DeploymentList"},
             "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                           "schema": {"openAPIV3Schema": {"type": "object",
                                                          "x-kubernetes-preserve-unknown-fields": True}}}]},
}


@dataclass
class McmState:
    namespace: str
    machines: list[str] = field(default_factory=list)
    devices: dict[str, str] = field(default_factory=dict)  # machine name -> device id
    stray_device: str = ""  # a device with the class's tags and no Machine


def provider_spec(project: str = PROJECT) -> Obj:
    return {"projectID": project, "metro": "da", "machineType": "c3.small.x86", "billingCycle": "hourly",
            "OS": "ubuntu_22_04", "tags": list(CLASS_TAGS)}


def build_mcm_state(store: Store, sim: Any, namespace: str = "shoot--dev--eqx", *, replicas: int = 2,
                    mcm_replicas: int = 0, project: str = PROJECT, stray: bool = True) -> McmState:
    """MCM's leftovers in `namespace`; `sim` is an emulator.metal.MetalSimulator whose token TOKEN sees `project`."""
    state = McmState(namespace)
    if store.try_get("apiextensions.k8s.io/v1", "CustomResourceDefinition", "deployments.apps") is None:
        store.register_crd(DEPLOYMENT_CRD)
    store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    store.create({"apiVersion": "apps/v1", "kind": "Deployment",
                  "metadata": {"name": "machine-controller-manager", "namespace": namespace},
                  "spec": {"replicas": mcm_replicas}, "status": {"replicas": mcm_replicas}})
    store.create({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                  "metadata": {"name": "cloudprovider", "namespace": namespace, "finalizers": [MC_SECRET_FINALIZER]},
                  "data": {"apiToken": base64.b64encode(TOKEN.encode()).decode(),
                           "userData": base64.b64encode(b"#!/bin/sh\necho hello\n").decode()}})
    store.create({"apiVersion": MACHINE_API, "kind": "MachineClass",
                  "metadata": {"name": "eqx-small", "namespace": namespace, "finalizers": [MCM_FINALIZER]},
                  "provider": "EquinixMetal", "providerSpec": provider_spec(project),
                  "secretRef": {"name": "cloudprovider", "namespace": namespace}})
    selector = {"matchLabels": {"pool": "workers"}}
    template = {"metadata": {"labels": {"pool": "workers"}},
                "spec": {"class": {"kind": "MachineClass", "name": "eqx-small"}}}
    deployment = store.create({
        "apiVersion": MACHINE_API, "kind": "MachineDeployment",
        "metadata": {"name": "workers", "namespace": namespace, "finalizers": [MCM_FINALIZER],
                     "annotations": {"deployment.kubernetes.io/revision": "2"}},
        "spec": {"replicas": replicas, "selector": selector, "template": template,
                 "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}},
    })
    owner = {"apiVersion": MACHINE_API, "kind": "MachineDeployment", "name": "workers",
             "uid": deployment["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}
    sets = {}
    for revision, (hash_, count) in enumerate((("5d8f9c7b6", 0), ("7c6b5a4f3", replicas)), 1):
        labels = {"pool": "workers", "machine-template-hash": hash_}
        ms_template = {"metadata": {"labels": labels}, "spec": template["spec"]}
        if revision == 1:
            ms_template = {"metadata": {"labels": labels},
                           "spec": {"class": {"kind": "MachineClass", "name": "eqx-small"}, "nodeTemplate": {}}}
        sets[revision] = store.create({
            "apiVersion": MACHINE_API, "kind": "MachineSet",
            "metadata": {"name": f"workers-{hash_}", "namespace": namespace, "labels": labels,
                         "finalizers": [MCM_FINALIZER], "ownerReferences": [owner],
                         "annotations": {"deployment.kubernetes.io/revision": str(revision)}},
            "spec": {"replicas": count, "selector": {"matchLabels": labels}, "template": ms_template},
        })
    current = sets[2]
    ms_owner = {"apiVersion": MACHINE_API, "kind": "MachineSet", "name": current["metadata"]["name"],
                "uid": current["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}
    for index in range(replicas):
        name = f"{current['metadata']['name']}-{'abcdefghij'[index]}{index}x9z"
        device = sim.add_device(project, hostname=name, tags=list(CLASS_TAGS), state="active", metro="da")
        facility = device.get("facility", {}).get("code") or "da11"
        store.create({
            "apiVersion": MACHINE_API, "kind": "Machine",
            "metadata": {"name": name, "namespace": namespace, "finalizers": [MCM_FINALIZER],
                         "labels": {**current["spec"]["template"]["metadata"]["labels"], "node": name},
                         "annotations": {"machinepriority.machine.sapcloud.io": "3"},
                         "ownerReferences": [ms_owner]},
            "spec": {"class": {"kind": "MachineClass", "name": "eqx-small"},
                     "providerID": f"equinixmetal://{facility}/{device['id']}"},
        })
        machine = store.get(MACHINE_API, "Machine", name, namespace)
        machine["status"] = {"currentStatus": {"phase": "Running", "lastUpdateTime": "2026-12-01T10:00:00Z"},
                             "lastOperation": {"description": f"Machine {name} successfully joined the cluster in "
                                                              "4m12s", "state": "Successful", "type": "Create",
                                               "lastUpdateTime": "2026-12-01T10:00:00Z"}}
        store.update_status(machine)
        node = store.try_get("v1", "Node", name)
        if node is None:  # else the emulator's kubelet stand-in (emulator/nodes.py) was quicker
            node = store.create({"apiVersion": "v1", "kind": "Node",
                                 "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
                                 # As the kubelet and cloud provider would set it (and emulator/nodes.py keeps it).
                                 "spec": {"providerID": f"equinixmetal://da/{device['id']}"},
                                 "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
        for _ in range(20):  # the kubelet stand-in writes the Node's status meanwhile: retry on its conflicts
            node["metadata"]["finalizers"] = [MCM_NODE_FINALIZER]
            try:
                store.update(node)
                break
            except Conflict:
                node = store.get("v1", "Node", name)
        state.machines.append(name)
        state.devices[name] = device["id"]
    if stray:
        state.stray_device = sim.add_device(project, hostname="workers-lost-1", tags=list(CLASS_TAGS),
                                            state="active", metro="da")["id"]
    return state
