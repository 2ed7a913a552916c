"""Scenario 4: Contextual API calls per 10,000 ad requests over 100 URLs (Zipf)."""

from __future__ import annotations

from benchmarks.harness import Bench
from benchmarks.ratios import ratio
from benchmarks.rows import Row, judge, show

TTL_S = 600.0
"""The contextual cache's TTL: each URL may be asked for again once per TTL."""


def run(bench: Bench) -> None:
    p = bench.plan
    bench.reset_stats()
    r = bench.library("latency", "--n", str(p.ctx_requests), "--concurrency", "64", "--warmup", "0")
    st = bench.stats()["contextual"]
    calls = st["stats"].get("contextual", 0)
    distinct = st["distinct_urls"]
    refreshes = int(r["wall_s"] // TTL_S) * distinct
    per_10k = _per_10k(calls, p.ctx_requests)
    naive = bench.data.get("s1", {}).get("naive")
    naive_per_10k = _per_10k(naive["ctx_calls"], naive["calls"]) if naive else None
    bench.data["s4"] = {
        "calls": calls,
        "distinct_urls": distinct,
        "requests": p.ctx_requests,
        "wall_s": r["wall_s"],
        "naive_per_10k": float("nan") if naive_per_10k is None else naive_per_10k,
        "sources": r.get("sources", {}),
    }
    allowed = 100 + refreshes
    bench.rows.append(
        Row(
            "4",
            f"Contextual API calls per 10,000 ad requests, Zipf over 100 URLs "
            f"({distinct} URLs seen, {r['wall_s']:.0f} s run, TTL {TTL_S:.0f} s)",
            show(per_10k, ".0f"),
            f"<= {allowed} (100 + {refreshes} TTL refreshes)",
            judge(per_10k, lambda v: v <= allowed),
        )
    )
    bench.rows.append(
        Row("4", "Contextual API calls per 10,000: naive baseline", show(naive_per_10k, ".0f"))
    )


def _per_10k(calls: float, requests: float) -> float | None:
    share = ratio(calls, requests)
    return None if share is None else share * 10_000
