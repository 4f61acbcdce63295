"""The Node-side Jobs' real program (`python -m nodejobs`, nodejobs/) run in-process against the Store, for the
stand-in Job runner (emulator/jobs.py) that `make demo` and the chaos run use.

The e2e tests run the program in a subprocess against the emulator's REST API (emulator/job_pods.py), with its
RBAC checked; here the same `nodejobs.__main__.main` runs with a Store-backed client, so the demo shows the
bootstrap token Secret, the Node's nodeTemplate, its Terminating condition and its removal without a REST server.
The program's output (never a token's secret half) is kept per Job, not printed.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
from pathlib import Path
from typing import Any

from drain.kube import KubeError
from emulator.patches import merge_patch, strategic_merge_patch
from emulator.store import AlreadyExists, Conflict, NotFound, Store

Obj = dict[str, Any]
STEP_ANNOTATION = "metal-machine-hooks/node-step"  # hooks/mcm/node_jobs.py marks its Jobs with the step


class StoreNodeSideApi:
    """nodejobs.kube.NodeSideApi's calls, answered by the Store (409 for a stale resourceVersion or UID)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def create_secret(self, namespace: str, body: Obj) -> bool:
        secret = {k: v for k, v in body.items() if k != "stringData"}
        secret["metadata"] = {**body["metadata"], "namespace": namespace}
        secret["data"] = {k: base64.b64encode(str(v).encode()).decode() for k, v in (body.get("stringData") or
                                                                                      {}).items()}
        try:
            self.store.create(secret)
        except AlreadyExists:
            return False
        return True

    def delete_secret(self, namespace: str, name: str) -> bool:
        try:
            self.store.delete("v1", "Secret", name, namespace)
        except NotFound:
            return False
        return True

    def get_node(self, name: str) -> Obj | None:
        return self.store.try_get("v1", "Node", name)

    def _patched(self, name: str, patch: Obj, status: bool) -> Obj:
        node = self.store.try_get("v1", "Node", name)
        if node is None:
            raise KubeError(f'nodes "{name}" not found', 404)
        wanted = (patch.get("metadata") or {}).get("resourceVersion")
        if wanted and wanted != node["metadata"].get("resourceVersion"):
            raise KubeError(f'node "{name}" was changed since it was read', 409)
        try:
            if status:
                return self.store.update_status(strategic_merge_patch(node, patch))
            return self.store.update(merge_patch(node, patch))
        except Conflict as exc:
            raise KubeError(str(exc), 409) from None
        except NotFound as exc:
            raise KubeError(str(exc), 404) from None

    def patch_node(self, name: str, patch: Obj) -> Obj:
        return self._patched(name, patch, status=False)

    def patch_node_status(self, name: str, patch: Obj) -> Obj:
        return self._patched(name, patch, status=True)

    def delete_node(self, name: str, uid: str) -> bool:
        try:
            self.store.delete("v1", "Node", name, uid=uid or None)
        except NotFound:
            return False
        except Conflict as exc:
            raise KubeError(str(exc), 409) from None
        return True


def is_node_job(job: Obj) -> bool:
    return bool(((job.get("metadata") or {}).get("annotations") or {}).get(STEP_ANNOTATION))


def run(store: Store, job: Obj, key_file: str) -> tuple[bool, str]:
    """Run the Job's program once; (succeeded, its output)."""
    from nodejobs.__main__ import main

    containers = (((job.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or [{}]
    args = [str(a) for a in containers[0].get("args") or []]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            code = main(args, env={"BOOTSTRAP_TOKEN_KEY_FILE": key_file}, api=StoreNodeSideApi(store),  # type: ignore[arg-type]
                        termination_log=Path(os.devnull))
        except SystemExit as exc:  # argparse refusing the arguments
            code = int(exc.code or 1)
    return code == 0, out.getvalue()
