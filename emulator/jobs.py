"""Stand-in for the Job controller and its pod: Jobs in the store finish, so hooks that wait on a Job can proceed.

The drain e2e tests run Jobs' real programs instead (`emulator/job_pods.py`, against `emulator/kubeapi.py`); this
stand-in remains for `make demo`, the chaos run and the e2e flows that only need drains to finish quickly.

Why: the Machine finalize hook declares a drain Job and waits for it to succeed or fail. The emulated cluster has
no kubelet to run the drain program, so this runner plays its part: each Job gets the status the Job
controller writes once its pod has run (`succeeded: 1` plus Complete=True, or `failed` plus Failed=True), after a
configurable delay. The outcome defaults to success (a drain of a Node with nothing left to evict); tests pick
failures per Job name. As the drain program's first step, the Node named by the Job's `metal-machine-hooks/node`
annotation is cordoned (`spec.unschedulable: true`) when the pod starts, so tests can observe the order.

Two clusters (issue 17): with `node_store` (the target cluster's store), a Job that mounts the target kubeconfig
(hooks/target/jobs.py) acts there, as its program would through KUBECONFIG: the Node it cordons, the Nodes and
bootstrap token Secrets the Node-side program changes are the target's. The Jobs themselves stay in `store`.

API:

    runner = JobRunner(store, delay=0.0, poll_interval=0.05, default_outcome="succeeded", node_store=None)
    runner.set_outcome("m1-drain", "failed")   # "succeeded" | "failed" | "running" (never finishes)
    runner.tick(); runner.start(); runner.stop()
    runner.finished                            # names of Jobs this runner completed, in order
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

from emulator import node_jobs_standin
from emulator.poller import Poller
from emulator.store import Conflict, NotFound, Store, format_time, utc_now
from hooks.target.jobs import mounted_secret

Obj = dict[str, Any]
OUTCOMES = ("succeeded", "failed", "running")
NODE_ANNOTATION = "metal-machine-hooks/node"  # hooks/mcm/drain.py names the drained Node here


class JobRunner(Poller):
    thread_name = "job-runner"

    def __init__(
        self,
        store: Store,
        *,
        delay: float = 0.0,
        poll_interval: float = 0.05,
        default_outcome: str = "succeeded",
        monotonic: Callable[[], float] = time.monotonic,
        node_jobs_key_file: str | None = None,
        node_store: Store | None = None,
    ) -> None:
        """`node_jobs_key_file`: run the Node-side Jobs' program in-process (emulator/node_jobs_standin.py) with this
        bootstrap token key, its exit code deciding the outcome; None: they only finish, as drains do.
        `node_store`: the target cluster, where Jobs mounting the target kubeconfig act (None: one cluster)."""
        if default_outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}")
        super().__init__(poll_interval)
        self.store = store
        self.node_store = node_store
        self.delay = delay
        self.default_outcome = default_outcome
        self._now = monotonic
        self._outcomes: dict[str, str] = {}
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self.finished: list[str] = []
        self.node_jobs_key_file = node_jobs_key_file
        self.logs: dict[str, str] = {}  # the Node-side program's output per Job (never a token's secret half)

    def set_outcome(self, name: str, outcome: str) -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}")
        with self._lock:
            self._outcomes[name] = outcome

    def tick(self) -> None:
        now = self._now()
        for job in self.store.list("batch/v1", "Job"):
            meta = job["metadata"]
            status = job.get("status") or {}
            if status.get("succeeded") or status.get("failed") or meta.get("deletionTimestamp"):
                continue
            with self._lock:
                started = meta["uid"] in self._seen
                first = self._seen.setdefault(meta["uid"], now)
                outcome = self._outcomes.get(meta["name"], self.default_outcome)
            if not started:
                cluster = self.cluster_of(job)
                self._cordon(cluster, str((meta.get("annotations") or {}).get(NODE_ANNOTATION) or ""))
                if self.node_jobs_key_file is not None and node_jobs_standin.is_node_job(job) \
                        and meta["name"] not in self._outcomes:
                    ok, self.logs[meta["name"]] = node_jobs_standin.run(cluster, job, self.node_jobs_key_file)
                    with self._lock:
                        self._outcomes.setdefault(meta["name"], "succeeded" if ok else "failed")
                    outcome = self._outcomes[meta["name"]]
            # The delay plays a drain's duration; a Node-side program has already run (node_jobs_standin).
            ran = meta["name"] in self.logs
            if outcome == "running" or (now - first < self.delay and not ran):
                if "startTime" not in status:
                    self._write(job, {"startTime": format_time(utc_now()), "active": 1})
                continue
            stamp = format_time(utc_now())
            if outcome == "succeeded":
                result = {"succeeded": 1, "completionTime": stamp, "conditions": [
                    {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": stamp},
                    {"type": "Complete", "status": "True", "lastTransitionTime": stamp},
                ]}
            else:
                result = {"failed": 1, "conditions": [
                    {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded",
                     "lastTransitionTime": stamp},
                    {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                     "message": "Job has reached the specified backoff limit", "lastTransitionTime": stamp},
                ]}
            if self._write(job, {"startTime": status.get("startTime", stamp), **result}):
                self.finished.append(meta["name"])

    def cluster_of(self, job: Obj) -> Store:
        """The store a Job's program acts on: the target's when it mounts the target kubeconfig and there is one."""
        if self.node_store is not None and mounted_secret(job):
            return self.node_store
        return self.store

    def _cordon(self, store: Store, node_name: str) -> None:
        for _ in range(5):  # the NodeJoiner writes Node status concurrently: retry conflicts, as kubectl would
            node = store.try_get("v1", "Node", node_name) if node_name else None
            if node is None or (node.get("spec") or {}).get("unschedulable"):
                return
            node.setdefault("spec", {})["unschedulable"] = True
            try:
                store.update(node)
                return
            except NotFound:
                return
            except Conflict:
                continue

    def _write(self, job: Obj, status: Obj) -> bool:
        job["status"] = status
        with contextlib.suppress(Conflict, NotFound):
            self.store.update_status(job)
            return True
        return False
