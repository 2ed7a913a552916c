"""`python -m benchmarks --quick` runs end to end and prints every row of its table.

It never asserts a figure: timings belong to `benchmarks/RESULTS.md`, not to a test's verdict.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# One pattern per row the table must have; `{c}` runs over the three concurrencies.
ROWS = [
    r"^1 +library enrich.*cohortkv p50 / p99 / p99\.9",
    r"^1 +library enrich.*naive baseline p50 / p99 / p99\.9",
    r"^1 +library enrich p50 \(cohortkv vs naive",
    *(
        pattern.format(c=c)
        for c in (16, 64, 256)
        for pattern in (
            r"^2 +c={c} passthrough: req/s",
            r"^2 +c={c} naive proxy: req/s",
            r"^2 +c={c} cohortkv sidecar: req/s",
            r"^2 +c={c} sidecar throughput / passthrough",
            r"^2 +c={c} sidecar throughput / naive proxy",
            r"^2 +c={c} sidecar CPU per request / passthrough",
            r"^2 +c={c} added p50 over passthrough",
        )
    ),
    *(
        pattern.format(c=c)
        for c in (64, 256)
        for pattern in (
            r"^7 +c={c} passthrough: req/s, p50 / p99 / p99\.9",
            r"^7 +c={c} naive proxy: req/s",
            r"^7 +c={c} cohortkv sidecar: req/s",
            r"^7 +c={c} cohortkv sidecar, wait=if_uncached: req/s",
            r"^7 +c={c} sidecar throughput / passthrough",
            r"^7 +c={c} sidecar throughput / naive proxy",
            r"^7 +c={c} sidecar CPU per request / passthrough",
            r"^7 +c={c} returning viewers, wait=if_uncached: added p99 over passthrough",
        )
    ),
    r"^7 +c=16 passthrough: req/s, p50 / p99 / p99\.9",
    r"^7 +c=16 cohortkv sidecar: req/s",
    r"^7 +c=16 cohortkv sidecar, wait=if_uncached: req/s",
    r"^7 +c=16 sidecar CPU per request / passthrough",
    r"^7 +c=16 returning viewers, wait=if_uncached: added p99 over passthrough",
    r"^3 +CCS hangs.*sidecar ad request p99 / p99\.9",
    r"^3 +CCS hangs: library enrich p99 / p99\.9",
    r"^4 +Contextual API calls per 10,000 ad requests",
    r"^4 +Contextual API calls per 10,000: naive baseline",
    r"^5 +memory per cached user",
    r"^5 +storing one CCS answer",
    r"^6 +library enrich on uvloop",
    r"^6 +library enrich on asyncio",
    r"^6 +sidecar c=64 on uvloop",
    r"^6 +sidecar c=64 on asyncio",
    r"^8 +two replicas on one Redis.*duplicate play event",
    r"^8 +(redis event queue, two replicas.*events/s accepted|two replicas on one Redis: redis)",
    r"^9 +(c=256 realistic mix: throughput with serve.workers = 2 / 1|serve.workers 1 vs 2)",
    r"^10 +memory per active viewer.*(sidecar RSS growth per viewer|no redis-server)",
]
GATED = (
    "throughput / passthrough",
    "throughput / naive proxy",
    "CPU per request",
    "added p50",
    "added p99",
    "p99.9",
    "memory",
)


@pytest.mark.slow
def test_quick_run_prints_every_scenario_row(tmp_path: Path) -> None:
    results = ROOT / "benchmarks" / "RESULTS.md"
    before = results.read_bytes() if results.exists() else None
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--json", str(tmp_path / "raw.json")],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,  # a hang guard: under a minute on an idle machine, minutes on a busy one
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if re.match(r"#\s+measure", line))
    rows = lines[header + 2 :]
    for pattern in ROWS:
        matching = [line for line in rows if re.search(pattern, line)]
        assert len(matching) == 1, f"expected one row matching {pattern!r}:\n{done.stdout}"
    for line in rows:
        # A row with a target says whether it is met (or n/a: a run without the figure, e.g.
        # no request answered); which one it says is not tested.
        if any(g in line for g in GATED) and re.search(r"(<=|>=)", line):
            assert line.rstrip().endswith(("met", "GAP", "n/a")), line
    assert (tmp_path / "raw.json").stat().st_size > 0
    # --quick without --write leaves the results file alone.
    after = results.read_bytes() if results.exists() else None
    assert after == before
