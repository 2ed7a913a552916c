"""Ratios and medians of benchmark figures, where a missing comparison is `None`, never a crash.

A run under load can end with no request in a group (or none at all answered): its ratios have
nothing to compare against and are reported as `n/a` (see `benchmarks.rows.show`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any


def ratio(num: float | None, den: float | None) -> float | None:
    """`num / den`, or None when the denominator is zero or either figure is missing (None, NaN)."""
    if num is None or den is None or math.isnan(num) or math.isnan(den) or den == 0:
        return None
    return num / den


def median(values: Iterable[float | None]) -> float | None:
    """The median of the figures there are (missing ones left out); None when there is none."""
    ordered = sorted(v for v in values if v is not None and not math.isnan(v))
    if not ordered:
        return None
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def median_run(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median throughput (its own latencies and counts, not a blend)."""
    return sorted(runs, key=lambda r: float(r["rps"]))[len(runs) // 2]


def system_cpu(run: dict[str, Any]) -> float:
    """CPU per request of the measured system's own process, in µs."""
    return float(run["cpu_us_per_request"]["system"])


def cpu_ratio(
    side: Sequence[dict[str, Any]], passthrough: Sequence[dict[str, Any]]
) -> dict[str, float | None]:
    """Sidecar CPU per request over passthrough's: the median of neighbouring runs' ratios."""
    pairs = list(zip(side, passthrough, strict=True))
    return {
        "ratio": median(ratio(system_cpu(sd), system_cpu(pt)) for sd, pt in pairs),
        "sidecar_us": median(system_cpu(sd) for sd, _ in pairs),
        "passthrough_us": median(system_cpu(pt) for _, pt in pairs),
    }


def rps_ratio(mine: Sequence[dict[str, Any]], other: Sequence[dict[str, Any]]) -> float | None:
    """Throughput over another system's: the median of neighbouring runs' ratios."""
    return median(ratio(m["rps"], o["rps"]) for m, o in zip(mine, other, strict=True))


def added_over(
    mine: Sequence[dict[str, Any]], other: Sequence[dict[str, Any]], key: str = "added_p50_ms"
) -> float | None:
    """A latency added in front of the ad server, minus another system's, median of
    neighbouring runs (runs without the figure, i.e. without an answered request, left out)."""
    return median(
        m[key] - o[key] for m, o in zip(mine, other, strict=True) if key in m and key in o
    )


def group_added_p99(
    side: Sequence[dict[str, Any]], passthrough: Sequence[dict[str, Any]], group: str
) -> float | None:
    """p99 of the time added in front of the ad server for one group of requests, sidecar
    minus passthrough, median of neighbouring runs."""
    return added_over(
        [sd.get("groups", {}).get(group, {}) for sd in side],
        [pt.get("groups", {}).get(group, {}) for pt in passthrough],
        "added_p99_ms",
    )
