"""Scenario 5: memory per cached user, a million users in the behavioral cache."""

from __future__ import annotations

from typing import Any

from benchmarks.harness import Bench
from benchmarks.procs import py, run_json
from benchmarks.rows import Row, judge, show

BYTES_PER_USER = 300
"""Target: RSS growth and tracemalloc, per cached user."""


def run(bench: Bench) -> None:
    p = bench.plan
    argv = py("benchmarks.memory", "--users", str(p.mem_users), "--traced-users", str(p.mem_traced))
    r: dict[str, Any] = run_json(argv, timeout_s=900)
    bench.data["s5"] = r
    rss, traced = r["bytes_per_user_rss"], r["bytes_per_user_traced"]
    bench.rows.append(
        Row(
            "5",
            f"memory per cached user, {p.mem_users:,} users in the behavioral cache: "
            f"RSS growth / tracemalloc ({p.mem_traced:,} users)",
            f"{show(rss, '.0f')} / {show(traced, '.0f')} B",
            f"<= {BYTES_PER_USER} B",
            judge(max(rss, traced), lambda v: v <= BYTES_PER_USER),
        )
    )
    bench.rows.append(
        Row(
            "5",
            "storing one CCS answer (decode + cache) while filling / into the full cache",
            f"{show(r['us_per_answer_filling'])} / {show(r['us_per_answer_full'])} us",
        )
    )
