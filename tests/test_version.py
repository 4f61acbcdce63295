"""The version has one home, `hooks.__version__`: the package metadata reads it, and every place that names the
image with a tag repeats it. A release changes hooks/__init__.py and the files this test points at; a tag left
behind fails here instead of deploying an old image (the drain Jobs run the hook image by its tag).
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import pytest
import yaml

import hooks
from hooks.mcm.drain import DrainSettings

REPO = Path(__file__).resolve().parent.parent
IMAGE = "ghcr.io/metal-machine-hooks/metal-machine-hooks"
TAGGED = re.compile(re.escape(IMAGE) + r":([0-9A-Za-z][0-9A-Za-z._-]*)")
# Files that name the image with a tag today; the scan below also catches a new one.
PLACES = ("kubernetes/deploy/deployment.yaml", "kubernetes/README.md", "docs/drain.md")
# Not ours to keep in step: recorded requests show what a cluster sent at the time.
RECORDED = ("tests/fixtures",)
SKIP_DIRS = {".git", ".venv", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis"}
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".json", ".txt", ".cfg", ".conf", ""}


def _text_files() -> list[Path]:
    found = []
    for folder, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        here = Path(folder)
        if str(here.relative_to(REPO)).startswith(RECORDED):
            continue
        found += [here / name for name in files if Path(name).suffix in TEXT_SUFFIXES]
    return found


def test_the_package_version_is_read_from_hooks() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"], "the version lives in hooks/__init__.py only"
    assert "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "hooks.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+([.-]?\w+)?", hooks.__version__)


@pytest.mark.parametrize("place", PLACES)
def test_each_known_place_names_the_current_tag(place: str) -> None:
    tags = TAGGED.findall((REPO / place).read_text())
    assert tags, f"{place} no longer names {IMAGE}:<tag>; take it off PLACES"
    assert set(tags) == {hooks.__version__}


def test_no_file_names_another_tag_of_the_image() -> None:
    stale = {
        f"{path.relative_to(REPO)}: {tag}"
        for path in _text_files()
        for tag in TAGGED.findall(path.read_text(errors="replace"))
        if tag != hooks.__version__
    }
    assert not stale, f"image tags that are not hooks.__version__ ({hooks.__version__}): {sorted(stale)}"


def test_kustomization_pins_the_current_tag() -> None:
    kustomization = yaml.safe_load((REPO / "kubernetes" / "deploy" / "kustomization.yaml").read_text())
    (entry,) = [image for image in kustomization["images"] if image["name"] == IMAGE]
    assert str(entry["newTag"]) == hooks.__version__


def test_drain_jobs_run_the_current_image_by_default() -> None:
    assert DrainSettings.from_env({}).image == f"{IMAGE}:{hooks.__version__}"
