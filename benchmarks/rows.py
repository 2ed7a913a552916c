"""The rows of the table, and how figures are written in them (`n/a` where there is none)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks.ratios import ratio

NA = "n/a"
"""Written for a figure there is none of: a ratio over zero, a percentile of no request."""
SIDECAR = "cohortkv sidecar"
SIDECAR_FAST = "cohortkv sidecar, wait=if_uncached"


@dataclass
class Row:
    scenario: str
    measure: str
    result: str
    target: str = "—"
    status: str = "—"


def verdict(ok: bool) -> str:
    return "met" if ok else "GAP"


def judge(value: float | None, ok: Callable[[float], bool]) -> str:
    """`met` or `GAP` for a figure against its target; `n/a` when there is no figure."""
    if value is None or math.isnan(value):
        return NA
    return verdict(ok(value))


def show(value: float | None, spec: str = ".1f", suffix: str = "") -> str:
    """`value` formatted with `spec`, then `suffix`; `n/a` for no figure (None or NaN)."""
    if value is None or math.isnan(value):
        return NA
    return f"{value:{spec}}{suffix}"


def ms(value: float | None, unit: str = "") -> str:
    """Milliseconds to a tenth, then `unit` (" ms" for a figure on its own); `n/a` alone."""
    return show(value, ".1f", unit)


def pct(share: float | None, spec: str = ".1f") -> str:
    """A share (0.5) as a percentage (`50.0%`)."""
    return show(None if share is None else 100 * share, spec, "%")


def times(value: float | None) -> str:
    """A ratio as a factor (`1.52x`)."""
    return show(value, ".2f", "x")


def latencies(r: dict[str, Any]) -> str:
    return f"{ms(r['p50_ms'])} / {ms(r['p99_ms'])} / {ms(r['p999_ms'])}"


def system_row(
    scenario: str, c: int, name: str, r: dict[str, Any], runs: int, *, ccs_digits: int
) -> Row:
    """One system's load-test row: throughput and latencies, and for the enriching systems
    the upstream calls per request and the share of requests with behavioral cohorts."""
    calls = r["upstream_calls"]
    extra = (
        f"; per request CCS {show(ratio(calls['ccs'], r['sent']), f'.{ccs_digits}f')}"
        f", Ctx {show(ratio(calls['contextual'], r['sent']), '.3f')}, behavioral cohorts in "
        f"{pct(ratio(calls['ad_behavioral'], calls['ad']), '.0f')}"
        if name != "passthrough"
        else ""
    )
    return Row(
        scenario,
        f"c={c} {name}: req/s, p50 / p99 / p99.9 ms{extra}"
        + (f" (median of {runs} runs)" if runs > 1 else ""),
        f"{show(r['rps'], '.0f')} req/s, {latencies(r)}",
    )
