"""A Job's pod runs its container's command for real, with a pod's environment, and the Job reflects the exit code.

The drain e2e test relies on this runner; here its own promises are pinned down with tiny programs: the pod's
environment reaches the program (API address, token, downward-API fields), exit codes become Job conditions,
a deleted Job's program is stopped, activeDeadlineSeconds ends a Job that runs too long, nothing outlives stop().
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from emulator.job_pods import ProgramJobRunner
from emulator.kubeapi import KubeApiServer
from emulator.store import Store

Obj = dict[str, Any]

# Reads its own Pod through the API with the mounted token, as an in-cluster client does.
WHO_AM_I = """
import json, os, urllib.request
host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
token = open(os.environ["KUBE_TOKEN_FILE"]).read().strip()
url = f"{os.environ['KUBE_API_SCHEME']}://{host}:{port}/api/v1/namespaces/{os.environ['POD_NAMESPACE']}/pods/{os.environ['POD_NAME']}"
request = urllib.request.Request(url, headers={"Authorization": "Bearer " + token})
pod = json.load(urllib.request.urlopen(request))
meta = pod["metadata"]
print("I am", meta["name"], "of job", meta["labels"]["job-name"], "greeting", os.environ["GREETING"])
"""


def job(name: str, code: str, **spec: Any) -> Obj:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": "default"},
            "spec": {"backoffLimit": 0, **spec, "template": {"spec": {"restartPolicy": "Never", "containers": [{
                "name": "main", "image": "x", "command": ["python", "-c", code],
                "env": [{"name": "GREETING", "value": "hello"},
                        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
            }]}}}}


def condition(store: Store, name: str) -> Obj | None:
    current = store.try_get("batch/v1", "Job", name, "default") or {}
    return next((c for c in (current.get("status") or {}).get("conditions") or []
                 if c["type"] in ("Complete", "Failed") and c["status"] == "True"), None)


def wait_until(predicate: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


@pytest.fixture
def cluster() -> Iterator[tuple[Store, KubeApiServer, ProgramJobRunner]]:
    store = Store()
    api = KubeApiServer(store).start()
    runner = ProgramJobRunner(store, api, poll_interval=0.02, backoff=0.05, stop_grace=2.0).start()
    try:
        yield store, api, runner
    finally:
        runner.stop()
        api.stop()
    assert runner.running() == []
    assert not [t for t in threading.enumerate() if t.name.startswith(f"kube-api:{api.port}")]


def test_the_program_sees_a_pods_environment_and_its_success_completes_the_job(
    cluster: tuple[Store, KubeApiServer, ProgramJobRunner],
) -> None:
    store, api, runner = cluster
    store.create(job("hello", WHO_AM_I))
    done = wait_until(lambda: condition(store, "hello"))
    assert done["type"] == "Complete"
    finished = store.get("batch/v1", "Job", "hello", "default")["status"]
    assert finished["succeeded"] == 1 and finished["active"] == 0 and finished["completionTime"]
    [pod] = store.list("v1", "Pod", "default")
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "Job" and pod["status"]["phase"] == "Succeeded"
    assert runner.logs[pod["metadata"]["name"]].strip() == f"I am {pod['metadata']['name']} of job hello greeting hello"
    assert [r.user for r in api.requests()] == ["system:serviceaccount:default:default"]
    assert runner.finished == ["hello"]
    store.delete("batch/v1", "Job", "hello", "default")
    assert store.list("v1", "Pod", "default") == []  # the pod goes with its Job


def test_failures_are_retried_until_the_backoff_limit(cluster: tuple[Store, KubeApiServer, ProgramJobRunner]) -> None:
    store, _, runner = cluster
    store.create(job("fails", "import sys; print('broken'); sys.exit(3)", backoffLimit=2))
    failed = wait_until(lambda: condition(store, "fails"))
    assert (failed["type"], failed["reason"]) == ("Failed", "BackoffLimitExceeded")
    assert store.get("batch/v1", "Job", "fails", "default")["status"]["failed"] == 3
    pods = store.list("v1", "Pod", "default")
    assert len(pods) == 3
    assert {p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] for p in pods} == {3}
    assert all(text == "broken\n" for text in runner.logs.values()) and len(runner.logs) == 3


def test_a_deleted_job_stops_its_program(cluster: tuple[Store, KubeApiServer, ProgramJobRunner]) -> None:
    store, _, runner = cluster
    store.create(job("sleeper", "import time; print('started', flush=True); time.sleep(120)"))
    wait_until(runner.running)
    store.delete("batch/v1", "Job", "sleeper", "default")
    wait_until(lambda: not runner.running(), timeout=10)
    assert condition(store, "sleeper") is None


@pytest.mark.slow  # waits out a one-second active deadline
def test_active_deadline_ends_a_job_that_runs_too_long(cluster: tuple[Store, KubeApiServer, ProgramJobRunner]) -> None:
    store, _, runner = cluster
    store.create(job("slow", "import time; time.sleep(120)", activeDeadlineSeconds=1))
    failed = wait_until(lambda: condition(store, "slow"))
    assert (failed["type"], failed["reason"]) == ("Failed", "DeadlineExceeded")
    assert runner.running() == []
