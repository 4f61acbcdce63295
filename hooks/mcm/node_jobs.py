"""The Jobs that do a Machine's Node-side work, declared as DecoratorController attachments like the drain Job.

A hook cannot write to `kube-system` or to a Node (Metacontroller only writes what a hook returns, in the parent's
namespace), and the Nodes may live in another cluster, so each Node-side step is a `batch/v1` Job in the Machine's
namespace running `python -m nodejobs ...` from the hook image with its own narrowly scoped ServiceAccount:

    token create / token delete   ServiceAccount metal-machine-bootstrap-token (create/delete Secrets in kube-system)
    node sync / terminating / remove   ServiceAccount metal-machine-node (get/patch/delete Nodes, patch nodes/status)

As for the drain (hooks/mcm/drain.py): the Job is returned on every call while its step is relevant (Metacontroller
deletes an attachment a response leaves out), the same inputs give the same Job, a failed try is replaced by a new
Job `-2`, `-3`... carrying the previous error, and everything here is a pure function of the observed objects.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hooks import objects
from hooks.config import DEFAULT_DRAIN_IMAGE as DEFAULT_IMAGE
from hooks.config import ConfigError
from hooks.mcm import bootstrap
from hooks.mcm.drain import JOB_KEY
from hooks.mcm.drain_job import attachment_name

TOKEN_ACCOUNT = "metal-machine-bootstrap-token"
NODE_ACCOUNT = "metal-machine-node"
TOKEN_APP = "metal-machine-bootstrap-token"
NODE_APP = "metal-machine-node"
MANAGED_BY = {"app.kubernetes.io/managed-by": "metal-machine-hooks"}

MACHINE_ANNOTATION = "metal-machine-hooks/machine"
STEP_ANNOTATION = "metal-machine-hooks/node-step"
ATTEMPT_ANNOTATION = "metal-machine-hooks/node-step-attempt"
PREVIOUS_ERROR_ANNOTATION = "metal-machine-hooks/previous-node-step-error"

# The steps, and the ServiceAccount (and app label) each runs as.
TOKEN_CREATE = "token-create"
TOKEN_DELETE = "token-delete"
NODE_SYNC = "node-sync"
NODE_TERMINATING = "node-terminating"
NODE_REMOVE = "node-remove"
TOKEN_STEPS = (TOKEN_CREATE, TOKEN_DELETE)
NODE_STEPS = (NODE_SYNC, NODE_TERMINATING, NODE_REMOVE)

BACKOFF_LIMIT = 3
ACTIVE_DEADLINE_SECONDS = 300
MAX_ERROR_CHARS = 400
_SA_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True)
class NodeJobSettings:
    """Image and ServiceAccounts of the Node-side Jobs: NODE_JOBS_IMAGE (else DRAIN_IMAGE), NODE_JOBS_SERVICE_ACCOUNT,
    BOOTSTRAP_TOKEN_SERVICE_ACCOUNT, and the token settings (hooks.mcm.bootstrap.TokenSettings)."""

    image: str = DEFAULT_IMAGE
    node_account: str = NODE_ACCOUNT
    token_account: str = TOKEN_ACCOUNT
    token: bootstrap.TokenSettings = field(default_factory=bootstrap.TokenSettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> NodeJobSettings:
        env = os.environ if env is None else env
        image = (env.get("NODE_JOBS_IMAGE") or env.get("DRAIN_IMAGE") or DEFAULT_IMAGE).strip()
        if any(ch.isspace() for ch in image):
            raise ConfigError(f"NODE_JOBS_IMAGE={image!r} must not contain spaces")
        accounts = {}
        for name, default in (("NODE_JOBS_SERVICE_ACCOUNT", NODE_ACCOUNT),
                              ("BOOTSTRAP_TOKEN_SERVICE_ACCOUNT", TOKEN_ACCOUNT)):
            value = (env.get(name) or default).strip()
            if not _SA_NAME.match(value) or len(value) > 253:
                raise ConfigError(f"{name}={value!r} is not a valid ServiceAccount name")
            accounts[name] = value
        return cls(image=image, node_account=accounts["NODE_JOBS_SERVICE_ACCOUNT"],
                   token_account=accounts["BOOTSTRAP_TOKEN_SERVICE_ACCOUNT"],
                   token=bootstrap.TokenSettings.from_env(env))


@dataclass(frozen=True)
class StepJob:
    """One step's Job as observed and declared: put `attachments` in the response on every call while the step
    matters. `outcome` is "running", "succeeded" or "failed" (the failed try is already replaced by a new one in
    `attachments`; `problem` says why it failed, for lastOperation)."""

    attachments: list[dict[str, Any]]
    outcome: str
    problem: str = ""
    attempt: int = 1


job_name = attachment_name  # `<machine>-<suffix>`, as the drain Job is named

def build_job(machine: Mapping[str, Any], step: str, name: str, args: list[str], settings: NodeJobSettings, *,
              attempt: int = 1, previous_error: str = "", notes: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A Node-side Job; the same inputs always give the same Job (Metacontroller compares declared and observed)."""
    meta = machine.get("metadata") or {}
    token_step = step in TOKEN_STEPS
    labels = {"app.kubernetes.io/name": TOKEN_APP if token_step else NODE_APP, **MANAGED_BY}
    annotations = {MACHINE_ANNOTATION: str(meta.get("name") or ""), STEP_ANNOTATION: step,
                   ATTEMPT_ANNOTATION: str(attempt), **(notes or {})}
    if previous_error:
        annotations[PREVIOUS_ERROR_ANNOTATION] = previous_error[:MAX_ERROR_CHARS]
    metadata: dict[str, Any] = {"name": name, "labels": dict(labels)}
    if meta.get("namespace"):
        metadata["namespace"] = meta["namespace"]
    metadata["annotations"] = annotations
    env: list[dict[str, Any]] = [{"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
                                 {"name": "PYTHONUNBUFFERED", "value": "1"}]
    container: dict[str, Any] = {
        "name": "nodejobs",
        "image": settings.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", "nodejobs"],
        "args": args,
        "env": env,
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "200m", "memory": "128Mi"}},
        "securityContext": {"runAsNonRoot": True, "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                            "privileged": False, "capabilities": {"drop": ["ALL"]}},
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod: dict[str, Any] = {
        "serviceAccountName": settings.token_account if token_step else settings.node_account,
        "automountServiceAccountToken": True,
        "restartPolicy": "Never",
        "enableServiceLinks": False,
        # fsGroup: the mounted key is group-readable by the program's group, nobody else's.
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
    }
    if token_step:
        # The key, never the token: the program derives the token from it and the Machine's UID.
        env.append({"name": bootstrap.KEY_FILE_ENV,
                    "value": f"{bootstrap.KEY_MOUNT_DIR}/{bootstrap.KEY_FILE_NAME}"})
        container["volumeMounts"] = [{"name": "bootstrap-token-key", "mountPath": bootstrap.KEY_MOUNT_DIR,
                                      "readOnly": True}]
        pod["volumes"] = [{"name": "bootstrap-token-key", "secret": {
            "secretName": settings.token.key_secret, "defaultMode": 0o440,
            "items": [{"key": bootstrap.KEY_FILE_NAME, "path": bootstrap.KEY_FILE_NAME}]}}]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "backoffLimit": BACKOFF_LIMIT,
            "activeDeadlineSeconds": ACTIVE_DEADLINE_SECONDS,
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod},
        },
    }


