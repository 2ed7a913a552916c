"""`python -m benchmarks [--quick] [--write]`: every scenario, one table.

The full run (about 10 minutes on 2 cores) writes benchmarks/RESULTS.md; `--quick` is a
smoke run (under a minute) that writes it only with `--write`. Neither ever fails on a
figure: targets are reported as met or GAP, the exit status says only whether it ran.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchmarks import scenarios
from benchmarks.harness import Bench, Plan
from benchmarks.report import machine, table, write_results

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks", description="cohortkv against its baselines, one table."
    )
    p.add_argument("--quick", action="store_true", help="smoke run, under a minute")
    p.add_argument("--write", action="store_true", help="with --quick: write RESULTS.md too")
    p.add_argument("--output", type=Path, default=RESULTS, help="where RESULTS.md goes")
    p.add_argument("--json", type=Path, help="also dump every raw figure as JSON here")
    p.add_argument(
        "--only",
        metavar="LIST",
        help="comma-separated scenario numbers (1-10, profile); the report is then not written",
    )
    p.add_argument(
        "--latency",
        default="lognormal:25:120",
        help="CCS and Contextual latency: lognormal:P50:P99, fixed:MS or zero",
    )
    p.add_argument("--ad-latency", default="lognormal:25:120", help="ad server latency")
    a = p.parse_args(argv)

    plan = (Plan.quick if a.quick else Plan.full)(latency=a.latency, ad_latency=a.ad_latency)
    only = set(a.only.split(",")) if a.only else None
    started = time.monotonic()
    bench = Bench(plan, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    info = machine()
    print(
        f"cohortkv benchmarks ({plan.name}): {info['cpu']}, {info['cores']} cores, "
        f"Python {info['python']}",
        file=sys.stderr,
    )
    try:
        bench.start()
        scenarios.run(bench, only)
    finally:
        bench.stop()
    print(table(bench.rows))
    print(f"({plan.name} run, {time.monotonic() - started:.0f} s)")
    if a.json:
        a.json.write_text(json.dumps(bench.data, indent=1, default=str))
    if (not a.quick or a.write) and only is None:
        write_results(a.output, bench.rows, bench.data, plan, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
