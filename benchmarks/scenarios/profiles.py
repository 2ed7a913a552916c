"""cProfile of the library enrich loop and of the sidecar under load (c=64), both mixes: run by
the full plan after the scenarios, or alone with `--only profile`."""

from __future__ import annotations

import json
import signal
from typing import Any

from benchmarks.harness import Bench
from benchmarks.procs import Child


def run(bench: Bench) -> None:
    bench.set_upstream("ccs", latency="zero")
    bench.set_upstream("contextual", latency="zero")
    lib = bench.library("profile", "--n", "4000", "--concurrency", "16", "--warmup", "500")
    bench.restore_upstreams()
    out: dict[str, Any] = {"library": lib}
    for mix, name in (("worst", "sidecar"), ("realistic", "sidecar_realistic")):
        path = bench.tmp / f"{name}-profile.json"
        s = bench.sidecar(profile=str(path))
        bench.load(s, 64, 1.0, 0.2, mix=mix, history=True)

        def start(child: Child = s) -> None:
            child.proc.send_signal(signal.SIGUSR1)

        load = bench.load(
            s, 64, min(bench.plan.load_s, 6.0), 0.0, mix=mix, history=True, on_start=start
        )
        s.stop()
        side = json.loads(path.read_text()) if path.exists() else {}
        side["rps_under_profiler"] = load["rps"]
        out[name] = side
    bench.data["profile"] = out
