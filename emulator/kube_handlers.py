"""What the emulator's REST API answers, without the HTTP: routing, verbs, subresources, evictions.

Why separate from `emulator/kubeapi.py`: the server there is the I/O edge (sockets, tokens, the request log);
this module decides each answer from the store, so tests can read it as the API server's rules. Every answer is
a Reply: an HTTP code, a JSON body (the object, an `XList`, or a `kind: Status`), and what the request log
records (the RBAC verb and resource, the names listed).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from emulator import disruption, patches
from emulator.kube_discovery import discover
from emulator.kube_query import QueryError, field_filter, label_filter
from emulator.selectors import SelectorError
from emulator.store import ApiError, Conflict, NotFound, ResourceType, Store, format_time, utc_now

Obj = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
DEFAULT_GRACE_SECONDS = 30
PATCH_ATTEMPTS = 10


class HttpError(Exception):
    """An answer other than success, rendered as the API server's `Status` object."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> Obj:
        body: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                     "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            body["details"] = self.details
        return body


@dataclass(frozen=True)
class Reply:
    code: int
    body: Any
    verb: str = ""
    resource: str = ""
    namespace: str = ""
    name: str = ""
    items: tuple[str, ...] = ()
    terminating: tuple[str, ...] = ()


@dataclass(frozen=True)
class Target:
    """A parsed request path: the kind, where, which object and which subresource."""

    rt: ResourceType
    namespace: str | None  # None: cluster-scoped kind, or all namespaces
    name: str | None
    sub: str | None

    @property
    def resource(self) -> str:
        return self.rt.plural + (f"/{self.sub}" if self.sub else "")

    def details(self) -> Obj:
        return {"name": self.name or "", "group": self.rt.group, "kind": self.rt.plural}


def _key(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else str(meta.get("name"))


def _success(code: int = 200, details: Obj | None = None) -> Obj:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code,
            **({"details": details} if details else {})}


