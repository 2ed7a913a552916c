"""In-process scenarios: `Enricher.enrich` (and the naive integration) called by a host.

Run as a child process per scenario so each starts cold, on the event loop asked for:

    python -m benchmarks.library latency --ccs URL --ctx URL [--impl cohortkv|naive] [--loop L]
    python -m benchmarks.library profile --ccs URL --ctx URL

`latency` times each call from the host's side (`perf_counter` around `await enrich(url)`) at a
fixed number of concurrent callers after a warm-up; `profile` runs the same loop under cProfile
and reports the top functions by own time. Each prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from benchmarks.baselines.naive import NaiveIntegration
from benchmarks.procs import ROOT
from benchmarks.stats import summarize
from benchmarks.upstreams import new_loop
from benchmarks.workload import Workload
from plugin import Config, Enricher

AD_BASE = "https://pubads.g.doubleclick.net"
API_KEY = "bench-key"


def bench_config(ccs: str, ctx: str, budget_ms: int = 300, **cache: Any) -> Config:
    from plugin.config import CacheConfig

    return Config(
        api_key=API_KEY,
        ccs_url=ccs,
        ctx_url=ctx,
        budget_ms=budget_ms,
        cache=CacheConfig(**cache),
    )


async def _drive(
    call: Callable[[str], Awaitable[Any]],
    urls: list[str],
    concurrency: int,
    warmup: int,
    stagger_s: float = 0.0,
) -> list[float]:
    """Latencies of the calls after the first `warmup`, at `concurrency` concurrent callers
    (starting spread over `stagger_s`, as independent requests arrive)."""
    latencies: list[float] = []
    position = 0
    perf = time.perf_counter

    async def caller(n: int) -> None:
        nonlocal position
        if stagger_s:
            await asyncio.sleep(stagger_s * n / concurrency)
        while position < len(urls):
            i = position
            position += 1
            t = perf()
            await call(urls[i])
            if i >= warmup:
                latencies.append(perf() - t)

    await asyncio.gather(*(caller(n) for n in range(concurrency)))
    return latencies


async def run_latency(a: argparse.Namespace) -> dict[str, Any]:
    urls = Workload(seed=a.seed, consented=a.consented).ad_requests(AD_BASE, a.n + a.warmup)
    started = time.perf_counter()
    cpu0 = time.process_time()
    extra: dict[str, Any] = {}
    if a.impl == "naive":
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256), cookie_jar=aiohttp.DummyCookieJar()
        )
        naive = NaiveIntegration(session, a.ccs, a.ctx, API_KEY, timeout_s=a.budget_ms / 1000)
        try:
            lat = await _drive(naive.enrich, urls, a.concurrency, a.warmup, a.stagger_ms / 1000)
        finally:
            await session.close()
    else:
        config = bench_config(a.ccs, a.ctx, a.budget_ms)
        enriched = 0

        async with Enricher(config) as e:

            async def call(url: str) -> None:
                nonlocal enriched
                r = await e.enrich(url)
                if r.keyvalues:
                    enriched += 1

            stagger = a.stagger_ms / 1000
            if a.ccs_fault:
                # Warm (connections, contextual cache) with a healthy CCS API, then break it.
                await _drive(call, urls[: a.warmup], a.concurrency, a.warmup, stagger)
                await _control(a.ccs, {"fault": a.ccs_fault})
                lat = await _drive(call, urls[a.warmup :], a.concurrency, 0, stagger)
            else:
                lat = await _drive(call, urls, a.concurrency, a.warmup, stagger)
            extra["enriched"] = enriched
            extra["sources"] = _sources(e)
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - started
    out = summarize(lat)
    budget_s = a.budget_ms / 1000
    out.update(
        at_budget=sum(1 for x in lat if x >= budget_s),
        impl=a.impl,
        loop=type(asyncio.get_running_loop()).__module__.split(".")[0],
        calls=len(urls),
        concurrency=a.concurrency,
        cpu_us_per_call=cpu / len(urls) * 1e6,
        wall_s=wall,
        **extra,
    )
    return out


async def _control(base: str, settings: dict[str, Any]) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(base + "/__control", json=settings) as resp,
    ):
        resp.raise_for_status()


def _sources(e: Enricher) -> dict[str, float]:
    """`signal:source` counts from the enricher's own metrics (where answers came from)."""
    out: dict[str, float] = {}
    for metric in e.metrics.registry.collect():
        if metric.name == "cohortkv_signal_source":
            for s in metric.samples:
                if s.name.endswith("_total"):
                    out[f"{s.labels['signal']}:{s.labels['source']}"] = s.value
    return out


