"""Runs `cohortkv serve` exactly as the command does (`plugin.commands.cli.main`), with two
knobs the benchmark needs: the event loop (`--loop asyncio` hides uvloop, so the CLI falls back to
asyncio) and an optional cProfile, from SIGUSR1 to shutdown, written as JSON.

    python -m benchmarks.sidecar --config FILE [--loop asyncio] [--profile OUT.json]

It stops like the real one on SIGTERM, and also when its standard input closes.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import signal
import sys
import threading
import time
from typing import Any


class GcPauses:
    """Collections by generation and how long they stopped the process (gc.callbacks)."""

    def __init__(self) -> None:
        self.started = 0.0
        self.count = [0, 0, 0]
        self.total_s = [0.0, 0.0, 0.0]
        self.max_s = [0.0, 0.0, 0.0]
        self.collected = [0, 0, 0]

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
            return
        g = info["generation"]
        took = time.perf_counter() - self.started
        self.count[g] += 1
        self.total_s[g] += took
        self.max_s[g] = max(self.max_s[g], took)
        self.collected[g] += info.get("collected", 0)

    def summary(self) -> dict[str, Any]:
        return {
            f"gen{g}": {
                "collections": self.count[g],
                "total_ms": round(self.total_s[g] * 1000, 1),
                "max_ms": round(self.max_s[g] * 1000, 2),
                "freed_objects": self.collected[g],
            }
            for g in range(3)
        }


def _stop_on_stdin_eof() -> None:
    try:
        sys.stdin.buffer.read()
    finally:
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.sidecar")
    p.add_argument("--config", required=True)
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    p.add_argument("--profile", metavar="OUT.json")
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--gc-stats", metavar="OUT.json", help="write garbage-collection pauses here")
    p.add_argument(
        "--gc-threshold",
        type=int,
        metavar="N",
        help="experiment: serve.gc_threshold for this run (default 50,000; CPython's is 700)",
    )
    a = p.parse_args(argv)
    if a.gc_threshold:
        # `cohortkv serve` sets its own threshold from the config at start-up.
        os.environ["COHORTKV_SERVE__GC_THRESHOLD"] = str(a.gc_threshold)
    pauses = GcPauses()
    if a.gc_stats:
        gc.callbacks.append(pauses)
    if a.loop == "asyncio":
        sys.modules["uvloop"] = None  # type: ignore[assignment]  # the CLI then uses asyncio.run
    from plugin.commands.cli import main as cohortkv

    threading.Thread(target=_stop_on_stdin_eof, daemon=True).start()
    if not a.profile:
        try:
            return cohortkv(["serve", "--config", a.config])
        finally:
            if a.gc_stats:
                with open(a.gc_stats, "w") as f:
                    json.dump(pauses.summary(), f)
    # Thread CPU time, not the wall clock: a wait after preemption is not the code's cost.
    prof = cProfile.Profile(time.thread_time)
    # Profiling starts on SIGUSR1, so that start-up and warm-up stay out of the figures.
    signal.signal(signal.SIGUSR1, lambda *_: prof.enable())
    try:
        code = cohortkv(["serve", "--config", a.config])
    finally:
        prof.disable()
        from benchmarks.library import cumulative, package_shares, top_functions

        doc = {
            "top": top_functions(prof, a.top),
            "packages": package_shares(prof),
            "cumulative": cumulative(prof, a.top, ("/plugin/", "/adapters/")),
        }
        with open(a.profile, "w") as f:
            json.dump(doc, f)
        prof.dump_stats(a.profile + ".pstats")  # the raw profile, for pstats / snakeviz
    return code


if __name__ == "__main__":
    sys.exit(main())
