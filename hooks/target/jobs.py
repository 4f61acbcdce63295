"""The target cluster's kubeconfig, mounted into the Jobs the Machine hook declares (issue 17).

Why: the drain and Node-side Jobs run in the Machine's namespace of the control cluster (Metacontroller only creates
what a hook returns, in the parent's namespace), but their work is on Nodes, which live in the target cluster when
the namespace names one. The Job's programs (`python -m drain`, `python -m nodejobs`) talk to the cluster that
KUBECONFIG names when it is set (drain/kube.py), so every Job attachment gets the same two additions:

* a read-only Secret volume `target-kubeconfig` of the namespace's labelled Secret (its `kubeconfig` key only, as
  the file `kubeconfig`, mode 0440 for the pod's fsGroup), mounted at TARGET_JOB_MOUNT_PATH in every container;
* `KUBECONFIG=<TARGET_JOB_MOUNT_PATH>/kubeconfig` in every container's environment.

The admission policies of the drain and Node-side accounts (kubernetes/drain/admission-policy.yaml,
kubernetes/node-jobs/admission-policy.yaml) admit exactly this volume, mount and variable. `mount` is pure and
idempotent: Metacontroller compares what a hook declares with what it applied, so applying it twice, or to a Job
observed with the mount already there, gives an equal Job.

API:

    job = mount(job, secret_name)           # a new dict; the input is left as it was
    secret_name(related, namespace)         # the labelled Secret's name, None without one (TargetConfigError if bad)
    mounted_secret(job)                     # the Secret a Job mounts as the target kubeconfig, None if none
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from hooks import objects
from hooks.target.kubeconfig import KUBECONFIG_KEY, from_related

TARGET_JOB_MOUNT_PATH = "/etc/metal-machine-hooks/target-kubeconfig"
TARGET_JOB_VOLUME = "target-kubeconfig"
KUBECONFIG_ENV = "KUBECONFIG"
KUBECONFIG_PATH = f"{TARGET_JOB_MOUNT_PATH}/{KUBECONFIG_KEY}"
FILE_MODE = 0o440  # owner and the pod's fsGroup: the program's group reads it, nobody else
DEFAULT_FS_GROUP = 10001  # the hook image's user and group (Dockerfile), when the pod names no group

Obj = dict[str, Any]


def secret_name(related: Mapping[str, Any] | None, namespace: str) -> str | None:
    """The name of the namespace's target kubeconfig Secret among the related objects; None: no target.

    The Secret must parse (hooks/target/kubeconfig.py raises TargetConfigError otherwise): a Job must not be
    pointed at a kubeconfig the hooks themselves refuse.
    """
    config = from_related(related, namespace)
    return None if config is None else name_of(config.source)


def name_of(source: str) -> str:
    """The Secret's name from a kubeconfig's source ("namespace/name", TargetConfig.source and TargetRead.source)."""
    return source.rpartition("/")[2]


def mount(job: Mapping[str, Any], secret_name: str) -> Obj:
    """The Job with the target kubeconfig Secret mounted and KUBECONFIG set in every container (a new dict)."""
    if not secret_name:
        raise ValueError("mount needs the name of the target kubeconfig Secret")
    out: Obj = copy.deepcopy(dict(job))
    pod = out.setdefault("spec", {}).setdefault("template", {}).setdefault("spec", {})
    volume = {"name": TARGET_JOB_VOLUME, "secret": {
        "secretName": secret_name, "defaultMode": FILE_MODE,
        "items": [{"key": KUBECONFIG_KEY, "path": KUBECONFIG_KEY}]}}
    pod["volumes"] = _put(pod.get("volumes"), volume)
    security = pod.setdefault("securityContext", {})
    if "fsGroup" not in security:  # the kubelet gives the file to this group: mode 0440 is readable by the program
        security["fsGroup"] = security.get("runAsGroup", DEFAULT_FS_GROUP)
    for key in ("initContainers", "containers"):
        for container in pod.get(key) or []:
            if not isinstance(container, dict):
                continue
            container["volumeMounts"] = _put(container.get("volumeMounts"), {
                "name": TARGET_JOB_VOLUME, "mountPath": TARGET_JOB_MOUNT_PATH, "readOnly": True})
            container["env"] = _put(container.get("env"), {"name": KUBECONFIG_ENV, "value": KUBECONFIG_PATH})
    return out


def mounted_secret(job: Mapping[str, Any]) -> str | None:
    """The Secret a Job mounts as the target kubeconfig (the emulator's Job runners act on the target for it)."""
    pod = objects.mapping(job, "spec", "template", "spec")
    for volume in objects.mappings(pod, "volumes"):
        if volume.get("name") == TARGET_JOB_VOLUME:
            name = objects.mapping(volume, "secret").get("secretName")
            return str(name) if name else None
    return None


def _put(items: Any, entry: Obj) -> list[Any]:
    """`items` with the entry of the same name replaced in place (or appended): a second mount changes nothing."""
    listed = list(items) if isinstance(items, list) else []
    for index, item in enumerate(listed):
        if isinstance(item, dict) and item.get("name") == entry["name"]:
            listed[index] = entry
            return listed
    return [*listed, entry]
