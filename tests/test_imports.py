"""Every module imports on its own, first, in a fresh interpreter: no import-order cycles
between `plugin` and `adapters`, whichever a host imports first."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def modules() -> list[str]:
    out = []
    for package in ("plugin", "adapters"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__main__":
                continue
            out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


@pytest.mark.slow
async def test_each_module_imports_first_in_a_fresh_interpreter() -> None:
    gate = asyncio.Semaphore(4)

    async def load(name: str) -> tuple[str, int, bytes]:
        async with gate:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", f"import {name}", cwd=ROOT,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            _, err = await proc.communicate()
            return name, proc.returncode or 0, err

    names = modules()
    assert "adapters.gam" in names and "plugin.enricher" in names
    results = await asyncio.gather(*(load(n) for n in names))
    failed = {name: err.decode()[-300:] for name, code, err in results if code != 0}
    assert failed == {}


def test_the_public_names_come_from_plugin_without_lazy_loading() -> None:
    import plugin

    assert not hasattr(plugin, "__getattr__")
    for name in plugin.__all__:
        assert getattr(plugin, name) is not None
