"""The version of cohortkv, read in one place: the installed package's metadata.

`pyproject.toml`'s `version` is the only place it is written. An installed cohortkv (a wheel, an
editable install, the image) reads it from the package metadata; a source tree that was never
installed (`PYTHONPATH=.`) reads `pyproject.toml` beside the package. The CLI's `--version`, the
sidecar's OpenAPI document and its `cohortkv_build_info` metric all use `__version__`.
"""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "cohortkv"
SOURCE_PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
UNKNOWN = "0+unknown"
"""A valid version (PEP 440) that says the real one could not be found."""


def package_version(distribution: str = DISTRIBUTION, pyproject: Path = SOURCE_PYPROJECT) -> str:
    """The installed `distribution`'s version; else the `version` in `pyproject`; else UNKNOWN."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        pass
    try:
        project = tomllib.loads(pyproject.read_text("utf-8"))["project"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return UNKNOWN
    if project.get("name") != distribution or not isinstance(project.get("version"), str):
        return UNKNOWN
    return str(project["version"])


__version__ = package_version()
