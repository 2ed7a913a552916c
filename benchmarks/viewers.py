"""Memory per active viewer: one sidecar on a redis-server of the run's own.

Every viewer is a new consented device (`rdid`, `idtype=idfa`, `gdpr=0`) watching one of
100 pieces of content, and sends one ad request: the sidecar then holds its session, its view
and its cached answer, and Redis the same fleet-wide. After a warm-up (pools, interned cohort
sets, the allocator's first arenas), `viewers` more viewers: the sidecar's RSS growth, Redis
`used_memory` growth and the keys Redis gained, each divided by viewers. Targets: RSS ≤ 1 KB
and Redis ≤ 400 B per viewer.

    python -m benchmarks.viewers --viewers 100000          # the whole measurement, JSON
    python -m benchmarks.viewers load --url URL --first N --viewers N   # the load (child)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp

from benchmarks.fleet import RedisServer
from benchmarks.procs import py, run_json
from benchmarks.rows import Row, judge
from benchmarks.upstreams import new_loop
from benchmarks.workload import GAM_QUERY

if TYPE_CHECKING:
    from benchmarks.harness import Bench
    from benchmarks.procs import Child

CONCURRENCY = 128
CONTENTS = 100
WARMUP = 5_000
RSS_TARGET_B = 1024
REDIS_TARGET_B = 400


def ad_request(base: str, n: int) -> str:
    """Viewer `n`'s first ad break: a device of its own, one of `CONTENTS` pieces of content
    (their contextual answers are shared by every viewer, not per-viewer state)."""
    device = str(uuid.UUID(int=n + 1, version=4)).upper()
    content = quote(f"https://video.example.com/show/{n % CONTENTS}", safe="")
    return (
        f"{base}/proxy/gam/gampad/ads?{GAM_QUERY}&correlator={n}"
        f"&description_url={content}&rdid={device}&idtype=idfa&is_lat=0&gdpr=0"
    )


async def load(url: str, first: int, viewers: int, concurrency: int) -> dict[str, Any]:
    """One ad request for each of `viewers` new viewers, numbered from `first`."""
    connector = aiohttp.TCPConnector(limit=2 * concurrency, limit_per_host=0)
    session = aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=10),
    )
    numbers = iter(range(first, first + viewers))
    errors = 0
    started = time.perf_counter()

    async def viewer() -> None:
        nonlocal errors
        for n in numbers:
            try:
                async with session.get(ad_request(url, n)) as resp:
                    await resp.read()
                    errors += resp.status != 200
            except (aiohttp.ClientError, TimeoutError):
                errors += 1

    try:
        await asyncio.gather(*(viewer() for _ in range(concurrency)))
    finally:
        await session.close()
    return {"viewers": viewers, "errors": errors, "wall_s": time.perf_counter() - started}


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _redis_figures(url: str) -> tuple[int, int]:
    """(used_memory, keys) of the run's own redis-server."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        return int(client.info("memory")["used_memory"]), int(client.dbsize())
    finally:
        client.close()


def _send(side: Child, first: int, viewers: int) -> dict[str, Any]:
    argv = py("benchmarks.viewers", "load", "--url", side.url, "--first", str(first))
    argv += ["--viewers", str(viewers), "--concurrency", str(CONCURRENCY)]
    got: dict[str, Any] = run_json(argv, timeout_s=1800)
    time.sleep(2.0)  # claims and cache writes that outlived their requests land
    return got


def measure(bench: Bench, viewers: int) -> dict[str, Any] | None:
    """The figures, or None without a redis-server."""
    redis_server = RedisServer()
    url = redis_server.url
    if url is None:
        return None
    try:
        extra = f'[cache]\nredis_url = "{url}"\nredis_prefix = "bench-{uuid.uuid4().hex[:8]}"\n'
        side = bench.sidecar(extra=extra)
        warmup = min(WARMUP, viewers)
        bench.log(f"  memory per viewer: {warmup} warm-up viewers, then {viewers}")
        _send(side, 0, warmup)
        rss0, used0 = _rss(side.proc.pid), _redis_figures(url)
        got = _send(side, warmup, viewers)
        rss1, used1 = _rss(side.proc.pid), _redis_figures(url)
        side.stop()
    finally:
        redis_server.stop()
    return {
        **got,
        "rss_growth_bytes": rss1 - rss0,
        "rss_per_viewer": (rss1 - rss0) / viewers,
        "redis_growth_bytes": used1[0] - used0[0],
        "redis_per_viewer": (used1[0] - used0[0]) / viewers,
        "redis_keys_per_viewer": (used1[1] - used0[1]) / viewers,
    }


VIEWERS = {"full": 100_000, "quick": 2_000}
"""Viewers measured per plan (a quick run only shows that the row is made)."""


def run(bench: Bench, plan: str | int = "full") -> None:
    """Scenario 10: the rows, for the plan's number of viewers (or `plan` viewers)."""
    viewers = plan if isinstance(plan, int) else VIEWERS.get(plan, VIEWERS["full"])
    r = measure(bench, viewers)
    title = f"memory per active viewer (session, view, answer), {viewers:,} viewers, Redis"
    if r is None:
        bench.rows.append(Row("10", title, "not run: no redis-server installed"))
        return
    bench.data["s10_viewers"] = r
    bench.rows.append(
        Row(
            "10",
            f"{title}: sidecar RSS growth per viewer ({r['errors']} ad requests failed)",
            f"{r['rss_per_viewer']:.0f} B",
            f"<= {RSS_TARGET_B} B",
            judge(r["rss_per_viewer"], lambda v: v <= RSS_TARGET_B),
        )
    )
    bench.rows.append(
        Row(
            "10",
            f"{title}: Redis used_memory growth per viewer / keys per viewer",
            f"{r['redis_per_viewer']:.0f} B / {r['redis_keys_per_viewer']:.2f}",
            f"<= {REDIS_TARGET_B} B",
            judge(r["redis_per_viewer"], lambda v: v <= REDIS_TARGET_B),
        )
    )


def _standalone(viewers: int, latency: str) -> dict[str, Any]:
    from benchmarks.harness import Bench, Plan

    bench = Bench(Plan.quick(latency=latency, ad_latency=latency), log=_err)
    try:
        bench.start()
        run(bench, viewers)
    finally:
        bench.stop()
    return {"rows": [vars(row) for row in bench.rows], **bench.data}


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.viewers")
    p.add_argument("what", nargs="?", choices=("measure", "load"), default="measure")
    p.add_argument("--url")
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--viewers", type=int, default=100_000)
    p.add_argument("--concurrency", type=int, default=CONCURRENCY)
    p.add_argument("--latency", default="fixed:2", help="CCS, Contextual and ad server latency")
    a = p.parse_args(argv)
    if a.what == "load":
        if not a.url:
            p.error("load: --url is required")
        with asyncio.Runner(loop_factory=new_loop) as runner:
            print(json.dumps(runner.run(load(a.url, a.first, a.viewers, a.concurrency))))
        return 0
    print(json.dumps(_standalone(a.viewers, a.latency), default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
