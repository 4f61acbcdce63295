"""Whether a deleted Machine's Node has been drained, and the Job that drains it.

Deleting a bare-metal server under running pods is what MCM users left it to avoid, so the finalize hook drains the
Node first: cordon, evict every pod (PodDisruptionBudgets respected), wait for them to go, and only then delete the
device. A hook cannot do that itself (it must answer in seconds and holds no state), so it declares the drain as a
DecoratorController attachment, a `batch/v1` Job in the Machine's namespace running `python -m drain NODE`, and
watches that Job in the following finalize calls. Metacontroller deletes attachments a response leaves out, so the
Job is returned on every call until the Machine is gone.

MCM's rules decide when the wait is skipped (`force-deletion` label, drain timeout since deletionTimestamp, Node not
Ready or with a read-only filesystem for more than 5 minutes) and we add Failed machines; each step is described
with MCM's lastOperation texts. Everything here is a pure function of the observed objects and the clock.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from hooks import __version__
from hooks.config import ConfigError, Settings, env_bool
from hooks.mcm import vocabulary as mcm
from hooks.mcm.timefmt import go_duration, parse_duration, parse_time

# Key of Jobs in a decorator request's `children` map (v1: `attachments`); machines.yaml's rule: `batch/v1` `jobs`.
JOB_KEY = "Job.batch/v1"

DEFAULT_IMAGE = f"ghcr.io/metal-machine-hooks/metal-machine-hooks:{__version__}"
DEFAULT_SERVICE_ACCOUNT = "metal-machine-drain"
FORCE_DELETION_LABEL = "force-deletion"

# Annotations on the Job: which Machine and Node it drains, which try it is, and why the try before it failed
# (the failed Job is gone once its successor is declared, so its message travels with the successor).
MACHINE_ANNOTATION = "metal-machine-hooks/machine"
NODE_ANNOTATION = "metal-machine-hooks/node"
ATTEMPT_ANNOTATION = "metal-machine-hooks/drain-attempt"
PREVIOUS_ERROR_ANNOTATION = "metal-machine-hooks/previous-drain-error"
JOB_LABELS = {"app.kubernetes.io/name": "metal-machine-drain", "app.kubernetes.io/managed-by": "metal-machine-hooks"}

# MCM: a Node not Ready (or with a read-only filesystem) for this long is not worth waiting for.
NODE_UNHEALTHY_GRACE = timedelta(minutes=5)
# How often to look again while a drain runs; Job changes also trigger a finalize call on their own.
POLL_SECONDS = 30.0
# Pod retries inside one Job; after that the Job is Failed and a new try is declared.
BACKOFF_LIMIT = 3
# The Job outlives the drain program's own deadline by this much, so the program can report why it stopped.
DEADLINE_MARGIN_SECONDS = 60
MAX_NAME = 63
MAX_ERROR_CHARS = 400

# MCM's step names; a lastOperation of type Delete that names one of the later steps means the drain is over
# (MCM's deletion flow keys on the same substrings).
INITIATE_DRAIN = "Initiate node drain"
INITIATE_VM_DELETION = "Initiate VM deletion"
_AFTER_DRAIN_STEPS = (
    INITIATE_VM_DELETION,
    "Delete Volume Attachments",
    "Initiate node object deletion",
    "Initiate machine object finalizer removal",
)
_SA_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    """config.env_bool, except that a blank value (spaces only) counts as unset here rather than as a typo."""
    if not (env.get(name) or "").strip():
        return default
    return env_bool(env, name, default)


@dataclass(frozen=True)
class DrainSettings:
    """How drains run: on or off, which image and ServiceAccount, and the default drain timeout."""

    enabled: bool = True
    image: str = DEFAULT_IMAGE
    service_account: str = DEFAULT_SERVICE_ACCOUNT
    timeout: float = 2 * 60 * 60.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, settings: Settings | None = None) -> DrainSettings:
        """DRAIN_ENABLED, DRAIN_IMAGE, DRAIN_SERVICE_ACCOUNT; the timeout is Settings.drain_timeout.

        Without a target cluster (NO_TARGET_CLUSTER) there are no Nodes to drain, as in MCM.
        """
        env = os.environ if env is None else env
        settings = settings or Settings.from_env(env)
        image = (env.get("DRAIN_IMAGE") or DEFAULT_IMAGE).strip()
        account = (env.get("DRAIN_SERVICE_ACCOUNT") or DEFAULT_SERVICE_ACCOUNT).strip()
        if not _SA_NAME.match(account) or len(account) > 253:
            raise ConfigError(f"DRAIN_SERVICE_ACCOUNT={account!r} is not a valid ServiceAccount name")
        if any(ch.isspace() for ch in image):
            raise ConfigError(f"DRAIN_IMAGE={image!r} must not contain spaces")
        enabled = _env_bool(env, "DRAIN_ENABLED", True) and not settings.no_target_cluster
        return cls(enabled=enabled, image=image, service_account=account, timeout=settings.drain_timeout)


@dataclass(frozen=True)
class DrainStep:
    """What finalize should do about the drain in this call.

    `attachments` must go into the finalize response's `attachments` list on every call (a Job left out is
    deleted). Until `ready_to_delete_device` (and while `announce`), set lastOperation from description/state
    (type Delete) and leave the device alone.
    """

    attachments: list[dict[str, Any]]
    ready_to_delete_device: bool
    description: str
    state: str
    resync_after: float
    forced: bool
    reason: str
    # Ready, but the Machine does not show this outcome yet: write description/state first and delete the device
    # in the next call (which sees it recorded and goes on), so users see each step as MCM shows it.
    announce: bool = False


def plan_drain(
    machine: dict[str, Any],
    node: dict[str, Any] | None,
    attachments: Mapping[str, Any],
    settings: DrainSettings,
    now: datetime,
) -> DrainStep:
    """Decide the drain step of a Machine being finalized from what is observed now."""
    meta = machine.get("metadata") or {}
    labels = meta.get("labels") or {}
    node_name = str(labels.get(mcm.NODE_LABEL) or "")
    job = _latest(_drain_jobs(attachments), node_name)
    # Declare the Job we observe on every call, rebuilt from its own annotations: one left out would be deleted
    # under a running drain. Older tries and Jobs for another Node are left out, so Metacontroller removes them.
    kept = [_redeclare(machine, job, settings)] if job else []

    last_op = ((machine.get("status") or {}).get("lastOperation")) or {}
    last_description = str(last_op.get("description") or "")

    def done(description: str, reason: str, *, forced: bool = False) -> DrainStep:
        announce = reason != "after-drain" and description != last_description
        return DrainStep(kept, True, description, mcm.PROCESSING, 0.0, forced, reason, announce)

    if last_op.get("type") == mcm.OP_DELETE and any(step in last_description for step in _AFTER_DRAIN_STEPS):
        # Finalize already moved past the drain (the device may be half deleted): never start one again.
        return done(last_description, "after-drain")
    if not settings.enabled:
        return done(f"Skipping drain as draining is disabled. {INITIATE_VM_DELETION}", "disabled")
    if not node_name:
        return done(f"Skipping drain as nodeName is not a valid one for machine. {INITIATE_VM_DELETION}", "no-node")
    if node is None:
        return done(f"Skipping drain as node object does not exist. {INITIATE_VM_DELETION}", "node-missing")

    outcome = _job_outcome(job) if job else None
    if outcome == "succeeded":
        return done(f"Drain successful. {INITIATE_VM_DELETION}", "drained")

    force = _force_reason(machine, node, settings, now)
    if force:
        reason, why = force
        if job is not None:
            problem = _job_problem(job) if outcome == "failed" else f"drain job {job['metadata']['name']} still running"
            return done(
                f"Drain failed due to - {problem}. However, since it's a force deletion shall continue deletion of VM. "
                f"{INITIATE_VM_DELETION}",
                reason,
                forced=True,
            )
        return done(f"Skipping drain as {why}. {INITIATE_VM_DELETION}", reason, forced=True)

    resync = _next_look(machine, node, settings, now)
    if job is not None and outcome == "failed":
        error = _job_problem(job)
        retry = build_job(machine, node_name, settings, attempt=_attempt(job) + 1, previous_error=error)
        return DrainStep(
            [retry],
            False,
            f"Drain failed due to - {error}. Will retry in next sync. {INITIATE_DRAIN}",
            mcm.STATE_FAILED,
            resync,
            False,
            "retrying",
        )
    if not kept:
        kept = [build_job(machine, node_name, settings, attempt=1)]
    previous = kept[0]["metadata"]["annotations"].get(PREVIOUS_ERROR_ANNOTATION)
    if previous:
        # MCM keeps the failure in lastOperation while it drains again; so do we.
        description = f"Drain failed due to - {previous}. Will retry in next sync. {INITIATE_DRAIN}"
        return DrainStep(kept, False, description, mcm.STATE_FAILED, resync, False, "retrying")
    return DrainStep(kept, False, INITIATE_DRAIN, mcm.PROCESSING, resync, False, "draining")


def drain_timeout(machine: dict[str, Any], settings: DrainSettings) -> float:
    """Seconds from deletionTimestamp until the drain is forced: `spec.drainTimeout` if it parses, else the default."""
    raw = (machine.get("spec") or {}).get("drainTimeout")
    seconds = parse_duration(raw)
    return seconds if seconds is not None and seconds > 0 else settings.timeout


def job_name(machine_name: str, attempt: int = 1) -> str:
    """`<machine>-drain`, `-2`, `-3`... for retries; long names are cut and made unique with a hash."""
    suffix = "-drain" if attempt <= 1 else f"-drain-{attempt}"
    name = machine_name + suffix
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(machine_name.encode()).hexdigest()[:8]
    head = machine_name[: MAX_NAME - len(suffix) - len(digest) - 1].rstrip("-.")
    return f"{head}-{digest}{suffix}"


def build_job(
    machine: dict[str, Any],
    node_name: str,
    settings: DrainSettings,
    *,
    attempt: int = 1,
    previous_error: str = "",
) -> dict[str, Any]:
    """The drain Job for one try; the same inputs always give the same Job (Metacontroller compares them)."""
    meta = machine.get("metadata") or {}
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


def _drain_jobs(attachments: Mapping[str, Any]) -> list[dict[str, Any]]:
    observed = attachments.get(JOB_KEY) if isinstance(attachments, Mapping) else None
    if not isinstance(observed, Mapping):
        return []
    jobs = []
    for job in observed.values():
        meta = job.get("metadata") if isinstance(job, dict) else None
        if isinstance(meta, dict) and NODE_ANNOTATION in (meta.get("annotations") or {}) and meta.get("name"):
            jobs.append(job)
    return jobs


def _attempt(job: dict[str, Any]) -> int:
    raw = ((job.get("metadata") or {}).get("annotations") or {}).get(ATTEMPT_ANNOTATION)
    try:
        return max(1, int(str(raw)))
    except ValueError:
        return 1


def _latest(jobs: list[dict[str, Any]], node_name: str) -> dict[str, Any] | None:
    """The newest try among this Node's drain Jobs."""
    mine = [j for j in jobs if j["metadata"]["annotations"].get(NODE_ANNOTATION) == node_name]
    return max(mine, key=lambda j: (_attempt(j), j["metadata"]["name"]), default=None)


