"""The Job controller and kubelet for the emulator: a Job's pod runs the Job's real program as a subprocess.

Why: a stand-in that fakes a Job's outcome proves nothing about the program the Job runs. Here each Job in the
store gets a Pod (owned by the Job, as the Job controller creates it), and the pod's container command runs on
this machine: `python -m drain NODE ...` from this repository, with the environment a pod would have:

* the container's `env` (values, and `fieldRef`s such as POD_NAME / POD_NAMESPACE resolved from the Pod);
* KUBERNETES_SERVICE_HOST / KUBERNETES_SERVICE_PORT pointing at the emulator's REST API (`emulator/kubeapi.py`),
  KUBE_API_SCHEME=http (the loopback API has no TLS), and the ServiceAccount token in a file named by
  KUBE_TOKEN_FILE (a fresh token per pod, known to the API server as
  `system:serviceaccount:NS:SERVICEACCOUNT`); no token when `automountServiceAccountToken: false`;
* TERMINATION_MESSAGE_PATH, the file the program writes its termination message to;
* Secret volumes the container mounts, written to the pod's directory, with paths under the mount path in its
  environment and arguments pointed there (`emulator/pod_volumes.py`). A Job with the target cluster's kubeconfig
  mounted (hooks/target/jobs.py) thus runs with KUBECONFIG naming that file, and its program talks to the target's
  API (the kubeconfig's server and token) instead of the one above (two clusters, issue 17).

`python`/`python3` as the command's first word means this interpreter; the working directory is the repository.
The program's exit code decides, as the Job controller does: exit 0 makes the Job Complete (`succeeded: 1`,
conditions SuccessCriteriaMet and Complete); a failure is retried in a new pod after a back-off that doubles
from `backoff` seconds, and the Job is Failed (BackoffLimitExceeded) once more than `spec.backoffLimit` pods
failed, or (DeadlineExceeded) when it runs longer than `spec.activeDeadlineSeconds`. A Job deleted while its pod
runs has the process stopped (SIGTERM, then SIGKILL after `stop_grace`). The Pod's status follows the process
(Running, then Succeeded/Failed with the exit code and termination message; FallbackToLogsOnError uses the log's
tail). Every pod's output is kept in `logs` (pod name -> text) for debugging, after stop() too.

API:

    runner = ProgramJobRunner(store, api, poll_interval=0.05, backoff=10.0)
    runner.start(); runner.stop()     # stop() ends every running program
    runner.running()                  # pods whose program is still running
    runner.finished                   # names of Jobs completed (succeeded or failed), in order
    runner.logs["m1-drain-abcde"]     # what the pod printed
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from emulator import pod_volumes
from emulator.kubeapi import KubeApiServer
from emulator.poller import Poller
from emulator.store import ApiError, Conflict, NotFound, Store, format_time, utc_now

Obj = dict[str, Any]
REPO = Path(__file__).resolve().parent.parent
LOG = logging.getLogger(__name__)
LOG_TAIL_LINES = 80
DEFAULT_BACKOFF_LIMIT = 6  # batch/v1 default


@dataclass
class _PodRun:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]
    message_path: Path
    fallback_to_logs: bool


@dataclass
class _JobState:
    namespace: str
    name: str
    started: float | None = None
    failures: int = 0
    next_try: float = 0.0
    run: _PodRun | None = None
    done: bool = False
    pods: list[str] = field(default_factory=list)


class ProgramJobRunner(Poller):
    thread_name = "job-pods"

    def __init__(
        self,
        store: Store,
        api: KubeApiServer,
        *,
        poll_interval: float = 0.05,
        backoff: float = 10.0,
        backoff_cap: float = 360.0,
        stop_grace: float = 5.0,
        repo: Path = REPO,
        python: str = sys.executable,
        node_name: str | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(poll_interval)
        self.store = store
        self.api = api
        self.backoff = backoff
        self.backoff_cap = backoff_cap
        self.stop_grace = stop_grace
        self.repo = repo
        self.python = python
        self.node_name = node_name
        self._now = monotonic
        self._jobs: dict[str, _JobState] = {}
        self._lock = threading.RLock()
        self._dir = Path(tempfile.mkdtemp(prefix="emulator-pods-"))
        self.finished: list[str] = []
        self.logs: dict[str, str] = {}

    # ---------------------------------------------------------------- loop

    def _poll(self) -> None:
        try:
            self.tick()
        except ApiError as exc:  # a store refusal in one round must not end the Job controller
            LOG.warning("job runner round failed: %s", exc)
        except OSError:  # nor a full disk or a vanished temp dir: the next round tries again
            LOG.exception("job runner round failed")

    def tick(self) -> None:
        with self._lock:
            now = self._now()
            jobs = self.store.list("batch/v1", "Job")
            seen = {job["metadata"]["uid"] for job in jobs}
            for uid in [u for u in self._jobs if u not in seen]:
                self._end(self._jobs.pop(uid))
            for job in jobs:
                meta = job["metadata"]
                state = self._jobs.setdefault(meta["uid"], _JobState(meta["namespace"], meta["name"]))
                if state.done or _finished(job):
                    state.done = True
                    continue
                if meta.get("deletionTimestamp"):
                    self._end(state)
                    continue
                if state.run is not None:
                    self._watch(job, state, now)
                elif now >= state.next_try:
                    self._start_pod(job, state, now)

    def running(self) -> list[str]:
        """Pods whose program has not exited yet (empty after stop())."""
        with self._lock:
            return [s.run.name for s in self._jobs.values() if s.run is not None and s.run.process.poll() is None]

    def stop(self) -> None:
        super().stop()
        with self._lock:
            for state in self._jobs.values():
                self._end(state)
            for _ in range(3):  # a program's last write can race the removal: look again
                shutil.rmtree(self._dir, ignore_errors=True)
                if not self._dir.exists():
                    break

    # ---------------------------------------------------------------- pods

    def _start_pod(self, job: Obj, state: _JobState, now: float) -> None:
        meta = job["metadata"]
        template = (job.get("spec") or {}).get("template") or {}
        spec = dict(template.get("spec") or {})
        containers = spec.get("containers") or []
        if not containers:
            self._finish(job, state, failed=True, reason="PodCreateFailed", message="the pod template has no container")
            return
        name = f"{meta['name']}-{secrets.token_hex(3)[:5]}"
        if self.node_name:
            spec["nodeName"] = self.node_name
        labels = {**((template.get("metadata") or {}).get("labels") or {}), "job-name": meta["name"],
                  "batch.kubernetes.io/job-name": meta["name"], "controller-uid": meta["uid"],
                  "batch.kubernetes.io/controller-uid": meta["uid"]}
        pod = self.store.create({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": meta["namespace"], "labels": labels,
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"],
                                              "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}]},
            "spec": spec,
            "status": {"phase": "Pending"},
        })
        container = containers[0]
        pod_dir = self._dir / name
        pod_dir.mkdir(parents=True)
        env = self._environment(pod, container, pod_dir)
        try:
            mounts = pod_volumes.mount_secrets(self.store, pod, container, pod_dir / "volumes")
        except pod_volumes.MountFailed as exc:
            self._pod_status(pod, "Failed", exit_code=1, message=str(exc))
            self._failed_pod(job, state, now)
            return
        env = pod_volumes.relocate_env(env, mounts)
        command = pod_volumes.relocate_args([*(container.get("command") or []), *(container.get("args") or [])],
                                            mounts)
        if not command:
            self._finish(job, state, failed=True, reason="PodCreateFailed", message="the container has no command")
            return
        if command[0] in ("python", "python3"):
            command[0] = self.python
        log_path = pod_dir / "log"
        log_file = log_path.open("wb")
        try:
            process = subprocess.Popen(command, cwd=self.repo, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            log_file.close()
            self._pod_status(pod, "Failed", exit_code=127, message=str(exc))
            self._failed_pod(job, state, now)
            return
        state.run = _PodRun(name, process, log_path, log_file, Path(env["TERMINATION_MESSAGE_PATH"]),
                            container.get("terminationMessagePolicy") == "FallbackToLogsOnError")
        state.pods.append(name)
        if state.started is None:
            state.started = now
        stamp = format_time(utc_now())
        self._pod_status(pod, "Running", started=stamp)
        status = dict(job.get("status") or {})
        status.setdefault("startTime", stamp)
        status["active"] = 1
        self._job_status(job, status)

    def _environment(self, pod: Obj, container: Obj, pod_dir: Path) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(pod_dir),
               "HOSTNAME": pod["metadata"]["name"], "PYTHONPATH": str(self.repo),
               "KUBERNETES_SERVICE_HOST": self.api.host, "KUBERNETES_SERVICE_PORT": str(self.api.port),
               "KUBE_API_SCHEME": "http", "TERMINATION_MESSAGE_PATH": str(pod_dir / "termination-log")}
        spec = pod.get("spec") or {}
        if spec.get("automountServiceAccountToken", True):
            token = secrets.token_urlsafe(24)
            account = spec.get("serviceAccountName") or "default"
            self.api.add_token(token, f"system:serviceaccount:{pod['metadata']['namespace']}:{account}")
            token_file = pod_dir / "serviceaccount" / "token"
            token_file.parent.mkdir()
            token_file.write_text(token)
            env["KUBE_TOKEN_FILE"] = str(token_file)
        for var in container.get("env") or []:
            if "value" in var:
                env[var["name"]] = str(var["value"])
            elif (ref := ((var.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")):
                node: Any = pod
                for part in ref.split("."):
                    node = node.get(part) if isinstance(node, dict) else None
                env[var["name"]] = "" if node is None else str(node)
        return env

    def _watch(self, job: Obj, state: _JobState, now: float) -> None:
        run = state.run
        assert run is not None
        code = run.process.poll()
        deadline = (job.get("spec") or {}).get("activeDeadlineSeconds")
        if code is None:
            if isinstance(deadline, int) and state.started is not None and now - state.started > deadline:
                self._end(state)
                self._finish(job, state, failed=True, reason="DeadlineExceeded",
                             message="Job was active longer than specified deadline")
            return
        run.log_file.close()
        text = run.log_path.read_text(errors="replace")
        self.logs[run.name] = text
        message = run.message_path.read_text(errors="replace") if run.message_path.is_file() else ""
        if not message and code != 0 and run.fallback_to_logs:
            message = "\n".join(text.splitlines()[-LOG_TAIL_LINES:])
        state.run = None
        pod = self.store.try_get("v1", "Pod", run.name, state.namespace)
        if pod is not None:
            self._pod_status(pod, "Succeeded" if code == 0 else "Failed", exit_code=code, message=message)
        if code == 0:
            self._finish(job, state, failed=False)
        else:
            self._failed_pod(job, state, now)

    def _failed_pod(self, job: Obj, state: _JobState, now: float) -> None:
        state.failures += 1
        limit = (job.get("spec") or {}).get("backoffLimit", DEFAULT_BACKOFF_LIMIT)
        if state.failures > limit:
            self._finish(job, state, failed=True, reason="BackoffLimitExceeded",
                         message="Job has reached the specified backoff limit")
            return
        state.next_try = now + min(self.backoff * 2 ** (state.failures - 1), self.backoff_cap)
        status = dict(job.get("status") or {})
        status.update(failed=state.failures, active=0)
        self._job_status(job, status)

    def _finish(self, job: Obj, state: _JobState, *, failed: bool, reason: str = "", message: str = "") -> None:
        stamp = format_time(utc_now())
        status = dict(job.get("status") or {})
        status.setdefault("startTime", stamp)
        status["active"] = 0
        if failed:
            status["failed"] = max(state.failures, 1)
            status["conditions"] = [
                {"type": "FailureTarget", "status": "True", "reason": reason, "message": message,
                 "lastTransitionTime": stamp},
                {"type": "Failed", "status": "True", "reason": reason, "message": message,
                 "lastTransitionTime": stamp},
            ]
        else:
            status.update(succeeded=1, completionTime=stamp)
            status["conditions"] = [
                {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": stamp},
                {"type": "Complete", "status": "True", "lastTransitionTime": stamp},
            ]
        state.done = True
        if self._job_status(job, status):
            self.finished.append(job["metadata"]["name"])

    def _end(self, state: _JobState) -> None:
        """Stop the Job's running program, if any: SIGTERM to its process group, SIGKILL after the grace."""
        run, state.run = state.run, None
        if run is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.process.pid, signal.SIGTERM)
        try:
            run.process.wait(self.stop_grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run.process.pid, signal.SIGKILL)
            run.process.wait()
        run.log_file.close()
        with contextlib.suppress(OSError):
            self.logs[run.name] = run.log_path.read_text(errors="replace")

    # ---------------------------------------------------------------- writes

    def _pod_status(self, pod: Obj, phase: str, *, started: str = "", exit_code: int | None = None,
                    message: str = "") -> None:
        stamp = format_time(utc_now())
        container = ((pod.get("spec") or {}).get("containers") or [{}])[0].get("name", "main")
        if exit_code is None:
            state: Obj = {"running": {"startedAt": started or stamp}}
        else:
            state = {"terminated": {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                                    "finishedAt": stamp, **({"message": message[:4096]} if message else {})}}
        pod["status"] = {"phase": phase, "startTime": (pod.get("status") or {}).get("startTime") or stamp,
                         "containerStatuses": [{"name": container, "ready": phase == "Running",
                                                "restartCount": 0, "state": state}]}
        with contextlib.suppress(Conflict, NotFound):
            self.store.update_status(pod)

    def _job_status(self, job: Obj, status: Obj) -> bool:
        for _ in range(5):
            job["status"] = status
            try:
                self.store.update_status(job)
                return True
            except NotFound:
                return False
            except Conflict:
                fresh = self.store.try_get("batch/v1", "Job", job["metadata"]["name"], job["metadata"]["namespace"])
                if fresh is None or fresh["metadata"]["uid"] != job["metadata"]["uid"]:
                    return False
                job = fresh
        return False


def _finished(job: Obj) -> bool:
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions)
