"""Helpers for the emulator tests: a tiny hook server on an ephemeral port, test CRDs and controller builders.

The hook server is deliberately not our real hook app: these tests pin down the emulator's behaviour, so the
hooks here are canned or trivially computed answers whose effect is easy to assert. `real_cluster` is the
exception, for end-to-end tests: our real hook app in-process, the repo's CRDs and controllers, Nodes and Jobs.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from emulator.metacontroller import Metacontroller
from emulator.store import Store

Obj = dict[str, Any]
# A handler gets the request body and returns a dict (200 JSON), or (status, body[, headers]).
Handler = Callable[[Obj], Any]

GROUP = "test.example.com"
API = f"{GROUP}/v1"


def widget_crd(*, status_subresource: bool = True, scope: str = "Namespaced") -> Obj:
    """A parent kind with a structural schema: status fields outside it are pruned by the store."""
    version: Obj = {
        "name": "v1",
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": {
            "type": "object",
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": {"type": "object"},
                "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "properties": {
                    "selector": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                    "size": {"type": "integer"},
                }},
                "status": {"type": "object", "properties": {
                    "phase": {"type": "string"},
                    "count": {"type": "integer"},
                    "observedGeneration": {"type": "integer"},
                    "children": {"type": "array", "items": {"type": "string"}},
                }},
            },
        }},
    }
    if status_subresource:
        version["subresources"] = {"status": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{GROUP}"},
        "spec": {"group": GROUP, "scope": scope, "versions": [version],
                 "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"}},
    }


def widget(name: str, namespace: str = "default", *, labels: Obj | None = None, spec: Obj | None = None) -> Obj:
    return {"apiVersion": API, "kind": "Widget",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {"app": name}},
            "spec": {"selector": {"matchLabels": {"app": name}}, **(spec or {})}}


def configmap(name: str, namespace: str = "default", *, labels: Obj | None = None, data: Obj | None = None) -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace, **({"labels": labels} if labels else {})},
            "data": data or {}}


def hook_spec(base_url: str, path: str, version: str = "v2", **webhook: Any) -> Obj:
    return {"version": version, "webhook": {"url": base_url + path, **webhook}}


def composite(name: str, base_url: str, *, version: str = "v2", customize: bool = False, finalize: bool = False,
              method: str = "OnDelete", **spec: Any) -> Obj:
    hooks = {"sync": hook_spec(base_url, "/sync", version)}
    if customize:
        hooks["customize"] = hook_spec(base_url, "/customize", version)
    if finalize:
        hooks["finalize"] = hook_spec(base_url, "/finalize", version)
    return {"apiVersion": "metacontroller.k8s.io/v1alpha1", "kind": "CompositeController",
            "metadata": {"name": name},
            "spec": {"parentResource": {"apiVersion": API, "resource": "widgets"},
                     "childResources": [{"apiVersion": "v1", "resource": "configmaps",
                                         "updateStrategy": {"method": method}}],
                     "hooks": hooks, **spec}}


def decorator(name: str, base_url: str, *, version: str = "v2", customize: bool = False, finalize: bool = False,
              resource: Obj | None = None, **spec: Any) -> Obj:
    hooks = {"sync": hook_spec(base_url, "/sync", version)}
    if customize:
        hooks["customize"] = hook_spec(base_url, "/customize", version)
    if finalize:
        hooks["finalize"] = hook_spec(base_url, "/finalize", version)
    return {"apiVersion": "metacontroller.k8s.io/v1alpha1", "kind": "DecoratorController",
            "metadata": {"name": name},
            "spec": {"resources": [resource or {"apiVersion": API, "resource": "widgets"}],
                     "attachments": [{"apiVersion": "v1", "resource": "configmaps"}],
                     "hooks": hooks, **spec}}


def widget_store(*objects: Obj) -> Store:
    """A Store serving the Widget CRD (the parent kind of the emulator's tests), holding `objects`."""
    store = Store()
    store.register_crd(widget_crd())
    for obj in objects:
        store.create(obj)
    return store


class HookServer:
    """Threaded HTTP server answering POSTs by path with the registered handlers; records every request."""

    def __init__(self, handlers: dict[str, Handler] | None = None) -> None:
        self.handlers: dict[str, Handler] = dict(handlers or {})
        self.requests: list[tuple[str, Obj, dict[str, str]]] = []
        self.lock = threading.Lock()
        server = self

        class _Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                with server.lock:
                    server.requests.append((self.path, body, dict(self.headers)))
                handler = server.handlers.get(self.path)
                if handler is None:
                    self._send(404, {"error": "no such hook"}, {})
                    return
                result = handler(body)
                status, payload, headers = 200, result, {}
                if isinstance(result, tuple):
                    status, payload, *rest = result
                    headers = rest[0] if rest else {}
                self._send(status, payload, headers)

            def _send(self, status: int, payload: Any, headers: dict[str, str]) -> None:
                data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()

    def calls(self, path: str) -> list[Obj]:
        with self.lock:
            return [body for p, body, _ in self.requests if p == path]

    def headers(self, path: str) -> list[dict[str, str]]:
        with self.lock:
            return [h for p, _, h in self.requests if p == path]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def running(store: Store, controllers: list[Obj], **kwargs: Any) -> Iterator[Metacontroller]:
    """A started emulator with test-friendly backoff, stopped afterwards."""
    kwargs.setdefault("backoff_cap", 0.5)
    mc = Metacontroller(store, controllers, **kwargs)
    mc.start()
    try:
        yield mc
    finally:
        mc.stop()


def get(store: Store, kind: str, name: str, namespace: str = "default") -> Obj | None:
    api = "v1" if kind in ("ConfigMap", "Secret", "Namespace", "Node") else API
    return store.try_get(api, kind, name, namespace)


REPO = Path(__file__).resolve().parent.parent
HOOK_SERVICE = "metal-machine-hooks.metal-machine-hooks"


@dataclass
class RealCluster:
    """A running emulated cluster around our real hook app; `app` is the Flask app (its /metrics, its config)."""

    store: Store
    mc: Metacontroller
    joiner: Any  # emulator.nodes.NodeJoiner
    jobs: Any  # emulator.jobs.JobRunner, or emulator.job_pods.ProgramJobRunner with jobs="program"
    app: Any
    hooks_url: str
    kube_api: Any = None  # emulator.kubeapi.KubeApiServer the Jobs' programs talk to (jobs="program")
    target: Any = None  # TargetCluster with two_clusters=True: where the Nodes live

    @property
    def node_store(self) -> Store:
        """Where Nodes, the Job programs' pods and bootstrap token Secrets live: the target's store if there is one."""
        return self.target.store if self.target is not None else self.store

    @property
    def node_api(self) -> Any:
        """The REST API the Jobs' programs act on (jobs="program"): the target's if there is one."""
        return self.target.api if self.target is not None else self.kube_api

    def node_user(self, account: str, namespace: str = "default") -> str:
        """Who the Jobs' programs are at `node_api`: the target kubeconfig's identity, else the Job's account."""
        return TARGET_USER if self.target is not None else f"system:serviceaccount:{namespace}:{account}"


@dataclass
class TargetCluster:
    """The second cluster of `real_cluster(two_clusters=True)`: its store (Nodes, pods, bootstrap tokens), its REST
    API (http on loopback, bearer `token`), and the kubeconfig Secret for it created in the control store."""

    store: Store
    api: Any  # emulator.kubeapi.KubeApiServer
    token: str
    secret_name: str
    namespace: str

    def kubeconfig(self) -> str:
        return target_kubeconfig(self.api.url, self.token)


def example_tokens() -> dict[str, list[str]]:
    """The simulator's tokens for kubernetes/examples/: the example Secret's token, for the example class's project."""
    from bench.converge import example_credentials

    token, project = example_credentials()
    return {token: [project]}


TARGET_SECRET = "target-kubeconfig"
TARGET_USER = "system:serviceaccount:kube-system:metal-machine-hooks-target"


def target_kubeconfig(server: str, token: str) -> str:
    """A kubeconfig as `kubectl config view --raw --minify --flatten` writes it (block YAML), for the target."""
    return (f"apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: {server}\n  name: target\n"
            f"contexts:\n- context:\n    cluster: target\n    user: hooks\n  name: target\n"
            f"current-context: target\npreferences: {{}}\nusers:\n- name: hooks\n  user:\n    token: {token}\n")


def target_kubeconfig_secret(server: str, token: str, namespace: str, name: str = TARGET_SECRET) -> Obj:
    """The labelled Secret that names a namespace's target cluster (hooks/target/kubeconfig.py)."""
    from hooks.target.kubeconfig import KUBECONFIG_KEY, TARGET_LABEL, TARGET_LABEL_VALUE

    text = target_kubeconfig(server, token)
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": namespace, "labels": {TARGET_LABEL: TARGET_LABEL_VALUE}},
            "data": {KUBECONFIG_KEY: base64.b64encode(text.encode()).decode()}}