def _redeclare(machine: dict[str, Any], job: dict[str, Any], settings: DrainSettings) -> dict[str, Any]:
    """An observed drain Job as we declare it again: same name, try and carried error, nothing of the server's."""
    annotations = job["metadata"]["annotations"]
    declared = build_job(
        machine,
        str(annotations[NODE_ANNOTATION]),
        settings,
        attempt=_attempt(job),
        previous_error=str(annotations.get(PREVIOUS_ERROR_ANNOTATION) or ""),
    )
    declared["metadata"]["name"] = job["metadata"]["name"]
    return declared


def _conditions(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in (obj.get("status") or {}).get("conditions") or [] if isinstance(c, dict)]


def _job_outcome(job: dict[str, Any]) -> str:
    """ "succeeded", "failed" or "running", from the Job controller's conditions and counters."""
    status = job.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in _conditions(job)}
    if conditions.get("Complete") == "True" or _int(status.get("succeeded")) >= 1:
        return "succeeded"
    if conditions.get("Failed") == "True":
        return "failed"
    limit = _int((job.get("spec") or {}).get("backoffLimit"), BACKOFF_LIMIT)
    if _int(status.get("failed")) > limit and not _int(status.get("active")):
        return "failed"
    return "running"


def _job_problem(job: dict[str, Any]) -> str:
    name = job["metadata"]["name"]
    for cond in _conditions(job):
        if cond.get("type") == "Failed" and cond.get("status") == "True":
            detail = ": ".join(str(cond[k]).rstrip(". ") for k in ("reason", "message") if cond.get(k))
            return f"drain job {name} failed ({detail or 'no reason given'})"
    failed = _int((job.get("status") or {}).get("failed"))
    return f"drain job {name} failed ({failed} pod(s) failed)"


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _condition(node: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in _conditions(node) if c.get("type") == kind), None)


