"""The emulator's Job pods see mounted Secrets where the container expects them (emulator/pod_volumes.py)."""

from __future__ import annotations

import base64
import stat
from pathlib import Path
from typing import Any

import pytest

from emulator.pod_volumes import MountFailed, mount_secrets, relocate_args, relocate_env
from emulator.store import Store


def _pod(volume: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    container = {"name": "c", "volumeMounts": [{"name": "k", "mountPath": "/etc/key/", "readOnly": True}]}
    pod = {"metadata": {"name": "p", "namespace": "default"},
           "spec": {"containers": [container], "volumes": [{"name": "k", "secret": volume}]}}
    return pod, container


def test_a_secret_volume_is_written_and_paths_point_at_it(tmp_path: Path) -> None:
    store = Store()
    store.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "default"},
                  "data": {"key": base64.b64encode(b"hmac").decode(), "other": base64.b64encode(b"x").decode()}})
    pod, container = _pod({"secretName": "s", "items": [{"key": "key", "path": "key"}]})
    mounts = mount_secrets(store, pod, container, tmp_path)
    local = Path(mounts["/etc/key"])
    assert (local / "key").read_bytes() == b"hmac" and not (local / "other").exists()
    assert stat.S_IMODE((local / "key").stat().st_mode) == 0o400
    assert relocate_env({"KEY_FILE": "/etc/key/key", "HOME": "/etc/keys"}, mounts) == {
        "KEY_FILE": f"{local}/key", "HOME": "/etc/keys"}
    assert relocate_args(["--key", "/etc/key/key"], mounts) == ["--key", f"{local}/key"]


def test_a_missing_secret_fails_the_mount_unless_optional(tmp_path: Path) -> None:
    pod, container = _pod({"secretName": "absent"})
    with pytest.raises(MountFailed, match='secret "absent" not found'):
        mount_secrets(Store(), pod, container, tmp_path)
    pod, container = _pod({"secretName": "absent", "optional": True})
    assert list(mount_secrets(Store(), pod, container, tmp_path)) == ["/etc/key"]
