"""The import graph and the provider boundary, checked on the source with `ast` so that they stay as designed.

Imports go one way: hooks.server → hooks.mcm → hooks.driver (the protocol) ← hooks.equinix. The MCM logic never
imports the Equinix package or the HTTP server, the Equinix package never imports the MCM logic or the server, and
no module outside hooks/equinix/ names a field of the Equinix Metal API.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

HOOKS = Path(__file__).resolve().parent.parent / "hooks"
# Fields of the Equinix Metal API's device and create bodies (and the client's create body type); only
# hooks/equinix/ may spell them.
EQUINIX_FIELDS = frozenset({
    "ip_addresses", "metro", "hardware_reservation_id", "billing_cycle", "userdata", "operating_system",
    "created_at", "address_family", "project_ssh_keys", "ipxe_script_url", "customdata", "hardware_reservation",
    "deprovisioning", "DeviceCreate",
})
# Spelled as a key they are the API's; as an attribute they are the neutral `hooks.driver.Device`'s.
NEUTRAL_ATTRIBUTES = frozenset({"created_at"})
# Modules that may name them anyway, with the reason; each entry is an expected failure until it is resolved.
PENDING: dict[str, str] = {}


def modules() -> list[Path]:
    return sorted(HOOKS.rglob("*.py"))


def rel(path: Path) -> str:
    return path.relative_to(HOOKS.parent).as_posix()


def imported(source: str, name: str) -> set[str]:
    """Every module a file imports, absolute (relative imports resolved against its package)."""
    tree = ast.parse(source, filename=name)
    package = name[:-3].replace("/", ".").rsplit(".", 1)[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def equinix_names(source: str) -> set[str]:
    """Equinix API field names a file spells as a string literal, an attribute, a keyword or a name."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in EQUINIX_FIELDS:
            found.add(node.value)
        elif isinstance(node, ast.Attribute) and node.attr in EQUINIX_FIELDS - NEUTRAL_ATTRIBUTES:
            found.add(node.attr)
        elif isinstance(node, ast.alias) and node.name.rsplit(".", 1)[-1] in EQUINIX_FIELDS:
            found.add(node.name.rsplit(".", 1)[-1])
        elif isinstance(node, ast.keyword) and node.arg in EQUINIX_FIELDS:
            found.add(str(node.arg))
        elif isinstance(node, ast.Name) and node.id in EQUINIX_FIELDS - NEUTRAL_ATTRIBUTES:
            found.add(node.id)
    return found


def forbidden_imports(source: str, name: str) -> set[str]:
    if name.startswith("hooks/mcm/"):
        banned = ("hooks.equinix", "hooks.server")
    elif name.startswith("hooks/equinix/"):
        banned = ("hooks.mcm", "hooks.server")
    elif name.startswith("hooks/target/"):
        # The target cluster's reader is below the MCM logic (hooks.mcm calls it) and knows no provider.
        banned = ("hooks.equinix", "hooks.server", "hooks.mcm")
    elif name == "hooks/driver.py":
        banned = ("hooks.equinix", "hooks.mcm", "hooks.server")
    else:
        return set()
    return {m for m in imported(source, name) if any(m == b or m.startswith(b + ".") for b in banned)}


def _param(path: Path) -> object:
    reason = PENDING.get(rel(path))
    marks = [pytest.mark.xfail(reason=reason, strict=False)] if reason else []
    return pytest.param(path, id=rel(path), marks=marks)


@pytest.mark.parametrize("path", [_param(p) for p in modules()])
def test_imports_go_one_way(path: Path) -> None:
    assert forbidden_imports(path.read_text(), rel(path)) == set()


@pytest.mark.parametrize("path", [_param(p) for p in modules() if not rel(p).startswith("hooks/equinix/")])
def test_only_the_equinix_package_names_equinix_api_fields(path: Path) -> None:
    assert equinix_names(path.read_text()) == set()


def test_the_checks_notice_a_violation() -> None:
    """The checks are not vacuous: a module that breaks both rules is caught by each."""
    source = 'from hooks.equinix.client import DeviceCreate\nfrom ..server import app\nx = {"ip_addresses": 1}\n'
    assert forbidden_imports(source, "hooks/mcm/probe.py") == {
        "hooks.equinix.client", "hooks.equinix.client.DeviceCreate", "hooks.server", "hooks.server.app"}
    assert forbidden_imports("from hooks.mcm import vocabulary\n", "hooks/equinix/probe.py") == {
        "hooks.mcm", "hooks.mcm.vocabulary"}
    assert equinix_names(source) == {"DeviceCreate", "ip_addresses"}
    assert forbidden_imports("from hooks.server import logs\nfrom hooks.mcm import machine\n",
                             "hooks/target/probe.py") == {"hooks.server", "hooks.server.logs", "hooks.mcm",
                                                          "hooks.mcm.machine"}


def test_every_pending_exception_names_an_existing_module() -> None:
    assert all((HOOKS.parent / name).is_file() for name in PENDING)


MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def oversized(source: str, name: str) -> list[str]:
    """A module over MAX_MODULE_LINES lines, and every function over MAX_FUNCTION_LINES, in words."""
    found = []
    lines = source.count("\n")
    if lines > MAX_MODULE_LINES:
        found.append(f"{name}: {lines} lines")
    for node in ast.walk(ast.parse(source, filename=name)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                found.append(f"{name}: {node.name} is {length} lines")
    return found


@pytest.mark.parametrize("path", [pytest.param(p, id=rel(p)) for p in modules()])
def test_modules_and_functions_stay_small_enough_to_read(path: Path) -> None:
    """Issue 12's reading budget: a module says one thing, a function does one step."""
    assert oversized(path.read_text(), rel(path)) == []


def test_the_size_check_notices_a_long_function() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    assert oversized(f"def long():\n{body}\n", "hooks/probe.py") == ["hooks/probe.py: long is 61 lines"]
