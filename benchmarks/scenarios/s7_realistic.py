"""Scenario 7: the realistic mix (see `benchmarks.workload.Mix`): views of 4 breaks, 70%
consented, half the viewers returning with a cached answer; the sidecar in both wait modes.

At c=64 and c=256 against both baselines; at c=16 (where no process is short of CPU) against
passthrough only, for the latency of `wait = "if_uncached"`.
"""

from __future__ import annotations

from typing import Any

from benchmarks.harness import Bench
from benchmarks.procs import Child
from benchmarks.ratios import cpu_ratio, group_added_p99, median_run, rps_ratio
from benchmarks.rows import SIDECAR, SIDECAR_FAST, Row, judge, ms, pct, show, system_row, times

MIX_CPU_RATIO = 1.5
"""Target: sidecar CPU per request over passthrough on the realistic mix."""
MIX_THROUGHPUT_AT_256 = 0.65
"""Target: sidecar throughput over passthrough on the realistic mix at c=256 (CPU-bound)."""
RETURNING_ADDED_P99_MS = 2.0
"""Target, `wait = "if_uncached"`: p99 added over passthrough for returning viewers (c=64)."""
IF_UNCACHED = '[behavioral]\nwait = "if_uncached"\n'
SYSTEMS = ("passthrough", "naive proxy", SIDECAR, SIDECAR_FAST)

Runs = dict[str, dict[int, list[dict[str, Any]]]]
"""Load runs by system, then by concurrency, in the order they ran."""


def present(c: int) -> list[str]:
    """The systems measured at concurrency `c`: all but the naive proxy at c=16."""
    return [name for name in SYSTEMS if c != 16 or name != "naive proxy"]


def run(bench: Bench) -> None:
    concurrencies = tuple(c for c in bench.plan.concurrencies if c in (16, 64, 256))
    runs = _measure(bench, concurrencies)
    bench.data["s7"] = {
        name: {c: median_run(rs) for c, rs in by_c.items()} for name, by_c in runs.items()
    }
    bench.data["s7_runs"] = runs
    for c in concurrencies:
        for name in present(c):
            r = bench.data["s7"][name][c]
            bench.rows.append(system_row("7", c, name, r, len(runs[name][c]), ccs_digits=3))
        if c != 16:
            bench.rows.extend(_throughput_rows(c, runs))
        bench.rows.extend(_cpu_and_latency_rows(c, runs))


def _measure(bench: Bench, concurrencies: tuple[int, ...]) -> Runs:
    p = bench.plan
    systems: dict[str, tuple[Child, bool]] = {
        "passthrough": (bench.proxy("passthrough"), False),
        "naive proxy": (bench.proxy("naive"), False),
        SIDECAR: (bench.sidecar(), True),
        SIDECAR_FAST: (bench.sidecar(extra=IF_UNCACHED), True),
    }
    runs: Runs = {name: {c: [] for c in concurrencies if name in present(c)} for name in systems}
    for c in concurrencies:
        for rep in range(p.reps_at_64 if c == 64 else 1):
            for name in present(c):
                system, stateful = systems[name]
                bench.log(f"  realistic mix: {name} at concurrency {c} (run {rep + 1})")
                load = bench.load(
                    system, c, p.load_s, p.load_warmup_s, mix="realistic", history=stateful
                )
                runs[name][c].append(load)
    for system, _ in systems.values():
        system.stop()
    return runs


def _throughput_rows(c: int, runs: Runs) -> list[Row]:
    """The sidecar's throughput against both baselines (c=64, c=256)."""
    base, naive = runs["passthrough"][c], runs["naive proxy"][c]
    side, fast = runs[SIDECAR][c], runs[SIDECAR_FAST][c]
    vs_pass = rps_ratio(side, base)
    gated = c == 256
    return [
        Row(
            "7",
            f"c={c} sidecar throughput / passthrough "
            f"(wait=if_uncached: {pct(rps_ratio(fast, base))})",
            pct(vs_pass),
            f">= {100 * MIX_THROUGHPUT_AT_256:.0f}% at c=256" if gated else "—",
            judge(vs_pass, lambda v: v >= MIX_THROUGHPUT_AT_256) if gated else "—",
        ),
        Row(
            "7",
            f"c={c} sidecar throughput / naive proxy "
            f"(wait=if_uncached: {times(rps_ratio(fast, naive))})",
            times(rps_ratio(side, naive)),
        ),
    ]


def _cpu_and_latency_rows(c: int, runs: Runs) -> list[Row]:
    """CPU per request against passthrough, and returning viewers' added p99."""
    base = runs["passthrough"][c]
    cpu = cpu_ratio(runs[SIDECAR][c], base)
    fast = cpu_ratio(runs[SIDECAR_FAST][c], base)
    added = group_added_p99(runs[SIDECAR_FAST][c], base, "returning")
    always = group_added_p99(runs[SIDECAR][c], base, "returning")
    gated_cpu = c == 64
    gated_added = c == 64
    return [
        Row(
            "7",
            f"c={c} sidecar CPU per request / passthrough ({show(cpu['sidecar_us'], '.0f')} vs "
            f"{show(cpu['passthrough_us'], '.0f')} us; wait=if_uncached: "
            f"{times(fast['ratio'])})",
            times(cpu["ratio"]),
            f"<= {MIX_CPU_RATIO:.1f}x" if gated_cpu else "—",
            judge(cpu["ratio"], lambda v: v <= MIX_CPU_RATIO) if gated_cpu else "—",
        ),
        Row(
            "7",
            f"c={c} returning viewers, wait=if_uncached: added p99 over passthrough "
            f"(wait=always: {ms(always, ' ms')})",
            ms(added, " ms"),
            f"<= {RETURNING_ADDED_P99_MS:.1f} ms" if gated_added else "—",
            judge(added, lambda v: v <= RETURNING_ADDED_P99_MS) if gated_added else "—",
        ),
    ]
