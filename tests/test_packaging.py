"""Version and package metadata: one version (pyproject.toml) that the package, the image and
the manifests follow; the licence file and its SPDX expression; pods without service links."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

import plugin
from plugin.version import UNKNOWN, __version__, package_version

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
DEPLOY = ROOT / "deploy"


def project() -> dict[str, Any]:
    data: dict[str, Any] = tomllib.loads(PYPROJECT.read_text())["project"]
    return data


def test_the_version_is_pyprojects() -> None:
    assert __version__ == project()["version"]
    assert plugin.__version__ == __version__


def test_a_source_tree_that_was_never_installed_reads_pyproject(tmp_path: Path) -> None:
    # A distribution name that is not installed: the fallback beside the package answers.
    assert package_version("cohortkv-never-installed", PYPROJECT) == UNKNOWN  # name differs
    copy = tmp_path / "pyproject.toml"
    copy.write_text(PYPROJECT.read_text().replace('name = "cohortkv"', 'name = "cohortkv-src"'))
    assert package_version("cohortkv-src", copy) == project()["version"]
    assert package_version("cohortkv-src", tmp_path / "missing.toml") == UNKNOWN
    copy.write_text("[project\n")
    assert package_version("cohortkv-src", copy) == UNKNOWN


def test_license_is_an_spdx_expression_with_its_file() -> None:
    p = project()
    assert p["license"] == "Apache-2.0"
    assert p["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    # PEP 639: with a licence expression, no `License ::` classifiers.
    assert not [c for c in p["classifiers"] if c.startswith("License ::")]
    assert "Typing :: Typed" in p["classifiers"]
    assert f"Programming Language :: Python :: {p['requires-python'][2:]}" in p["classifiers"]
    assert p["urls"] and all(u.startswith("https://") for u in p["urls"].values())
    requires = tomllib.loads(PYPROJECT.read_text())["build-system"]["requires"]
    assert requires == ["setuptools>=77"]  # the first setuptools that writes PEP 639 metadata


def test_installed_metadata_carries_the_license_expression() -> None:
    try:
        meta = metadata.metadata("cohortkv")
    except metadata.PackageNotFoundError:
        pytest.skip("cohortkv is not installed (tests/run.sh installs it)")
    if meta["Version"] != project()["version"] or meta["License-Expression"] is None:
        pytest.skip("the installed metadata predates this pyproject.toml: reinstall")
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta.get_all("License-File") == ["LICENSE"]


def test_image_tags_and_labels_follow_the_version() -> None:
    found: list[tuple[str, str]] = []
    for path in sorted(DEPLOY.rglob("*")):
        if path.is_file() and path.suffix in ("", ".yaml", ".yml", ".md"):
            text = path.read_text()
            where = str(path.relative_to(ROOT))
            found += [(where, v) for v in re.findall(r"\bcohortkv:([0-9][^\s\"'`]*)", text)]
            found += [(where, v) for v in re.findall(r'image\.version="([^"]+)"', text)]
            found += [(where, v) for v in re.findall(r'newTag: "([^"]+)"', text)]
    where_found = {w for w, _ in found}
    assert {
        "deploy/docker/Dockerfile",
        "deploy/kubernetes/deployment.yaml",
        "deploy/kubernetes/kustomization.yaml",
    } <= where_found
    wrong = [(w, v) for w, v in found if v != __version__]
    assert not wrong, f"not the package version {__version__}: {wrong}"


def test_the_image_build_copies_the_license_file() -> None:
    dockerfile = (DEPLOY / "docker" / "Dockerfile").read_text()
    (copy,) = re.findall(r"^COPY pyproject\.toml .*$", dockerfile, re.M)
    assert "LICENSE" in copy.split()


def test_pods_get_no_service_link_variables() -> None:
    yaml = pytest.importorskip("yaml")
    pods = 0
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") in ("Deployment", "StatefulSet", "DaemonSet"):
                pods += 1
                spec = doc["spec"]["template"]["spec"]
                assert spec.get("enableServiceLinks") is False, f"{path.name}: {doc['kind']}"
    assert pods >= 2


def _ignored(name: str, patterns: list[str]) -> bool:
    """Whether .dockerignore leaves top-level entry `name` out of the build context (its
    patterns in order, the last that matches wins; `!` brings an entry back)."""
    import fnmatch

    out = False
    for p in patterns:
        keep = p.startswith("!")
        pattern = p.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(name, pattern):
            out = not keep
    return out


def test_the_docker_build_context_is_only_what_the_image_copies() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    dockerfile = (DEPLOY / "docker" / "Dockerfile").read_text()
    copied = [
        src.rstrip("/")
        for line in dockerfile.splitlines()
        if line.startswith("COPY ") and "--from" not in line
        for src in line.split()[1:-1]
    ]
    assert copied and not [c for c in copied if _ignored(c, patterns)]
    for heavy in (".venv", "tests", "benchmarks", ".git", "examples", "docs"):
        assert _ignored(heavy, patterns), heavy
