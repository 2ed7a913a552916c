"""`cohortkv` as a person runs it: a new process, the repository's code, no COHORTKV_* variables
of the machine's own."""

from __future__ import annotations

import os
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
