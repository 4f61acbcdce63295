"""Secret volumes for the emulator's Job pods: the files a kubelet would mount, at a path the program can reach.

Why: the bootstrap token Jobs read their HMAC key from a file mounted from a Secret (`volumes[].secret`, the
container's `volumeMounts`). A pod here is a subprocess on this machine, so each mounted Secret is written to a
directory of the pod (mode 0400 files, `items` and `defaultMode` honoured) and every environment value and argument
that names a path under the mount path is pointed at that directory instead, as the pod's mount namespace would.
A missing Secret fails the pod with the kubelet's FailedMount message (a real pod would wait in ContainerCreating).

API:

    mounts = mount_secrets(store, pod, container, pod_dir / "volumes")   # {mountPath: local directory}
    env = relocate_env(env, mounts); args = relocate_args(args, mounts)
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

Obj = dict[str, Any]


class MountFailed(RuntimeError):
    """A volume the container mounts cannot be set up."""


def mount_secrets(store: Any, pod: Obj, container: Obj, root: Path) -> dict[str, str]:
    """Write each Secret volume the container mounts; returns mountPath -> local directory."""
    volumes = {v.get("name"): v for v in (pod.get("spec") or {}).get("volumes") or [] if isinstance(v, dict)}
    namespace = pod["metadata"]["namespace"]
    mounts: dict[str, str] = {}
    for mount in container.get("volumeMounts") or []:
        volume = volumes.get(mount.get("name"))
        source = (volume or {}).get("secret")
        if not isinstance(source, dict):
            continue
        name = source.get("secretName") or ""
        secret = store.try_get("v1", "Secret", name, namespace)
        if secret is None:
            if source.get("optional"):
                secret = {"data": {}}
            else:
                raise MountFailed(f'MountVolume.SetUp failed for volume "{mount.get("name")}" : '
                                  f'secret "{name}" not found')
        data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
        items = source.get("items")
        files = {i["path"]: data[i["key"]] for i in items if i.get("key") in data} if items else data
        target = root / str(mount.get("name"))
        target.mkdir(parents=True, exist_ok=True)
        for path, content in files.items():
            file = target / path
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_bytes(content)
            file.chmod(0o400)
        mounts[str(mount.get("mountPath") or "").rstrip("/")] = str(target)
    return mounts


def _relocate(value: str, mounts: dict[str, str]) -> str:
    for mount_path, local in mounts.items():
        if mount_path and (value == mount_path or value.startswith(mount_path + "/")):
            return local + value[len(mount_path):]
    return value


def relocate_env(env: dict[str, str], mounts: dict[str, str]) -> dict[str, str]:
    return {k: _relocate(v, mounts) for k, v in env.items()}


def relocate_args(args: list[str], mounts: dict[str, str]) -> list[str]:
    return [_relocate(a, mounts) for a in args]
