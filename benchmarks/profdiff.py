"""Where the sidecar's extra CPU goes: own CPU time per request, function by function, in the
sidecar's profile minus the passthrough's (both cProfile on thread CPU time, same load)."""

from __future__ import annotations

import pstats
from pathlib import Path
from typing import Any

from benchmarks.library import _short


def per_request(pstats_path: Path, requests: int) -> dict[str, float]:
    """Own CPU microseconds per request by function."""
    st = pstats.Stats(str(pstats_path))
    raw: dict[Any, Any] = st.stats  # type: ignore[attr-defined]
    out: dict[str, float] = {}
    for (filename, _line, func), v in raw.items():
        name = func if filename == "~" else f"{_short(filename)}:{func}"
        out[name] = out.get(name, 0.0) + v[2] * 1e6 / max(requests, 1)
    return out


def diff(
    side: Path, side_requests: int, base: Path, base_requests: int, top: int = 15
) -> dict[str, Any]:
    a = per_request(side, side_requests)
    b = per_request(base, base_requests)
    rows = sorted(
        (
            (a.get(k, 0.0) - b.get(k, 0.0), a.get(k, 0.0), b.get(k, 0.0), k)
            for k in a.keys() | b.keys()
        ),
        reverse=True,
    )
    return {
        "sidecar_us": round(sum(a.values())),
        "passthrough_us": round(sum(b.values())),
        "top": [
            {
                "function": k,
                "extra_us": round(d, 1),
                "sidecar_us": round(x, 1),
                "passthrough_us": round(y, 1),
            }
            for d, x, y, k in rows[:top]
        ],
    }
