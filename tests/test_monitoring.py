"""Monitoring that an on-call engineer can trust: every alert and dashboard panel queries a metric that something
exports (the hook server's registry or the kube-state-metrics configuration), every runbook link lands on a heading
of docs/troubleshooting.md, and the kube-state-metrics paths exist in the CRDs."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from hooks.equinix.client import ApiCall
from hooks.mcm import vocabulary as mcm
from hooks.server import metrics

REPO = Path(__file__).resolve().parent.parent
MONITORING = REPO / "kubernetes" / "monitoring"
TROUBLESHOOTING = REPO / "docs" / "troubleshooting.md"
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
                "offset", "inf", "nan"}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects: identifiers that are not functions, keywords, label names in
    matchers or grouping clauses, durations or strings."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    found = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        token = match.group(0)
        if token.lower() in PROMQL_WORDS or expr[match.end():].lstrip().startswith("("):
            continue
        if match.start() > 0 and (expr[match.start() - 1].isdigit() or expr[match.start() - 1] == "."):
            continue  # the exponent of a number such as 1e3
        found.add(token)
    return found


@functools.cache
def rule_file() -> dict[str, Any]:
    return yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())


def alerts() -> list[dict[str, Any]]:
    return [rule for group in rule_file()["spec"]["groups"] for rule in group["rules"] if "alert" in rule]


@functools.cache
def dashboard() -> dict[str, Any]:
    return json.loads((MONITORING / "grafana-dashboard.json").read_text())


def dashboard_exprs() -> list[tuple[str, str]]:
    found = [(panel["title"], target["expr"]) for panel in dashboard()["panels"]
             for target in panel.get("targets", [])]
    for variable in dashboard()["templating"]["list"]:
        query = variable.get("query")
        text = query.get("query") if isinstance(query, dict) else None
        if text:
            # label_values(metric, label): the first argument is the metric.
            match = re.match(r"label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)", text)
            found.append((f"variable {variable['name']}", match.group(1) if match else text))
    return found


@functools.cache
def ksm_config() -> dict[str, Any]:
    (config_map,) = [d for d in yaml.safe_load_all((MONITORING / "kube-state-metrics-crs.yaml").read_text()) if d]
    assert config_map["kind"] == "ConfigMap"
    return yaml.safe_load(config_map["data"]["config.yaml"])


@functools.cache
def ksm_names() -> set[str]:
    """Names kube-state-metrics gives the configured metrics: metricNamePrefix + '_' + name (each config sets the
    prefix, so the default prefix, which changed between releases, never applies)."""
    names = set()
    for resource in ksm_config()["spec"]["resources"]:
        prefix = resource["metricNamePrefix"]
        assert prefix, "set metricNamePrefix: the default differs between kube-state-metrics releases"
        names |= {f"{prefix}_{metric['name']}" for metric in resource["metrics"]}
    return names


@functools.cache
def exported() -> set[str]:
    return metrics.registered_names() | ksm_names()


def test_promql_name_extraction() -> None:
    expr = ('histogram_quantile(0.99, sum by (le, hook) (rate(a_bucket{hook=~"x|y"}[5m]))) > 2e1 '
            'and on (namespace, machine) (time() - b_created > 1500) unless bool c')
    assert promql_metric_names(expr) == {"a_bucket", "b_created", "c"}


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: a["alert"])
def test_alert_queries_only_exported_metrics(alert: dict[str, Any]) -> None:
    names = promql_metric_names(alert["expr"])
    assert names, f"{alert['alert']}: no metric found in its expression"
    assert names - exported() == set()


@pytest.mark.parametrize(("title", "expr"), dashboard_exprs(), ids=lambda v: str(v)[:40])
def test_dashboard_panel_queries_only_exported_metrics(title: str, expr: str) -> None:
    names = promql_metric_names(expr)
    assert names, f"{title}: no metric found in {expr!r}"
    assert names - exported() == set(), title


def test_dashboard_panels_do_not_overlap_and_use_the_datasource_variable() -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in dashboard()["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    assert len({p["id"] for p in dashboard()["panels"]}) == len(dashboard()["panels"])


def test_a_misspelt_metric_is_noticed() -> None:
    """Guards the two tests above: a typo in a suffix rule or a name is reported."""
    assert "metal_machine_hooks_hook_duration_seconds_bucket" in exported()
    for typo in ("metal_machine_hooks_hook_duration_seconds", "metal_machine_hooks_api_calls",
                 "metal_machine_hooks_build_info_total", "kube_machine_status_phases"):
        assert typo not in exported()


def test_every_registered_name_appears_in_the_exposition() -> None:
    """The suffix rules of registered_names match what prometheus-client really writes on /metrics."""
    metrics.observe_hook("/machine/sync", "ok", 0.1)
    metrics.observe_api_call(ApiCall(operation="get_device", status="429", seconds=0.1, attempt=2))
    metrics.observe_api_error("/machine/sync", "get_device", "ResourceExhausted")
    metrics.rate_limit_wait("get_device", 1.5)
    metrics.drain_started()
    metrics.orphans_collected(1)
    text = metrics.exposition()[0].decode()
    samples = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    assert metrics.registered_names() <= samples


def test_hook_buckets_cover_the_webhook_timeout() -> None:
    assert 30.0 in metrics.HOOK_BUCKETS and max(metrics.HOOK_BUCKETS) > 30.0
    assert sorted(metrics.HOOK_BUCKETS) == list(metrics.HOOK_BUCKETS)
    assert min(metrics.HOOK_BUCKETS) <= 0.01


@pytest.mark.parametrize(("status", "label"), [("200", "200"), ("429", "429"), ("418", "4xx"), ("599", "5xx"),
                                               ("transport", "transport"), ("weird", "other")])
def test_status_labels_stay_in_a_small_set(status: str, label: str) -> None:
    assert metrics.bounded_status(status) == label


def test_error_code_labels_are_mcm_codes() -> None:
    assert metrics.bounded_error_code("Unauthenticated") == "Unauthenticated"
    assert metrics.bounded_error_code("something the API invented") == "Unknown"
    assert metrics.bounded_error_code(None) == "Unknown"
    codes = {v for k, v in vars(mcm).items() if k.isupper() and isinstance(v, str) and v[:1].isupper()
             and v in metrics.ERROR_CODES}
    assert codes == metrics.ERROR_CODES


def test_rate_limited_answers_are_counted() -> None:
    before = metrics.RATE_LIMITED.labels(operation="list_devices")._value.get()
    metrics.observe_api_call(ApiCall(operation="list_devices", status="429", seconds=0.1, attempt=1))
    assert metrics.RATE_LIMITED.labels(operation="list_devices")._value.get() == before + 1


def test_no_label_can_carry_an_object_name() -> None:
    """Bounded cardinality: labels come from fixed vocabularies, never names, ids or messages."""
    allowed = {"hook", "outcome", "operation", "status", "error_code", "attempt", "version"}
    for metric in metrics.all_metrics():
        assert set(metric._labelnames) <= allowed, metric._name


# --------------------------------------------------------------------------------------------------- alerts


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation other than '-' and '_' dropped, spaces to '-'."""
    found = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: a["alert"])