class ApiCore:
    """Answers requests from the store; thread-safe (the store is, and evictions are serialised)."""

    def __init__(self, store: Store, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self._monotonic = monotonic
        self._evictions = threading.Lock()
        self._terminating: dict[str, tuple[float, str, str]] = {}  # pod uid -> (remove at, namespace, name)
        self._terminating_lock = threading.Lock()

    # ---------------------------------------------------------------- entry

    def handle(self, method: str, path: str, query: Mapping[str, str], content_type: str, body: Any) -> Reply:
        discovery = discover(self.store.resource_types(), path.rstrip("/"))
        if discovery is not None:
            return Reply(200, discovery, "get", "discovery") if method == "GET" else self._error(
                HttpError(405, "MethodNotAllowed", f"{method} is not allowed on {path}"))
        try:
            target = self._route(path)
        except HttpError as exc:
            return self._error(exc)
        verb = _verb(method, target, query)
        try:
            reply = self._dispatch(method, target, query, content_type, body)
        except HttpError as exc:
            return self._error(exc, target, verb)
        except ApiError as exc:
            return self._error(HttpError(exc.code, exc.reason, str(exc), target.details()), target, verb)
        except (QueryError, SelectorError) as exc:
            return self._error(HttpError(400, "BadRequest", str(exc)), target, verb)
        except patches.PatchError as exc:
            code, reason = (422, "Invalid") if exc.invalid else (400, "BadRequest")
            return self._error(HttpError(code, reason, f"the patch cannot be applied: {exc}"), target, verb)
        return Reply(reply.code, reply.body, verb, target.resource, target.namespace or "", target.name or "",
                     reply.items, reply.terminating)

    def _error(self, exc: HttpError, target: Target | None = None, verb: str = "") -> Reply:
        return Reply(exc.code, exc.status(), verb, target.resource if target else "",
                     (target.namespace or "") if target else "", (target.name or "") if target else "")

    def _route(self, path: str) -> Target:
        parts = [p for p in path.split("/") if p]
        if len(parts) >= 2 and parts[0] == "api":
            api_version, rest = parts[1], parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            api_version, rest = f"{parts[1]}/{parts[2]}", parts[3:]
        else:
            raise HttpError(404, "NotFound", "the server could not find the requested resource")
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise HttpError(404, "NotFound", "the server could not find the requested resource")
        try:
            rt = self.store.resource_for(api_version, resource=rest[0])
        except NotFound:
            raise HttpError(404, "NotFound", "the server could not find the requested resource") from None
        if namespace is not None and not rt.namespaced:
            raise HttpError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if rt.namespaced and name is not None and namespace is None:
            raise HttpError(404, "NotFound", "the server could not find the requested resource")
        allowed = {"status"} if rt.status_subresource else set()
        if rt.kind == "Pod":
            allowed.add("eviction")
        if sub is not None and sub not in allowed:
            raise HttpError(404, "NotFound", f"the server could not find the requested resource ({rt.plural}/{sub})")
        return Target(rt, namespace, name, sub)

    def _dispatch(self, method: str, target: Target, query: Mapping[str, str], content_type: str, body: Any) -> Reply:
        if method == "GET":
            if target.name is None:
                return self._list(target, query)
            if target.sub == "eviction":
                raise HttpError(405, "MethodNotAllowed", "the eviction subresource only accepts POST")
            return Reply(200, self._get(target))
        if method == "POST":
            if target.name is None:
                return self._create(target, body)
            if target.sub == "eviction":
                return self._evict(target, body)
            raise HttpError(405, "MethodNotAllowed", f"POST is not allowed on {target.resource}")
        if target.name is None or target.sub == "eviction":
            raise HttpError(405, "MethodNotAllowed", f"{method} is not supported on {target.resource} here")
        if method == "PUT":
            return self._replace(target, body)
        if method == "PATCH":
            return self._patch(target, content_type, body)
        if method == "DELETE":
            return self._delete(target, query, body)
        raise HttpError(405, "MethodNotAllowed", f"{method} is not allowed")

    # ---------------------------------------------------------------- reads

    def _get(self, target: Target) -> Obj:
        if target.rt.kind == "PodDisruptionBudget":
            self.refresh_budgets(target.namespace)
        return self.store.get(target.rt.api_version, target.rt.kind, target.name or "", target.namespace or "")

    def _list(self, target: Target, query: Mapping[str, str]) -> Reply:
        if query.get("watch") in ("1", "true", "True"):
            raise HttpError(400, "BadRequest", "watch is not supported by the emulator's API server")
        labels = label_filter(query.get("labelSelector"))
        fields = field_filter(query.get("fieldSelector"), target.rt.kind)
        if target.rt.kind == "PodDisruptionBudget":
            self.refresh_budgets(target.namespace)
        version = self.store.resource_version()
        items = [o for o in self.store.list(target.rt.api_version, target.rt.kind, target.namespace)
                 if labels(o) and fields(o)]
        metadata: Obj = {"resourceVersion": version}
        start = _continue_from(query.get("continue"), items)
        limit = _limit(query.get("limit"))
        page = items[start:start + limit] if limit else items[start:]
        if limit and start + limit < len(items):
            last = page[-1]["metadata"]
            after = [last.get("namespace") or "", last.get("name") or ""]
            metadata["continue"] = base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode()
            metadata["remainingItemCount"] = len(items) - start - limit
        body = {"kind": f"{target.rt.kind}List", "apiVersion": target.rt.api_version, "metadata": metadata,
                "items": page}
        return Reply(200, body, items=tuple(_key(o) for o in page),
                     terminating=tuple(_key(o) for o in page if o["metadata"].get("deletionTimestamp")))

    # ---------------------------------------------------------------- writes

    def _checked_body(self, target: Target, body: Any, *, for_name: str | None) -> Obj:
        if not isinstance(body, dict):
            raise HttpError(400, "BadRequest", "the request body must be a JSON object")
        obj = copy.deepcopy(body)
        if (obj.get("apiVersion") and not target.rt.serves(str(obj["apiVersion"]))) or (
                obj.get("kind") and obj["kind"] != target.rt.kind):
            raise HttpError(400, "BadRequest", f"the body is a {obj.get('apiVersion')} {obj.get('kind')}, not a "
                                               f"{target.rt.api_version} {target.rt.kind}")
        obj["apiVersion"], obj["kind"] = target.rt.api_version, target.rt.kind
        meta = obj.setdefault("metadata", {})
        if target.rt.namespaced:
            if meta.get("namespace") and meta["namespace"] != target.namespace:
                raise HttpError(400, "BadRequest", "the namespace of the provided object does not match the "
                                                   "namespace sent on the request")
            meta["namespace"] = target.namespace
        if for_name is not None and meta.get("name") != for_name:
            raise HttpError(400, "BadRequest", f"the name of the object ({meta.get('name')}) does not match the "
                                               f"name on the URL ({for_name})")
        return obj

    def _create(self, target: Target, body: Any) -> Reply:
        if target.rt.namespaced and target.namespace is None:
            raise HttpError(405, "MethodNotAllowed", f"create {target.rt.plural} needs a namespace in the path")
        created = self.store.create(self._checked_body(target, body, for_name=None))
        if target.rt.kind == "PodDisruptionBudget":
            self.refresh_budgets(target.namespace)
            created = self.store.get(target.rt.api_version, target.rt.kind, created["metadata"]["name"],
                                     target.namespace or "")
        return Reply(201, created)

    def _write(self, target: Target, obj: Obj) -> Obj:
        if target.sub == "status":
            return self.store.update_status(obj)
        return self.store.update(obj)

    def _replace(self, target: Target, body: Any) -> Reply:
        return Reply(200, self._write(target, self._checked_body(target, body, for_name=target.name)))

    def _patch(self, target: Target, content_type: str, body: Any) -> Reply:
        if content_type == MERGE_PATCH:
            apply: Callable[[Any, Any], Any] = patches.merge_patch
        elif content_type == JSON_PATCH:
            apply = patches.json_patch
        elif content_type == STRATEGIC_PATCH and not target.rt.crd:
            apply = patches.strategic_merge_patch
        else:
            raise HttpError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                                                         f"accepted media types include: {MERGE_PATCH}, {JSON_PATCH}"
                                                         + ("" if target.rt.crd else f", {STRATEGIC_PATCH}"))
        for _ in range(PATCH_ATTEMPTS):
            current = self.store.get(target.rt.api_version, target.rt.kind, target.name or "", target.namespace or "")
            patched = apply(current, body)
            if not isinstance(patched, dict):
                raise patches.PatchError("the patched object is not a JSON object", invalid=True)
            meta = patched.setdefault("metadata", {})
            if meta.get("name") != target.name or (target.rt.namespaced and meta.get("namespace") != target.namespace):
                raise HttpError(400, "BadRequest", "a patch cannot change metadata.name or metadata.namespace")
            pinned = meta.get("resourceVersion") != current["metadata"]["resourceVersion"]
            patched["apiVersion"], patched["kind"] = current["apiVersion"], current["kind"]
            try:
                return Reply(200, self._write(target, patched))
            except Conflict:
                if pinned:
                    raise
        raise HttpError(409, "Conflict", f"Operation cannot be fulfilled on {target.rt.plural} \"{target.name}\": "
                                         "too many concurrent writes", target.details())

    def _delete(self, target: Target, query: Mapping[str, str], body: Any) -> Reply:
        options = body if isinstance(body, dict) else {}
        uid = (options.get("preconditions") or {}).get("uid")
        grace = options.get("gracePeriodSeconds", query.get("gracePeriodSeconds"))
        if target.sub is not None:
            raise HttpError(405, "MethodNotAllowed", f"DELETE is not allowed on {target.resource}")
        if target.rt.kind == "Pod":
            return Reply(200, self._delete_pod(target.namespace or "", target.name or "", uid, grace))
        api, kind, name, ns = target.rt.api_version, target.rt.kind, target.name or "", target.namespace or ""
        self.store.delete(api, kind, name, ns, uid=uid)
        left = self.store.try_get(api, kind, name, ns)
        return Reply(200, left if left is not None else _success(200, target.details()))

    # ---------------------------------------------------------------- pods

    def _delete_pod(self, namespace: str, name: str, uid: str | None, grace: Any) -> Obj:
        """Pods bound to a Node get their grace period (the kubelet stops them); others go at once."""
        pod = self.store.get("v1", "Pod", name, namespace)
        seconds = _grace(pod, grace)
        if seconds <= 0:
            self.store.delete("v1", "Pod", name, namespace, uid=uid)
            left = self.store.try_get("v1", "Pod", name, namespace)
            return left if left is not None else pod
        marked = self.store.delete_gracefully("v1", "Pod", name, namespace, uid=uid, grace_seconds=seconds)
        with self._terminating_lock:
            self._terminating.setdefault(marked["metadata"]["uid"], (self._monotonic() + seconds, namespace, name))
        return marked

    def reap_terminated_pods(self) -> None:
        """The kubelet's part: a pod whose grace period has ended is removed (finalizers still hold it)."""
        now = self._monotonic()
        with self._terminating_lock:
            due = [(uid, ns, name) for uid, (at, ns, name) in self._terminating.items() if at <= now]
            for uid, _, _ in due:
                del self._terminating[uid]
        for uid, namespace, name in due:
            with contextlib.suppress(NotFound, Conflict):
                self.store.delete("v1", "Pod", name, namespace, uid=uid)

    def _evict(self, target: Target, body: Any) -> Reply:
        if not isinstance(body, dict) or body.get("kind") != "Eviction":
            raise HttpError(400, "BadRequest", "the body must be a policy/v1 Eviction")
        meta = body.get("metadata") or {}
        if meta.get("name") and meta["name"] != target.name:
            raise HttpError(400, "BadRequest", "name in URL does not match name in Eviction object")
        namespace, name = target.namespace or "", target.name or ""
        options = body.get("deleteOptions") or {}
        with self._evictions:
            pod = self.store.get("v1", "Pod", name, namespace)
            budgets = self.store.list("policy/v1", "PodDisruptionBudget", namespace)
            pods = self.store.list("v1", "Pod", namespace)
            verdict = disruption.judge_eviction(pod, budgets, pods, format_time(utc_now()))
            if verdict.budget and verdict.budget_status is not None:
                self._write_budget_status(namespace, verdict.budget, verdict.budget_status)
            if verdict.code != 201:
                details = {**target.details(), **({"causes": [{"reason": "DisruptionBudget", "message": verdict.cause}]}
                                                  if verdict.cause else {})}
                raise HttpError(verdict.code, verdict.reason, verdict.message, details)
            self._delete_pod(namespace, name, (options.get("preconditions") or {}).get("uid"),
                             options.get("gracePeriodSeconds"))
        return Reply(201, _success(201))

    # ---------------------------------------------------------------- budgets

    def refresh_budgets(self, namespace: str | None) -> None:
        """Write each budget's computed status when it changed (the disruption controller's job)."""
        with self._evictions:
            for pdb in self.store.list("policy/v1", "PodDisruptionBudget", namespace):
                ns = pdb["metadata"]["namespace"]
                status = disruption.budget_status(pdb, self.store.list("v1", "Pod", ns), pdb.get("status"))
                if status != pdb.get("status"):
                    self._write_budget_status(ns, pdb["metadata"]["name"], status)

    def _write_budget_status(self, namespace: str, name: str, status: Obj) -> None:
        for _ in range(PATCH_ATTEMPTS):
            pdb = self.store.try_get("policy/v1", "PodDisruptionBudget", name, namespace)
            if pdb is None:
                return
            pdb["status"] = status
            try:
                self.store.update_status(pdb)
                return
            except Conflict:
                continue


