"""The install, upgrade and uninstall commands in the docs work when followed exactly, as far as that can be known
without a cluster: one directory per `kubectl apply|delete -k` (kubectl keeps only the last `-k`), every directory
named exists and builds offline, and the steps come in the order finalizers need."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.test_manifests import kustomize_build

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", REPO / "kubernetes" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
KUBECTL_K = re.compile(r"kubectl\s+(apply|delete)\b[^\n`|]*")


def commands() -> list[tuple[str, str]]:
    """(file, command) for every kubectl apply/delete in the docs, code blocks and inline code alike."""
    found = []
    for path in DOCS:
        for match in KUBECTL_K.finditer(path.read_text()):
            found.append((str(path.relative_to(REPO)), match.group(0).split("#")[0].strip()))
    return found


def directories(command: str) -> list[str]:
    return re.findall(r"-k\s+(\S+)", command)


def local_directories() -> list[str]:
    found = set()
    for _, command in commands():
        for target in directories(command):
            target = target.strip("\"'")
            if "://" in target or "<" in target or "$" in target:
                continue
            found.add(target.rstrip("/"))
    return sorted(found)


def test_commands_are_found() -> None:
    assert len(commands()) >= 10
    assert "kubernetes/crds" in local_directories()


@pytest.mark.parametrize(("doc", "command"), commands(), ids=lambda v: str(v)[:60])
def test_one_directory_per_kubectl_k(doc: str, command: str) -> None:
    assert len(directories(command)) <= 1, f"{doc}: `{command}` would only use its last -k"


@pytest.mark.parametrize("directory", local_directories())
def test_documented_directory_exists(directory: str) -> None:
    assert (REPO / directory / "kustomization.yaml").is_file(), f"{directory} has no kustomization.yaml"


@pytest.mark.slow  # runs kubectl kustomize
@pytest.mark.parametrize("directory", local_directories())
def test_documented_directory_builds(directory: str) -> None:
    assert kustomize_build(REPO / directory)


def _section(path: Path, heading: str) -> str:
    text = path.read_text()
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start:end if end > 0 else len(text)]


def _order(text: str, verb: str) -> list[str]:
    return [directories(c)[0].rstrip("/") for c in (m.group(0) for m in KUBECTL_K.finditer(text))
            if c.startswith(f"kubectl {verb}") and directories(c)]


@pytest.mark.parametrize(("doc", "heading"), [("docs/operations.md", "## Uninstall"),
                                              ("kubernetes/README.md", "To uninstall")])
def test_uninstall_deletes_finalized_objects_first_then_controllers_server_crds(doc: str, heading: str) -> None:
    section = _section(REPO / doc, heading)
    order = _order(section, "delete")
    wanted = ["metacontroller", "kubernetes/drain", "kubernetes/deploy", "kubernetes/crds"]
    assert [d for d in order if d in wanted] == wanted
    if "kubectl delete machinedeployments" in section:
        first_k = section.index("kubectl delete -k")
        machines = section.index("kubectl delete machinedeployments,machinesets,machines")
        assert machines < section.index("kubectl delete machineclasses") < first_k


def test_upgrade_applies_crds_first_and_controllers_last() -> None:
    order = _order(_section(REPO / "docs" / "operations.md", "## Upgrade"), "apply")
    assert order[0] == "kubernetes/crds" and order[-1] == "metacontroller"
    assert "kubernetes/deploy" in order


@pytest.mark.parametrize("doc", ["README.md", "kubernetes/README.md", "docs/operations.md"])
def test_install_puts_crds_and_hook_server_before_the_controllers(doc: str) -> None:
    order = _order((REPO / doc).read_text(), "apply")
    assert order.index("kubernetes/crds") < order.index("metacontroller")
    assert order.index("kubernetes/deploy") < order.index("metacontroller")


def _anchors(markdown: str) -> set[str]:
    found = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            found.add(re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-"))
    return found


@pytest.mark.parametrize("doc", [*DOCS, REPO / "CHANGELOG.md"], ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_and_anchors_resolve(doc: Path) -> None:
    broken = []
    for match in re.finditer(r"\]\(([^)\s]+)\)", doc.read_text()):
        link = match.group(1)
        if "://" in link:
            continue
        path, _, anchor = link.partition("#")
        target = (doc.parent / path) if path else doc
        if not target.exists() or (anchor and target.suffix == ".md" and anchor not in _anchors(target.read_text())):
            broken.append(link)
    assert broken == []


def test_operations_links_every_new_piece() -> None:
    text = (REPO / "docs" / "operations.md").read_text()
    for piece in ("troubleshooting.md", "sets-and-deployments.md", "upgrading.md", "CHANGELOG.md", "LICENSE",
                  "kubernetes/monitoring", "kube-state-metrics-crs.yaml", "prometheusrule.yaml",
                  "grafana-dashboard.json", "kubernetes/components/", "make image", "make lock", "requirements.lock",
                  "pip install .", "metal-api-simulator", "HOOK_AUTH_TOKEN_NEXT", "HOOK_AUTH_DISABLED"):
        assert piece in text, piece
    for overlay in sorted(p.name for p in (REPO / "kubernetes" / "overlays").iterdir() if p.is_dir()):
        assert f"kubernetes/overlays/{overlay}" in text, overlay


def test_troubleshooting_explains_every_error_code_and_state_the_hooks_write() -> None:
    from hooks.equinix import errors
    from hooks.mcm import vocabulary as mcm

    text = (REPO / "docs" / "troubleshooting.md").read_text()
    codes = {mcm.INVALID_ARGUMENT, mcm.NOT_FOUND, mcm.UNAVAILABLE, mcm.RESOURCE_EXHAUSTED, mcm.UNKNOWN_CODE,
             mcm.UNAUTHENTICATED, mcm.PERMISSION_DENIED, mcm.FAILED_PRECONDITION}
    codes |= {cls.mcm_code for cls in vars(errors).values() if isinstance(cls, type)
              and issubclass(cls, errors.MetalError)}
    for code in codes:
        assert f"| `{code}` |" in text, f"no row for errorCode {code}"
    for state in (mcm.PROCESSING, mcm.SUCCESSFUL, mcm.STATE_FAILED):
        assert f"| `{state}` |" in text, f"no row for lastOperation.state {state}"
    for phase in (mcm.PENDING, mcm.AVAILABLE, mcm.RUNNING, mcm.UNKNOWN, mcm.FAILED, mcm.CRASH_LOOP, mcm.TERMINATING):
        assert f"| `{phase}` |" in text, f"no row for phase {phase}"


def _spec_fields(kind_file: str) -> set[str]:
    import yaml

    crd = yaml.safe_load((REPO / "kubernetes" / "crds" / kind_file).read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    return set(spec)


@pytest.mark.parametrize("kind_file", ["machinesets.yaml", "machinedeployments.yaml"])
def test_sets_and_deployments_covers_every_spec_field(kind_file: str) -> None:
    text = (REPO / "docs" / "sets-and-deployments.md").read_text()
    missing = sorted(f for f in _spec_fields(kind_file) if f"`spec.{f}" not in text)
    assert missing == []


def test_upgrade_notes_have_a_section_per_released_version() -> None:
    changelog = (REPO / "CHANGELOG.md").read_text()
    notes = (REPO / "docs" / "upgrading.md").read_text()
    versions = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", changelog, re.M)
    assert versions
    for version in versions:
        assert re.search(rf"^## {re.escape(version)}\b", notes, re.M), f"no upgrade notes for {version}"
    assert re.search(r"^## Unreleased", notes, re.M)