async def run_profile(a: argparse.Namespace) -> dict[str, Any]:
    urls = Workload(seed=a.seed).ad_requests(AD_BASE, a.n + a.warmup)
    config = bench_config(a.ccs, a.ctx, a.budget_ms)
    async with Enricher(config) as e:
        await _drive(e.enrich, urls[: a.warmup], a.concurrency, 0)
        prof = cProfile.Profile()
        cpu0 = time.process_time()
        prof.enable()
        await _drive(e.enrich, urls[a.warmup :], a.concurrency, 0)
        prof.disable()
        cpu = time.process_time() - cpu0
    return {
        "calls": a.n,
        "cpu_us_per_call_profiled": cpu / a.n * 1e6,
        "top": top_functions(prof, a.top),
        "packages": package_shares(prof),
        "cumulative": cumulative(prof, a.top, ("/plugin/", "/adapters/")),
    }


def top_functions(prof: cProfile.Profile, n: int) -> list[dict[str, Any]]:
    """The `n` functions with the most own time, with their share of all profiled time."""
    st = pstats.Stats(prof, stream=io.StringIO())
    raw: dict[Any, Any] = st.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values()) or 1.0
    rows = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:n]
    out = []
    for (filename, line, func), (_cc, ncalls, tottime, cumtime, _callers) in rows:
        out.append(
            {
                "function": func if filename == "~" else f"{_short(filename)}:{line}({func})",
                "calls": ncalls,
                "own_pct": round(100 * tottime / total, 1),
                "cum_s": round(cumtime, 3),
            }
        )
    return out


def cumulative(prof: cProfile.Profile, n: int, where: tuple[str, ...]) -> list[dict[str, Any]]:
    """The `n` functions under `where` (path parts) with the most time including callees."""
    st = pstats.Stats(prof, stream=io.StringIO())
    raw: dict[Any, Any] = st.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values()) or 1.0
    rows = [
        (k, v) for k, v in raw.items() if any(w in k[0] for w in where) and "<genexpr>" not in k[2]
    ]
    rows.sort(key=lambda kv: kv[1][3], reverse=True)
    return [
        {
            "function": f"{_short(filename)}:{line}({func})",
            "calls": v[1],
            "cum_pct": round(100 * v[3] / total, 1),
        }
        for (filename, line, func), v in rows[:n]
    ]


_PACKAGES = (
    ("/plugin/", "cohortkv plugin"),
    ("/adapters/", "cohortkv adapters"),
    ("/benchmarks/", "benchmark harness"),
    ("aiohttp/", "aiohttp"),
    ("yarl/", "yarl+multidict"),
    ("multidict/", "yarl+multidict"),
    ("prometheus_client/", "prometheus_client"),
    ("msgspec", "msgspec"),
    ("/asyncio/", "asyncio"),
    ("uvloop", "event loop (uvloop, I/O)"),
)


def _package(filename: str, func: str) -> str:
    where = filename if filename != "~" else func
    for marker, name in _PACKAGES:
        if marker in where or (filename == "~" and marker.strip("/") in func):
            return name
    if filename == "~":
        if "_asyncio" in func or "select" in func or "epoll" in func:
            return "asyncio"
        return "builtins"
    return "stdlib/other"


def package_shares(prof: cProfile.Profile) -> dict[str, float]:
    """Share of own time (percent) by package: where the CPU actually goes."""
    st = pstats.Stats(prof, stream=io.StringIO())
    raw: dict[Any, Any] = st.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values()) or 1.0
    out: dict[str, float] = {}
    for (filename, _line, func), v in raw.items():
        name = _package(filename, func)
        out[name] = out.get(name, 0.0) + v[2]
    return {k: round(100 * v / total, 1) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}


def _short(filename: str) -> str:
    for marker in ("site-packages/", str(ROOT) + "/", "lib/python3"):
        at = filename.find(marker)
        if at >= 0:
            return (
                filename[at + len(marker) :]
                if marker != "lib/python3"
                else "stdlib:" + (filename.rsplit("/", 1)[-1])
            )
    return filename


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.library")
    p.add_argument("mode", choices=("latency", "profile"))
    p.add_argument("--ccs", required=True)
    p.add_argument("--ctx", required=True)
    p.add_argument("--impl", choices=("cohortkv", "naive"), default="cohortkv")
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--budget-ms", type=int, default=300)
    p.add_argument("--consented", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--stagger-ms", type=float, default=0.0, help="spread of caller starts")
    p.add_argument("--ccs-fault", choices=("hang", "errors"), help="set on CCS after warm-up")
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    a = p.parse_args(argv)
    run = run_latency if a.mode == "latency" else run_profile
    with asyncio.Runner(loop_factory=lambda: new_loop(a.loop)) as runner:
        result = runner.run(run(a))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