def _verb(method: str, target: Target, query: Mapping[str, str]) -> str:
    if method == "GET":
        if target.name is not None:
            return "get"
        return "watch" if query.get("watch") in ("1", "true", "True") else "list"
    return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method, method.lower())


def _grace(pod: Obj, requested: Any) -> int:
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed") or not (pod.get("spec") or {}).get("nodeName"):
        return 0
    if requested is not None:
        try:
            return max(0, int(requested))
        except (TypeError, ValueError):
            raise HttpError(400, "BadRequest", f"gracePeriodSeconds {requested!r} is not a number") from None
    configured = (pod.get("spec") or {}).get("terminationGracePeriodSeconds")
    return int(configured) if isinstance(configured, int) and configured >= 0 else DEFAULT_GRACE_SECONDS


def _limit(raw: str | None) -> int:
    if raw in (None, ""):
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise HttpError(400, "BadRequest", f"limit {raw!r} is not a number") from None
    return max(0, value)


def _continue_from(token: str | None, items: list[Obj]) -> int:
    """Index of the first item after the token's key (items are sorted by namespace/name, as the store lists)."""
    if not token:
        return 0
    try:
        namespace, name = json.loads(base64.urlsafe_b64decode(token.encode()))["after"]
    except (ValueError, KeyError, TypeError):
        raise HttpError(400, "BadRequest", "the continue token is not valid") from None

    def position(obj: Obj) -> tuple[str, str]:
        return obj["metadata"].get("namespace") or "", obj["metadata"].get("name") or ""

    return next((i for i, o in enumerate(items) if position(o) > (str(namespace), str(name))), len(items))
