"""The drain Job a finalize call declares for a deleted Machine's Node, and what an observed one says.

The Job runs `python -m drain NODE` in the Machine's namespace. Metacontroller deletes attachments a response leaves
out and compares declared ones with what it applied, so the same inputs must always give the same Job: its name,
try number and the previous try's error are all in the Job itself, nothing comes from the clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from hooks import objects
from hooks.config import DrainSettings
from hooks.mcm.timefmt import parse_duration, parse_time

# Key of Jobs in a decorator request's `children` map (v1: `attachments`); machines.yaml's rule: `batch/v1` `jobs`.
JOB_KEY = "Job.batch/v1"

# Annotations on the Job: which Machine and Node it drains, which try it is, and why the try before it failed
# (the failed Job is gone once its successor is declared, so its message travels with the successor).
MACHINE_ANNOTATION = "metal-machine-hooks/machine"
NODE_ANNOTATION = "metal-machine-hooks/node"
ATTEMPT_ANNOTATION = "metal-machine-hooks/drain-attempt"
PREVIOUS_ERROR_ANNOTATION = "metal-machine-hooks/previous-drain-error"
JOB_LABELS = {"app.kubernetes.io/name": "metal-machine-drain", "app.kubernetes.io/managed-by": "metal-machine-hooks"}

# Pod retries inside one Job; after that the Job is Failed and a new try is declared.
BACKOFF_LIMIT = 3
# The Job outlives the drain program's own deadline by this much, so the program can report why it stopped.
DEADLINE_MARGIN_SECONDS = 60
MAX_NAME = 63
MAX_ERROR_CHARS = 400


def drain_timeout(machine: dict[str, Any], settings: DrainSettings) -> float:
    """Seconds from deletionTimestamp until the drain is forced: `spec.drainTimeout` if it parses, else the default."""
    raw = objects.mapping(machine, "spec").get("drainTimeout")
    seconds = parse_duration(raw)
    return seconds if seconds is not None and seconds > 0 else settings.timeout


def job_name(machine_name: str, attempt: int = 1) -> str:
    """`<machine>-drain`, `-2`, `-3`... for retries (attachment_name)."""
    return attachment_name(machine_name, "drain", attempt)


def attachment_name(machine_name: str, suffix: str, attempt: int = 1) -> str:
    """`<machine>-<suffix>` (`-2`, `-3`... for retries) for a Job the Machine hook declares; long names are cut and
    made unique with a hash. The drain Job and the Node-side Jobs (hooks.mcm.node_jobs) are named by it."""
    tail = f"-{suffix}" if attempt <= 1 else f"-{suffix}-{attempt}"
    name = machine_name + tail
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(machine_name.encode()).hexdigest()[:8]
    head = machine_name[: MAX_NAME - len(tail) - len(digest) - 1].rstrip("-.")
    return f"{head}-{digest}{tail}"


def build_job(
    machine: dict[str, Any],
    node_name: str,
    settings: DrainSettings,
    *,
    attempt: int = 1,
    previous_error: str = "",
) -> dict[str, Any]:
    """The drain Job for one try; the same inputs always give the same Job (Metacontroller compares them)."""
    meta = objects.meta(machine)
    machine_name = str(meta.get("name") or "")
    timeout = drain_timeout(machine, settings)
    args = [node_name, "--timeout", str(round(timeout))]
    deleted_at = parse_time(meta.get("deletionTimestamp"))
    if deleted_at is not None:
        # A fixed instant, not "now + timeout": the program stops exactly when the hook would force anyway.
        deadline = deleted_at + timedelta(seconds=timeout)
        args += ["--deadline", deadline.strftime("%Y-%m-%dT%H:%M:%SZ")]
    annotations = {
        MACHINE_ANNOTATION: machine_name,
        NODE_ANNOTATION: node_name,
        ATTEMPT_ANNOTATION: str(attempt),
    }
    if previous_error:
        annotations[PREVIOUS_ERROR_ANNOTATION] = previous_error[:MAX_ERROR_CHARS]
    metadata: dict[str, Any] = {"name": job_name(machine_name, attempt), "labels": dict(JOB_LABELS)}
    if meta.get("namespace"):
        metadata["namespace"] = meta["namespace"]
    metadata["annotations"] = annotations
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "backoffLimit": BACKOFF_LIMIT,
            "activeDeadlineSeconds": round(timeout) + DEADLINE_MARGIN_SECONDS,
            "template": {
                "metadata": {"labels": dict(JOB_LABELS)},
                "spec": _pod_spec(node_name, args, settings),
            },
        },
    }


def _pod_spec(node_name: str, args: list[str], settings: DrainSettings) -> dict[str, Any]:
    field_env = [
        {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}
        for name, path in (("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace"))
    ]
    return {
        "serviceAccountName": settings.service_account,
        "automountServiceAccountToken": True,
        "restartPolicy": "Never",
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # Never on the Node being drained: it would be asked to evict itself.
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": [node_name]}]}
                    ]
                }
            }
        },
        "containers": [
            {
                "name": "drain",
                "image": settings.image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["python", "-m", "drain"],
                "args": args,
                "env": [
                    *field_env,
                    {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
                    {"name": "PYTHONUNBUFFERED", "value": "1"},
                ],
                "resources": {
                    "requests": {"cpu": "10m", "memory": "32Mi"},
                    "limits": {"cpu": "200m", "memory": "128Mi"},
                },
                "securityContext": {
                    "runAsNonRoot": True,
                    "readOnlyRootFilesystem": True,
                    "allowPrivilegeEscalation": False,
                    "privileged": False,
                    "capabilities": {"drop": ["ALL"]},
                },
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }
        ],
    }


def drain_jobs(attachments: Mapping[str, Any]) -> list[dict[str, Any]]:
    observed = attachments.get(JOB_KEY) if isinstance(attachments, Mapping) else None
    if not isinstance(observed, Mapping):
        return []
    jobs = []
    for job in observed.values():
        meta = job.get("metadata") if isinstance(job, dict) else None
        if isinstance(meta, dict) and NODE_ANNOTATION in objects.annotations(job) and meta.get("name"):
            jobs.append(job)
    return jobs


def attempt_of(job: dict[str, Any]) -> int:
    raw = objects.annotations(job).get(ATTEMPT_ANNOTATION)
    try:
        return max(1, int(str(raw)))
    except ValueError:
        return 1


def latest(jobs: list[dict[str, Any]], node_name: str) -> dict[str, Any] | None:
    """The newest try among this Node's drain Jobs."""
    mine = [j for j in jobs if j["metadata"]["annotations"].get(NODE_ANNOTATION) == node_name]
    return max(mine, key=lambda j: (attempt_of(j), j["metadata"]["name"]), default=None)