@contextmanager
def real_cluster(sim_url: str, sim_base_url: str, *, settings: Any = None, controllers: list[Obj] | None = None,
                 jobs: str = "stand-in", gc_delay: float = 0.0, heartbeat_period: float = 0.0,
                 two_clusters: bool = False, target_namespace: str = "default", target_resync: float = 1.0,
                 **mc_kwargs: Any) -> Iterator[RealCluster]:
    """Our hook app (werkzeug, ephemeral port) under the emulator with the repo's CRDs and controllers.

    `settings` defaults to the simulator's URL with a 1 s retry budget; `controllers` to metacontroller/*.yaml
    (tests may lower a resync period first); `gc_delay` goes to the Store and `heartbeat_period` to the Node
    joiner; other keywords go to Metacontroller (informer_lag, metadata_conflict_rate, ...). Nodes join as devices
    turn active and, with the default `jobs="stand-in"`, drain Jobs succeed at once (both polled every 20 ms).
    `jobs="program"` runs the Jobs' pods for real instead: their programs (`python -m drain ...`) as
    subprocesses against a Kubernetes REST API over the store (`kube_api`), with a 0.5 s back-off between
    failed pods. A subprocess per drain made the MachineDeployment lifecycle scenario take about twice as long
    on a loaded machine, so the drain e2e tests use it and the flows that only need drains to finish do not.
    `two_clusters=True` adds a target cluster (issue 17): a second Store with its own REST API, where the Node
    joiner puts the Nodes instead of the control store, and a kubeconfig Secret for it (http on loopback, bearer
    token) in `target_namespace` of the control store (`cluster.target`). Jobs stay in the control store; the
    stand-in runner acts on the target for Jobs that mount its kubeconfig (hooks/target/jobs.py), as the real
    programs do through KUBECONFIG. Target Nodes are not watched, so a Node change reaches a Machine at its next
    resync: with the repo's controllers, the Machine controller's resync period is `target_resync` seconds
    (docs/operations.md, "Two clusters"). Everything, subprocesses included, is stopped afterwards.
    """
    import dataclasses
    import secrets

    from werkzeug.serving import make_server

    from emulator.hookauth import seed_auth_secrets
    from emulator.jobs import JobRunner
    from emulator.metacontroller import load_controllers
    from emulator.nodes import NodeJoiner
    from hooks.config import Settings
    from hooks.mcm.node_jobs import NodeJobSettings
    from hooks.server.app import create_app

    # The real token path: the hook server requires the token Metacontroller reads from the Secret the controller
    # configs' endpointConfigs name, as an installation does (docs/operations.md). The Node-side settings come from
    # the environment, as the hook server reads them (a test sets the token key file).
    auth_token = secrets.token_urlsafe(24)
    settings = settings or Settings(metal_api_url=sim_url, retry_budget=1.0, node_jobs=NodeJobSettings.from_env())
    app = create_app(dataclasses.replace(settings, hook_auth_token=auth_token, hook_auth_required=True))
    http = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    hooks_url = f"http://127.0.0.1:{http.server_port}"
    store = Store(gc_delay=gc_delay)
    store.load_yaml(sorted(p for p in (REPO / "kubernetes" / "crds").glob("*.yaml") if p.name != "kustomization.yaml"))
    mc_kwargs.setdefault("backoff_cap", 0.5)
    if controllers is None:
        controllers = load_controllers(REPO / "metacontroller")
        if two_clusters:
            for controller in controllers:
                if controller["metadata"]["name"] == "metal-machines":
                    controller["spec"]["resyncPeriodSeconds"] = target_resync
    seed_auth_secrets(store, controllers, auth_token)
    mc = Metacontroller(store, controllers, service_urls={HOOK_SERVICE: hooks_url}, **mc_kwargs)
    target = None
    if two_clusters:
        from emulator.kubeapi import KubeApiServer as TargetApi

        target_store = Store(gc_delay=gc_delay)
        token = secrets.token_urlsafe(24)
        target_api = TargetApi(target_store, tokens={token: TARGET_USER}).start()
        target = TargetCluster(target_store, target_api, token, TARGET_SECRET, target_namespace)
        store.create(target_kubeconfig_secret(target_api.url, token, target_namespace))
    node_store = target.store if target is not None else store
    joiner = NodeJoiner(node_store, sim_base_url, poll_interval=0.02, heartbeat_period=heartbeat_period)
    kube_api = None
    if jobs == "program":
        from emulator.job_pods import ProgramJobRunner
        from emulator.kubeapi import KubeApiServer

        kube_api = KubeApiServer(store).start()
        runner: Any = ProgramJobRunner(store, kube_api, poll_interval=0.02, backoff=0.5)
    elif jobs == "stand-in":
        runner = JobRunner(store, poll_interval=0.02, node_store=target.store if target is not None else None)
    else:
        raise ValueError(f"jobs must be 'stand-in' or 'program', not {jobs!r}")
    mc.start()
    joiner.start()
    runner.start()
    try:
        yield RealCluster(store, mc, joiner, runner, app, hooks_url, kube_api, target)
    finally:
        runner.stop()
        if kube_api is not None:
            kube_api.stop()
        if target is not None:
            target.api.stop()
        joiner.stop()
        mc.stop()
        http.shutdown()
