"""Scenario 1: library enrich latency, cohortkv against the naive integration."""

from __future__ import annotations

from typing import Any

from benchmarks.harness import Bench
from benchmarks.ratios import ratio
from benchmarks.rows import Row, judge, latencies, ms, show, times


def run(bench: Bench) -> None:
    p = bench.plan
    common = (
        "--n",
        str(p.lib_calls),
        "--concurrency",
        str(p.lib_concurrency),
        "--warmup",
        str(p.lib_warmup),
    )
    out: dict[str, dict[str, Any]] = {}
    for impl in ("cohortkv", "naive"):
        bench.reset_stats()
        r = bench.library("latency", "--impl", impl, *common)
        st = bench.stats()
        r["ctx_calls"] = st["contextual"]["stats"].get("contextual", 0)
        r["ccs_calls"] = st["ccs"]["stats"].get("ccs", 0)
        out[impl] = r
    bench.data["s1"] = out
    c, n = out["cohortkv"], out["naive"]
    label = f"library enrich, {p.lib_concurrency} callers ({c['samples']} calls)"
    for impl, name in (("cohortkv", "cohortkv"), ("naive", "naive baseline")):
        bench.rows.append(Row("1", f"{label}: {name} p50 / p99 / p99.9 ms", latencies(out[impl])))
    target = bench.added_latency_target_ms
    bench.rows.append(
        Row(
            "1",
            "library enrich p50 (cohortkv vs naive: "
            f"{times(ratio(n['p50_ms'], c['p50_ms']))} faster, "
            f"CPU {show(c['cpu_us_per_call'], '.0f')} vs {show(n['cpu_us_per_call'], '.0f')} "
            "us/call)",
            ms(c["p50_ms"], " ms"),
            f"<= slowest upstream p50 + 3 = {ms(target, ' ms')}",
            judge(c["p50_ms"], lambda v: v <= target),
        )
    )
