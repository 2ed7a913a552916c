"""Scenario 9: `cohortkv serve` with one worker and with two, the realistic mix at c=256.

Both sidecars share the same Redis (`serve.workers > 1` needs one; the one-worker sidecar has
it too, so that the two differ only in their workers). Before the measured run, both workers
must have answered (the kernel spreads new connections over them), and each system sees the
realistic mix's history first, unmeasured. CPU per request is the whole process tree's (the
parent and its workers). On a machine whose cores the load generator and the emulated
upstreams share, the second worker's gain is bounded by what they leave free.
"""

from __future__ import annotations

import contextlib
import os
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.fleet import RedisServer, _config
from benchmarks.rows import Row, system_row

if TYPE_CHECKING:
    from benchmarks.harness import Bench
    from benchmarks.procs import Child

CONCURRENCY = 256
WORKERS = (1, 2)
MIN_LOAD_S = 3.0
MIN_WARMUP_S = 1.0
"""Even in a quick run: at c=256 a shorter run measures mostly the ramp."""


def run(bench: Bench) -> None:
    redis = RedisServer()
    try:
        if redis.url is None:
            bench.rows.append(Row("9", "serve.workers 1 vs 2", "not run: no redis-server"))
            return
        results: dict[int, dict[str, Any]] = {}
        for n in WORKERS:
            results[n] = _one(bench, redis.url, n)
            row = system_row("9", CONCURRENCY, f"serve.workers = {n}", results[n], 1, ccs_digits=3)
            bench.rows.append(row)
    finally:
        redis.stop()
    bench.data["s9"] = results
    one, two = results[1], results[2]
    cpu = f"{two['tree_cpu_us']:.0f} vs {one['tree_cpu_us']:.0f} us CPU per request"
    bench.rows.append(
        Row(
            "9",
            f"c={CONCURRENCY} realistic mix: throughput with serve.workers = 2 / 1 "
            f"(p99 {two['p99_ms']:.1f} vs {one['p99_ms']:.1f} ms; {cpu}; "
            f"{os.cpu_count()} cores shared with the load generator and upstreams)",
            f"{two['rps'] / max(one['rps'], 1e-9):.2f}x",
        )
    )


def _one(bench: Bench, redis_url: str, workers: int) -> dict[str, Any]:
    p = bench.plan
    system = bench.sidecar(extra=_config(redis_url, "memory"), serve=f"workers = {workers}\n")
    try:
        _all_workers_answer(system.url, workers)
        bench.log(f"  realistic mix: serve.workers = {workers} at concurrency {CONCURRENCY}")
        before: list[float] = []
        r = bench.load(
            system,
            CONCURRENCY,
            max(p.load_s, MIN_LOAD_S),
            max(p.load_warmup_s, MIN_WARMUP_S),
            mix="realistic",
            history=True,
            on_start=lambda: before.append(tree_cpu_s(system)),
        )
        r["tree_cpu_us"] = (tree_cpu_s(system) - before[0]) / max(int(r["sent"]), 1) * 1e6
    finally:
        system.stop()
    return r


def _all_workers_answer(url: str, workers: int, timeout_s: float = 30.0) -> None:
    """Until /metrics shows a request answered by each worker (new connections each time)."""
    if workers == 1:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for _ in range(8):
            urllib.request.urlopen(f"{url}/healthz", timeout=5).read()
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        seen = {
            line.split('worker="', 1)[1].split('"', 1)[0]
            for line in text.splitlines()
            if line.startswith("cohortkv_worker_requests_total{")
        }
        if len(seen) >= workers:
            return
        time.sleep(0.2)
    raise RuntimeError(f"not every one of {workers} workers answered within {timeout_s} s")


def tree_cpu_s(child: Child) -> float:
    """CPU seconds of the child and of every process it started (its workers)."""
    total = 0.0
    todo = [child.proc.pid]
    while todo:
        pid = todo.pop()
        total += _cpu_s(pid)
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            todo += [int(c) for c in children]
    return total


def _cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0
