"""Jobs of a Machine whose Nodes live in a target cluster: the kubeconfig Secret mounted, KUBECONFIG pointing at it.

(Interim version by the lead for wiring; the t17 branch supplies the full one.)
"""

from __future__ import annotations

import copy
from typing import Any

TARGET_JOB_MOUNT_PATH = "/etc/metal-machine-hooks/target"
VOLUME = "target-kubeconfig"


def mount(job: dict[str, Any], secret_name: str) -> dict[str, Any]:
    """The Job with the target kubeconfig Secret mounted read-only and KUBECONFIG set; idempotent."""
    out = copy.deepcopy(job)
    pod = out.setdefault("spec", {}).setdefault("template", {}).setdefault("spec", {})
    volumes = [v for v in pod.get("volumes") or [] if v.get("name") != VOLUME]
    volumes.append({"name": VOLUME, "secret": {"secretName": secret_name}})
    pod["volumes"] = volumes
    for container in pod.get("containers") or []:
        mounts = [m for m in container.get("volumeMounts") or [] if m.get("name") != VOLUME]
        mounts.append({"name": VOLUME, "mountPath": TARGET_JOB_MOUNT_PATH, "readOnly": True})
        container["volumeMounts"] = mounts
        env = [e for e in container.get("env") or [] if e.get("name") != "KUBECONFIG"]
        env.append({"name": "KUBECONFIG", "value": f"{TARGET_JOB_MOUNT_PATH}/kubeconfig"})
        container["env"] = env
    return out