def test_alert_has_severity_summary_and_a_runbook_that_exists(alert: dict[str, Any]) -> None:
    assert alert["labels"]["severity"] in {"critical", "warning", "info"}
    assert alert["annotations"]["summary"]
    url = alert["annotations"]["runbook_url"]
    path, _, anchor = url.partition("#")
    assert path.endswith("/docs/troubleshooting.md")
    assert anchor in anchors(TROUBLESHOOTING.read_text()), f"{alert['alert']}: no heading for #{anchor}"


def test_alerts_cover_what_on_call_needs() -> None:
    names = {a["alert"] for a in alerts()}
    assert {"MetalMachineFailed", "MetalMachineStuckPending", "MetalMachineDrainStuck", "MetalApiErrorRate",
            "MetalApiRateLimited", "MetalMachineHooksErroring", "MetalMachineHooksSlow",
            "MetalOrphanDevicesCollected"} <= names


def test_anchor_rule_matches_github() -> None:
    assert anchors("## A Machine never joins\n### Stuck: drains (in progress)") == {
        "a-machine-never-joins", "stuck-drains-in-progress"}


# --------------------------------------------------------------------------------------- kube-state-metrics


@functools.cache
def crd_schema(kind: str) -> dict[str, Any]:
    for path in (REPO / "kubernetes" / "crds").glob("*.yaml"):
        doc = yaml.load(path.read_text(), Loader=yaml.CSafeLoader)
        if doc.get("kind") == "CustomResourceDefinition" and doc["spec"]["names"]["kind"] == kind:
            return doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    raise AssertionError(kind)


def schema_at(schema: dict[str, Any], path: list[str]) -> dict[str, Any] | None:
    node: dict[str, Any] | None = schema
    for step in path:
        if node is None:
            return None
        if node.get("type") == "array":
            node = node.get("items")
            if step.isdigit() or step.startswith("["):
                continue
        assert node is not None
        node = node.get("properties", {}).get(step)
    return node


def ksm_paths() -> list[tuple[str, str, list[str]]]:
    """(kind, metric, path) of every path the configuration reads, relative paths joined to their metric's path."""
    found = []
    for resource in ksm_config()["spec"]["resources"]:
        kind = resource["groupVersionKind"]["kind"]
        found += [(kind, "<resource labels>", p) for p in resource.get("labelsFromPath", {}).values()]
        for metric in resource["metrics"]:
            found += [(kind, metric["name"], p) for p in metric.get("labelsFromPath", {}).values()]
            each = metric["each"]
            spec = each[each["type"][0].lower() + each["type"][1:]]
            base = spec.get("path", [])
            if base:
                found.append((kind, metric["name"], base))
            found += [(kind, metric["name"], base + p) for p in spec.get("labelsFromPath", {}).values()]
            if spec.get("valueFrom"):
                found.append((kind, metric["name"], base + spec["valueFrom"]))
    return found


