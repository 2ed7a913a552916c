"""`cohortkv` as a person runs it: a new process, the repository's code, no COHORTKV_* variables
of the machine's own."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without COHORTKV_* variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COHORTKV_")}
    return {**env, **extra}


def cohortkv(
    *args: str, env: dict[str, str] | None = None, prelude: str = "", stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`cohortkv ARGS`; `env` replaces `clean_env()`; `prelude` is Python run first (to hide
    an installed module, as if it were not installed)."""
    code = f"{prelude}\nimport sys\nfrom plugin.commands.cli import main\nsys.exit(main())"
    command = [sys.executable, "-c", code] if prelude else [sys.executable, "-m", "plugin"]
    return subprocess.run(
        [*command, *args],
        cwd=ROOT,
        env=env if env is not None else clean_env(),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def serve_process(config: Path) -> tuple[asyncio.subprocess.Process, int]:
    """`cohortkv serve --config CONFIG` as a real process (standard error read up to its
    listening line); the process and its port."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "plugin", "serve", "--config", str(config),
        cwd=ROOT, env=clean_env(),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    seen: list[str] = []
    while True:
        line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
        assert line, "".join(seen)
        seen.append(line)
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if m:
            return proc, int(m.group(1))