def redeclare(machine: dict[str, Any], job: dict[str, Any], settings: DrainSettings) -> dict[str, Any]:
    """An observed drain Job as we declare it again: same name, try and carried error, nothing of the server's."""
    annotations = job["metadata"]["annotations"]
    declared = build_job(
        machine,
        str(annotations[NODE_ANNOTATION]),
        settings,
        attempt=attempt_of(job),
        previous_error=str(annotations.get(PREVIOUS_ERROR_ANNOTATION) or ""),
    )
    declared["metadata"]["name"] = job["metadata"]["name"]
    return declared


def conditions_of(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return objects.mappings(obj, "status", "conditions")


def job_outcome(job: dict[str, Any]) -> str:
    """ "succeeded", "failed" or "running", from the Job controller's conditions and counters."""
    status = objects.mapping(job, "status")
    conditions = {c.get("type"): c.get("status") for c in conditions_of(job)}
    if conditions.get("Complete") == "True" or _int(status.get("succeeded")) >= 1:
        return "succeeded"
    if conditions.get("Failed") == "True":
        return "failed"
    limit = _int(objects.mapping(job, "spec").get("backoffLimit"), BACKOFF_LIMIT)
    if _int(status.get("failed")) > limit and not _int(status.get("active")):
        return "failed"
    return "running"


def job_problem(job: dict[str, Any]) -> str:
    name = job["metadata"]["name"]
    for cond in conditions_of(job):
        if cond.get("type") == "Failed" and cond.get("status") == "True":
            detail = ": ".join(str(cond[k]).rstrip(". ") for k in ("reason", "message") if cond.get(k))
            return f"drain job {name} failed ({detail or 'no reason given'})"
    failed = _int(objects.mapping(job, "status").get("failed"))
    return f"drain job {name} failed ({failed} pod(s) failed)"


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default
