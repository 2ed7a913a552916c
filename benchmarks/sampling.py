"""A sampling profile of a running process with py-spy, summarised like the cProfile ones.

cProfile slows every Python call and hides time spent in C (socket writes, uvloop, msgspec)
inside its callers; a sampler shows where wall-clock CPU really goes, at a cost the process
barely notices. Both are recorded: they disagree exactly where the profiler distorts.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def available() -> bool:
    return shutil.which("py-spy") is not None or _venv_py_spy() is not None


def _venv_py_spy() -> str | None:
    import sys

    candidate = Path(sys.executable).with_name("py-spy")
    return str(candidate) if candidate.exists() else None


def start(pid: int, seconds: float, out: Path, rate: int = 250) -> subprocess.Popen[bytes]:
    """Starts py-spy on `pid` for `seconds`; the caller waits on the returned process."""
    exe = _venv_py_spy() or shutil.which("py-spy") or "py-spy"
    argv = [exe, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds)))]
    argv += ["--rate", str(rate), "--format", "raw", "--output", str(out), "--nonblocking"]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _short(frame: str) -> str:
    """`func (path:line)` → `path:func`, the path from the package root (py-spy already
    shortens most paths; absolute ones are cut at site-packages or the project's packages)."""
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m["file"]
    i = path.rfind("site-packages/")
    if i >= 0:
        path = path[i + len("site-packages/") :]
    for root in ("plugin/", "adapters/", "benchmarks/"):
        i = path.rfind("/" + root)
        if i >= 0:
            path = path[i + 1 :]
    return f"{path}:{m['func']}"


def summarise(raw: Path, top: int = 15) -> dict[str, Any]:
    """Own samples (the frame on top of the stack) and inclusive samples for cohortkv's own
    functions, as shares of all samples."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        n = int(count_s)
        frames = [_short(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            if f.startswith(("plugin/", "adapters/")):
                incl[f] += n
    if not total:
        return {}

    def pct(n: int) -> float:
        return round(100 * n / total, 1)

    return {
        "samples": total,
        "top": [{"function": f, "own_pct": pct(n)} for f, n in own.most_common(top)],
        "cumulative": [{"function": f, "cum_pct": pct(n)} for f, n in incl.most_common(top)],
    }
