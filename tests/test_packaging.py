"""A releasable build: `pip install .` gives working console scripts, the image installs only runtime packages and
only with hashes, and `make image` builds with whichever container builder is installed (and says so when none is)."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import hooks

REPO = Path(__file__).resolve().parent.parent
IMAGE = "ghcr.io/metal-machine-hooks/metal-machine-hooks"
SCRIPTS = {"metal-machine-hooks": "replay", "metal-machine-drain": "name of the Node to drain",
           "metal-api-simulator": "--port"}
PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)", re.M)


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def pins(path: Path) -> dict[str, str]:
    return {name.lower().replace("_", "-"): version for name, version in PIN.findall(path.read_text())}


# ------------------------------------------------------------------------------------------------------ package


def test_license_is_the_apache_license_2() -> None:
    text = (REPO / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License")
    assert "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    assert pyproject()["project"]["license"] == "Apache-2.0"


def test_console_scripts_point_at_callables() -> None:
    import importlib

    scripts = pyproject()["project"]["scripts"]
    assert set(scripts) == set(SCRIPTS)
    for target in scripts.values():
        module, _, name = target.partition(":")
        assert callable(getattr(importlib.import_module(module), name)), target


def test_the_package_ships_hooks_drain_and_emulator() -> None:
    include = pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    for package in ("hooks", "drain", "emulator"):
        assert package in include and f"{package}.*" in include


def test_changelog_has_the_current_version_and_an_unreleased_section() -> None:
    text = (REPO / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in text
    assert re.search(rf"^## \[{re.escape(hooks.__version__)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", text, re.M)


# ---------------------------------------------------------------------------------------------- runtime deps


def _imports(folder: Path) -> set[str]:
    found = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.split(".")[0])
    return found


def test_runtime_requirements_hold_no_yaml_because_the_runtime_reads_none() -> None:
    assert "yaml" not in _imports(REPO / "hooks") | _imports(REPO / "drain")
    assert "pyyaml" not in pins(REPO / "requirements.txt")
    assert "pyyaml" in pins(REPO / "requirements-dev.txt"), "the tests and the emulator still need it"


def test_lock_pins_every_requirement_at_the_same_version_with_hashes() -> None:
    lock = (REPO / "requirements.lock").read_text()
    locked = pins(REPO / "requirements.lock")
    for name, version in pins(REPO / "requirements.txt").items():
        assert locked.get(name) == version, f"{name}: requirements.txt {version}, lock {locked.get(name)}: make lock"
    body = "\n".join(line for line in lock.splitlines() if line.strip() and not line.lstrip().startswith("#"))
    entries = re.split(r"\n(?=[A-Za-z0-9])", body)
    assert len(entries) == len(locked) >= len(pins(REPO / "requirements.txt"))
    for entry in entries:
        assert "--hash=sha256:" in entry, f"no hash for {entry.splitlines()[0]}"
    assert "pyyaml" not in locked
    assert "--find-links" not in lock and "--index-url" not in lock, "the lock must not name this machine's indexes"


def test_image_installs_the_lock_with_hashes_and_no_resolver() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    (install,) = [line for line in dockerfile.splitlines() if "pip install" in line]
    assert "--require-hashes" in install and "requirements.lock" in install and "--no-deps" in install
    assert "requirements.txt" not in dockerfile


def test_pip_tools_is_pinned_for_make_lock() -> None:
    assert "pip-tools" in pins(REPO / "requirements-dev.txt")
    dry = subprocess.run(["make", "-n", "lock"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "pip-compile" in dry and "--generate-hashes" in dry and "requirements.lock" in dry


# ---------------------------------------------------------------------------------------------------- make image


def _make_image(tmp_path: Path, tools: list[str]) -> tuple[subprocess.CompletedProcess[str], Path]:
    """`make image` with PATH holding only sed and fake builders that record their arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sed = shutil.which("sed")
    assert sed
    (bin_dir / "sed").symlink_to(sed)
    record = tmp_path / "called"
    for tool in tools:
        fake = bin_dir / tool
        fake.write_text(f'#!/bin/sh\necho "{tool} $*" > "{record}"\n')
        fake.chmod(0o755)
    make = shutil.which("make")
    assert make
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    result = subprocess.run([make, "--no-print-directory", "image"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=60, check=False)
    return result, record


def test_make_image_says_clearly_when_no_builder_is_installed(tmp_path: Path) -> None:
    result, record = _make_image(tmp_path, [])
    assert result.returncode != 0
    assert "no container builder found" in result.stderr and "docker, podman or buildah" in result.stderr
    assert not record.exists()


@pytest.mark.parametrize(("installed", "used"), [(["docker", "podman"], "docker"), (["podman"], "podman"),
                                                 (["buildah"], "buildah")])
def test_make_image_builds_with_the_installed_builder_tagged_with_the_version(
    tmp_path: Path, installed: list[str], used: str
) -> None:
    result, record = _make_image(tmp_path, installed)
    assert result.returncode == 0, result.stderr
    called = record.read_text().split()
    assert called[0] == used and called[1] == "build" and called[-1] == "."
    assert called[called.index("-t") + 1] == f"{IMAGE}:{hooks.__version__}"


def test_the_image_make_builds_is_the_one_the_manifests_name() -> None:
    deployment = (REPO / "kubernetes" / "deploy" / "deployment.yaml").read_text()
    assert f"image: {IMAGE}:{hooks.__version__}" in deployment


# ------------------------------------------------------------------------------------------------ pip install .


@pytest.mark.slow
@pytest.mark.e2e
def test_pip_install_gives_working_console_scripts(tmp_path: Path) -> None:
    """A fresh venv, `pip install .` from a copy of the tree (so the build leaves nothing in the checkout), then
    each console script's --help. Uses the pip cache and the configured indexes; skips when they are unreachable."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "requirements.txt"):
        shutil.copy2(REPO / name, source / name)
    for package in ("hooks", "drain", "emulator"):
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                          "--disable-pip-version-check", str(source)], capture_output=True, text=True, timeout=600,
                         check=False)
    if pip.returncode != 0 and re.search(r"No matching distribution|Could not find a version|connection", pip.stderr,
                                         re.I):
        pytest.skip(f"packages not reachable from here: {pip.stderr.strip().splitlines()[-1]}")
    assert pip.returncode == 0, pip.stderr
    for script, expected in SCRIPTS.items():
        result = subprocess.run([str(venv / "bin" / script), "--help"], capture_output=True, text=True, timeout=60,
                                check=False, env={**os.environ, "PYTHONPATH": ""}, cwd=tmp_path)
        assert result.returncode == 0, f"{script}: {result.stderr}"
        assert expected in result.stdout, f"{script} --help: {result.stdout}"
    show = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "show", "pyyaml"], capture_output=True,
                          text=True, check=False)
    assert show.returncode != 0, "pyyaml is not a runtime dependency"
