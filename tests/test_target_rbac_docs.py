"""The target cluster's RBAC in docs/operations.md grants exactly what the Job programs' own manifests grant (plus
the hooks' Node get, which they include), so the least-privilege list cannot drift from the programs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent


def _docs_rbac() -> list[dict[str, Any]]:
    text = (REPO / "docs" / "operations.md").read_text()
    section = text.split("### RBAC in the target cluster", 1)[1].split("\n### ", 1)[0]
    block = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert block is not None
    return [d for d in yaml.safe_load_all(block.group(1)) if d]


def _grants(docs: list[dict[str, Any]], kind: str) -> set[tuple[str, str, str]]:
    return {(group, resource, verb) for d in docs if d["kind"] == kind for rule in d["rules"]
            for group in rule["apiGroups"] for resource in rule["resources"] for verb in rule["verbs"]}


def _manifests(*paths: str) -> list[dict[str, Any]]:
    return [d for p in paths for d in yaml.safe_load_all((REPO / p).read_text()) if d]


def test_the_documented_target_rbac_is_the_programs_rbac() -> None:
    docs = _docs_rbac()
    programs = _manifests("kubernetes/drain/clusterrole.yaml", "kubernetes/node-jobs/clusterrole.yaml")
    assert _grants(docs, "ClusterRole") == _grants(programs, "ClusterRole") | {("", "nodes", "get")}
    tokens = _manifests("kubernetes/node-jobs/kube-system/role.yaml")
    assert _grants(docs, "Role") == _grants(tokens, "Role")
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] == "Role"} == {"kube-system"}