@pytest.mark.parametrize(("kind", "metric", "path"), ksm_paths(), ids=lambda v: str(v))
def test_kube_state_metrics_paths_exist_in_the_crds(kind: str, metric: str, path: list[str]) -> None:
    if path[0] == "metadata":
        assert path[1] in {"name", "namespace", "labels", "annotations", "creationTimestamp", "deletionTimestamp",
                           "ownerReferences"}
        return
    assert schema_at(crd_schema(kind), path) is not None, f"{kind} {metric}: {'.'.join(path)} is not in the CRD"


def test_kube_state_metrics_phase_list_is_mcms() -> None:
    (machine,) = [r for r in ksm_config()["spec"]["resources"] if r["groupVersionKind"]["kind"] == "Machine"]
    (phase,) = [m for m in machine["metrics"] if m["name"] == "status_phase"]
    assert set(phase["each"]["stateSet"]["list"]) == {mcm.PENDING, mcm.AVAILABLE, mcm.RUNNING, mcm.UNKNOWN,
                                                     mcm.FAILED, mcm.CRASH_LOOP, mcm.TERMINATING}


def test_kube_state_metrics_drain_step_is_the_text_the_hooks_write() -> None:
    from hooks.mcm.drain import INITIATE_DRAIN

    (machine,) = [r for r in ksm_config()["spec"]["resources"] if r["groupVersionKind"]["kind"] == "Machine"]
    (draining,) = [m for m in machine["metrics"] if m["name"] == "draining"]
    assert draining["each"]["stateSet"]["list"] == [INITIATE_DRAIN]


def test_kube_state_metrics_covers_the_four_kinds_and_may_read_them() -> None:
    kinds = {r["groupVersionKind"]["kind"] for r in ksm_config()["spec"]["resources"]}
    assert kinds == {"Machine", "MachineClass", "MachineSet", "MachineDeployment"}
    role = next(d for d in yaml.safe_load_all((MONITORING / "kube-state-metrics-rbac.yaml").read_text())
                if d["kind"] == "ClusterRole")
    (rule,) = [r for r in role["rules"] if r["apiGroups"] == [mcm.API_GROUP]]
    assert set(rule["resources"]) == {"machines", "machinesets", "machinedeployments", "machineclasses"}
    assert set(rule["verbs"]) == {"list", "watch"}


def test_service_monitor_scrapes_the_hook_service_port() -> None:
    monitor = yaml.safe_load((MONITORING / "servicemonitor" / "servicemonitor.yaml").read_text())
    service = yaml.safe_load((REPO / "kubernetes" / "deploy" / "service.yaml").read_text())
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [service["metadata"]["namespace"]]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"


def test_an_api_failure_in_a_request_makes_its_outcome_api_error() -> None:
    """The per-request scope the app opens (metrics.begin_request): a failure reported from anywhere while the
    request is answered is counted under that hook and turns a 2xx into `api_error`; other requests stay `ok`."""
    errors = metrics.API_ERRORS.labels(hook="/machine/sync", operation="list_devices", error_code="Unauthenticated")
    before = errors._value.get()
    token = metrics.begin_request("/machine/sync")
    try:
        assert metrics.outcome_for_status(200, api_failed=metrics.request_api_failed()) == "ok"
        metrics.api_failure("list_devices", "Unauthenticated")
        assert metrics.outcome_for_status(200, api_failed=metrics.request_api_failed()) == "api_error"
        assert metrics.outcome_for_status(500, api_failed=metrics.request_api_failed()) == "error"
    finally:
        metrics.end_request(token)
    assert errors._value.get() == before + 1
    assert not metrics.request_api_failed()
    other = metrics.begin_request("/machine/sync")
    try:
        assert metrics.outcome_for_status(200, api_failed=metrics.request_api_failed()) == "ok"
    finally:
        metrics.end_request(other)


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: a["alert"])
def test_alert_expressions_are_balanced(alert: dict[str, Any]) -> None:
    """No promtool offline: at least every bracket closes and every string ends, the mistakes a hand edit makes."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', alert["expr"])
    assert expr.count('"') % 2 == 0
    depth = {"(": 0, "{": 0, "[": 0}
    closing = {")": "(", "}": "{", "]": "["}
    for char in expr:
        if char in depth:
            depth[char] += 1
        elif char in closing:
            depth[closing[char]] -= 1
            assert depth[closing[char]] >= 0, alert["expr"]
    assert set(depth.values()) == {0}, alert["expr"]


def test_kube_state_metrics_metric_types_carry_their_settings() -> None:
    for resource in ksm_config()["spec"]["resources"]:
        for metric in resource["metrics"]:
            each = metric["each"]
            assert each["type"] in {"Gauge", "StateSet", "Info"}, metric["name"]
            key = each["type"][0].lower() + each["type"][1:]
            assert set(each) == {"type", key}, f"{metric['name']}: settings belong under `{key}`"
            assert metric.get("help"), metric["name"]
            if each["type"] == "StateSet":
                assert each[key]["labelName"] and each[key]["list"] and each[key]["path"], metric["name"]