def _unhealthy_since(node: dict[str, Any], kind: str, healthy: str) -> datetime | None:
    """When the Node's `kind` condition left its healthy value, if it has (MCM ignores missing conditions)."""
    cond = _condition(node, kind)
    if cond is None or cond.get("status") == healthy:
        return None
    return parse_time(cond.get("lastTransitionTime"))


def _force_reason(
    machine: dict[str, Any], node: dict[str, Any], settings: DrainSettings, now: datetime
) -> tuple[str, str] | None:
    """(reason, MCM-style phrase) of the first rule that says not to wait for the drain, or None."""
    meta = machine.get("metadata") or {}
    if str((meta.get("labels") or {}).get(FORCE_DELETION_LABEL, "")).lower() == "true":
        return "force-label", f"the {FORCE_DELETION_LABEL} label is set"
    timeout = drain_timeout(machine, settings)
    deleted_at = parse_time(meta.get("deletionTimestamp"))
    if deleted_at is not None and (now - deleted_at).total_seconds() > timeout:
        return "drain-timeout", f"the drain timeout of {go_duration(timeout)} has passed since deletion"
    since = _unhealthy_since(node, "Ready", "True")
    if since is not None and now - since > NODE_UNHEALTHY_GRACE:
        return "node-not-ready", "machine is NotReady for over 5minutes"
    since = _unhealthy_since(node, "ReadonlyFilesystem", "False")
    if since is not None and now - since > NODE_UNHEALTHY_GRACE:
        return "node-readonly-filesystem", "machine is in ReadonlyFilesystem for over 5minutes"
    if ((machine.get("status") or {}).get("currentStatus") or {}).get("phase") == mcm.FAILED:
        return "machine-failed", "machine is Failed"
    return None


def _next_look(machine: dict[str, Any], node: dict[str, Any], settings: DrainSettings, now: datetime) -> float:
    """Seconds until the next finalize call: the poll interval, or sooner when a force rule is about to apply."""
    moments = []
    deleted_at = parse_time((machine.get("metadata") or {}).get("deletionTimestamp"))
    if deleted_at is not None:
        moments.append(deleted_at + timedelta(seconds=drain_timeout(machine, settings)))
    for kind, healthy in (("Ready", "True"), ("ReadonlyFilesystem", "False")):
        since = _unhealthy_since(node, kind, healthy)
        if since is not None:
            moments.append(since + NODE_UNHEALTHY_GRACE)
    waits = [(m - now).total_seconds() + 1.0 for m in moments if m > now]
    return max(1.0, min([POLL_SECONDS, *waits]))
