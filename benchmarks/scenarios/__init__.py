"""The scenarios, in the order they run, and the loop that runs them.

Each scenario is one module with one `run(bench)` that measures on the harness
(`benchmarks.harness.Bench`) and appends its rows to `bench.rows` (and its raw figures to
`bench.data`). Adding one: a module here, and a line in `SCENARIOS` (see benchmarks/README.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks import fleet, viewers
from benchmarks.harness import Bench
from benchmarks.scenarios import (
    profiles,
    s1_library,
    s2_sidecar,
    s3_hang,
    s4_contextual,
    s5_memory,
    s6_uvloop,
    s7_realistic,
    s9_workers,
)


@dataclass(frozen=True)
class Scenario:
    key: str
    """What `--only` selects it by, and the `#` column of its rows."""
    title: str
    run: Callable[[Bench], None]


SCENARIOS = (
    Scenario("1", "library enrich latency vs naive", s1_library.run),
    Scenario("2", "sidecar throughput and latency", s2_sidecar.run),
    Scenario("3", "CCS hanging", s3_hang.run),
    Scenario("4", "Contextual calls per 10,000", s4_contextual.run),
    Scenario("5", "memory per cached user", s5_memory.run),
    Scenario("6", "uvloop vs asyncio", s6_uvloop.run),
    Scenario("7", "realistic mix, both wait modes", s7_realistic.run),
    Scenario("8", "two replicas on one Redis", fleet.run),
    Scenario("9", "serve --workers 1 vs 2", s9_workers.run),
    Scenario("10", "memory per active viewer", lambda bench: viewers.run(bench, bench.plan.name)),
)


def run(bench: Bench, only: set[str] | None = None) -> None:
    """Every scenario (or those in `only`), then the profiles when the plan asks for them."""
    for scenario in SCENARIOS:
        if only and scenario.key not in only:
            continue
        t = time.monotonic()
        bench.log(f"scenario {scenario.key}: {scenario.title} ...")
        scenario.run(bench)
        bench.log(f"scenario {scenario.key}: done in {time.monotonic() - t:.1f} s")
    if bench.plan.profile and (not only or "profile" in only):
        bench.log("profiles ...")
        profiles.run(bench)
