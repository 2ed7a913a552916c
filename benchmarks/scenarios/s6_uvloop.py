"""Scenario 6: uvloop against the default asyncio loop, library and sidecar."""

from __future__ import annotations

from benchmarks.harness import Bench
from benchmarks.rows import Row, ms, show

LOOPS = ("uvloop", "asyncio")


def run(bench: Bench) -> None:
    p = bench.plan
    common = (
        "--n",
        str(p.uvloop_lib_calls),
        "--concurrency",
        str(p.lib_concurrency),
        "--warmup",
        str(min(p.lib_warmup, p.uvloop_lib_calls // 5)),
    )
    lib = {loop: bench.library("latency", "--loop", loop, *common) for loop in LOOPS}
    side = {}
    for loop in LOOPS:
        s = bench.sidecar(loop=loop)
        bench.log(f"  uvloop scenario: sidecar on {loop}")
        side[loop] = bench.load(s, 64, p.load_s, p.load_warmup_s)
        s.stop()
    bench.data["s6"] = {"library": lib, "sidecar": side}
    for loop in LOOPS:
        r = lib[loop]
        bench.rows.append(
            Row(
                "6",
                f"library enrich on {loop}: p50 / p99 ms, CPU per call",
                f"{ms(r['p50_ms'])} / {ms(r['p99_ms'])}, {show(r['cpu_us_per_call'], '.0f')} us",
            )
        )
    for loop in LOOPS:
        r = side[loop]
        cpu = show(r["cpu_us_per_request"]["system"], ".0f")
        bench.rows.append(
            Row(
                "6",
                f"sidecar c=64 on {loop}: req/s, p50 ms, sidecar CPU per request",
                f"{show(r['rps'], '.0f')}, {ms(r['p50_ms'])}, {cpu} us",
            )
        )
