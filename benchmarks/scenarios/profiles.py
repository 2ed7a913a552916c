"""Profiles of the library enrich loop and of the sidecar under load (c=64), both mixes: run by
the full plan after the scenarios, or alone with `--only profile`.

Three views of the sidecar per mix: cProfile on thread CPU time (what each function costs), the
same profile of the passthrough under the same load minus it (where the extra CPU per request
goes), and a py-spy sample without the deterministic profiler's overhead.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from benchmarks import profdiff, sampling
from benchmarks.harness import Bench
from benchmarks.procs import Child, py

_SECONDS = 6.0


def run(bench: Bench) -> None:
    bench.set_upstream("ccs", latency="zero")
    bench.set_upstream("contextual", latency="zero")
    lib = bench.library("profile", "--n", "4000", "--concurrency", "16", "--warmup", "500")
    bench.restore_upstreams()
    out: dict[str, Any] = {"library": lib}
    for mix, name in (("worst", "sidecar"), ("realistic", "sidecar_realistic")):
        side, side_n = _profiled_sidecar(bench, mix, bench.tmp / f"{name}-profile.json")
        base_path = bench.tmp / f"{name}-passthrough.pstats"
        base_n = _profiled_passthrough(bench, mix, base_path)
        stats = Path(str(bench.tmp / f"{name}-profile.json") + ".pstats")
        if stats.exists() and base_path.exists():
            side["vs_passthrough"] = profdiff.diff(stats, side_n, base_path, base_n)
        if sampling.available():
            side["sampled"] = _sampled_sidecar(bench, mix, bench.tmp / f"{name}-spy.txt")
        out[name] = side
    bench.data["profile"] = out


def _seconds(bench: Bench) -> float:
    return min(bench.plan.load_s, _SECONDS)


def _profiled_sidecar(bench: Bench, mix: str, path: Path) -> tuple[dict[str, Any], int]:
    s = bench.sidecar(profile=str(path))
    bench.load(s, 64, 1.0, 0.2, mix=mix, history=True)

    def start(child: Child = s) -> None:
        child.proc.send_signal(signal.SIGUSR1)

    load = bench.load(s, 64, _seconds(bench), 0.0, mix=mix, history=True, on_start=start)
    s.stop()
    side: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    side["rps_under_profiler"] = load["rps"]
    return side, int(load["sent"])


def _profiled_passthrough(bench: Bench, mix: str, out: Path) -> int:
    gam = f"gam={bench.ups['adserver'].url}"
    argv = py(
        "benchmarks.profiled", str(out), "benchmarks.baselines.passthrough", "--upstream", gam
    )
    c = bench._keep(Child("passthrough", argv))
    bench.load(c, 64, 1.0, 0.2, mix=mix)

    def start(child: Child = c) -> None:
        child.proc.send_signal(signal.SIGUSR1)

    load = bench.load(c, 64, _seconds(bench), 0.0, mix=mix, on_start=start)
    c.stop()
    return int(load["sent"])


def _sampled_sidecar(bench: Bench, mix: str, raw: Path) -> dict[str, Any]:
    s = bench.sidecar()
    bench.load(s, 64, 1.0, 0.2, mix=mix, history=True)
    spy: list[Any] = []

    def start(child: Child = s) -> None:
        spy.append(sampling.start(child.proc.pid, _seconds(bench) - 0.5, raw))

    load = bench.load(s, 64, _seconds(bench), 0.0, mix=mix, history=True, on_start=start)
    for p in spy:
        p.wait(timeout=60)
    s.stop()
    summary = sampling.summarise(raw) if raw.exists() else {}
    summary["rps_under_sampler"] = load["rps"]
    return summary