def observed_jobs(attachments: Mapping[str, Any], machine_name: str, step: str) -> list[dict[str, Any]]:
    """This Machine's observed Jobs for `step` (from the request's attachments map)."""
    observed = attachments.get(JOB_KEY) if isinstance(attachments, Mapping) else None
    found = []
    for job in (observed or {}).values() if isinstance(observed, Mapping) else ():
        notes = ((job.get("metadata") or {}).get("annotations") or {}) if isinstance(job, dict) else {}
        if isinstance(notes, dict) and notes.get(STEP_ANNOTATION) == step and \
                notes.get(MACHINE_ANNOTATION) == machine_name and job["metadata"].get("name"):
            found.append(job)
    return found


def attempt_of(job: Mapping[str, Any]) -> int:
    raw = ((job.get("metadata") or {}).get("annotations") or {}).get(ATTEMPT_ANNOTATION)
    try:
        return max(1, int(str(raw)))
    except ValueError:
        return 1


def outcome(job: Mapping[str, Any]) -> str:
    """ "succeeded", "failed" or "running", from the Job controller's conditions and counters."""
    status = objects.mapping(job, "status")
    conditions = {c.get("type"): c.get("status") for c in objects.mappings(status, "conditions")}
    succeeded, failed = status.get("succeeded"), status.get("failed")
    if conditions.get("Complete") == "True" or (isinstance(succeeded, int) and succeeded >= 1):
        return "succeeded"
    if conditions.get("Failed") == "True":
        return "failed"
    limit = objects.mapping(job, "spec").get("backoffLimit", BACKOFF_LIMIT)
    if isinstance(failed, int) and isinstance(limit, int) and failed > limit and not status.get("active"):
        return "failed"
    return "running"


def problem(job: Mapping[str, Any]) -> str:
    """Why a Job failed, from its Failed condition (reason: message); the pod's own message is in its log."""
    name = objects.name(job)
    status = objects.mapping(job, "status")
    for cond in objects.mappings(status, "conditions"):
        if cond.get("type") == "Failed" and cond.get("status") == "True":
            detail = ": ".join(str(cond[k]).rstrip(". ") for k in ("reason", "message") if cond.get(k))
            return f"job {name} failed ({detail or 'no reason given'})"
    return f"job {name} failed ({status.get('failed') or 0} pod(s) failed)"


def plan_step(machine: Mapping[str, Any], attachments: Mapping[str, Any], step: str, suffix: str,
              build: Callable[[str, int, str, dict[str, Any] | None], dict[str, Any]]) -> StepJob:
    """The step's Job for this call: the newest observed try redeclared, a new try after a failure, or try 1.

    `build(name, attempt, previous_error, observed)` makes the Job from the step's inputs (`observed`, the try it
    replaces or redeclares, lets it keep what that try was declared with); observed tries under another base name
    (inputs that changed) are left out, so Metacontroller deletes them.
    """
    machine_name = str((machine.get("metadata") or {}).get("name") or "")
    names = {job_name(machine_name, suffix, n) for n in range(1, 100)}
    mine = [j for j in observed_jobs(attachments, machine_name, step) if j["metadata"]["name"] in names]
    latest = max(mine, key=attempt_of, default=None)
    if latest is None:
        return StepJob([build(job_name(machine_name, suffix), 1, "", None)], "running")
    attempt = attempt_of(latest)
    result = outcome(latest)
    if result == "failed":
        why = problem(latest)
        retry = build(job_name(machine_name, suffix, attempt + 1), attempt + 1, why, latest)
        return StepJob([retry], "failed", why, attempt + 1)
    previous = str(((latest.get("metadata") or {}).get("annotations") or {}).get(PREVIOUS_ERROR_ANNOTATION) or "")
    declared = build(latest["metadata"]["name"], attempt, previous, latest)
    return StepJob([declared], result, previous if result == "running" else "", attempt)
