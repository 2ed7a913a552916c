"""Closed-loop HTTP load generator: `concurrency` clients, each sending its next request as soon
as the previous one is answered, for a warm-up then a measured window. Runs in its own process
(aiohttp client, uvloop when installed) and prints one JSON line:
`{"rps", "count", "errors", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "statuses"}`.

Only requests both sent and answered inside the measured window count. `added_p50_ms` is the
p50 of each answer's time minus the time the ad server emulator says it held that request
(`X-Emulated-Delay-Ms`, passed back through the proxies): what the system in front added.

    python -m benchmarks.loadgen --base http://127.0.0.1:8080/proxy/gam --concurrency 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from typing import Any

import aiohttp
from yarl import URL

from benchmarks.stats import summarize
from benchmarks.upstreams import DELAY_HEADER, new_loop
from benchmarks.workload import Workload


async def run_load(
    urls: list[str],
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    timeout_s: float,
    headers: dict[str, str] | None = None,
    mark_ms: float | None = None,
    stagger_s: float = 0.0,
) -> dict[str, Any]:
    targets = [URL(u, encoded=True) for u in urls]
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0, ttl_dns_cache=None)
    session = aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=timeout_s),
        headers=headers,
    )
    latencies: list[float] = []
    added: list[float] = []
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    perf = time.perf_counter
    start = perf()
    measure_from = start + warmup_s
    end = measure_from + duration_s
    position = 0

    async def client(n: int) -> None:
        nonlocal position
        # Clients start spread over `stagger_s`, as independent viewers do: started all at
        # once, they would stay in lockstep (every wave timing out in the same millisecond).
        if stagger_s:
            await asyncio.sleep(stagger_s * n / concurrency)
        while True:
            sent = perf()
            if sent >= end:
                return
            target = targets[position % len(targets)]
            position += 1
            status = "error"
            held = None
            try:
                async with session.get(target, allow_redirects=False) as resp:
                    await resp.read()
                    status = str(resp.status)
                    held = resp.headers.get(DELAY_HEADER)
            except (aiohttp.ClientError, TimeoutError) as e:
                status = "error"
                if sent >= measure_from:
                    errors[type(e).__name__] += 1
            done = perf()
            if sent >= measure_from and done <= end:
                statuses[status] += 1
                if status == "200":
                    latencies.append(done - sent)
                    if held is not None:
                        added.append(done - sent - float(held) / 1000)

    try:
        await asyncio.gather(*(client(n) for n in range(concurrency)))
    finally:
        await session.close()
    result = summarize(latencies)
    if added:
        over = summarize(added)
        result["added_p50_ms"] = over["p50_ms"]
        result["added_p99_ms"] = over["p99_ms"]
    result["cpu_s"] = time.process_time()
    if mark_ms is not None:
        result["at_mark"] = sum(1 for x in latencies if x * 1000 >= mark_ms)
    ok = len(latencies)
    result.update(
        rps=ok / duration_s,
        count=ok,
        errors=sum(errors.values()) + sum(n for s, n in statuses.items() if s != "200"),
        error_kinds=dict(errors),
        statuses=dict(statuses),
        concurrency=concurrency,
        sent=position,
    )
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.loadgen")
    p.add_argument("--base", required=True, help="http://host:port[/proxy/gam]")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds sent before measuring")
    p.add_argument("--timeout", type=float, default=10.0, help="per request, seconds")
    p.add_argument("--pool", type=int, default=60_000, help="distinct ad requests, cycled")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--consented", type=float, default=1.0)
    p.add_argument("--header", action="append", default=[], metavar="NAME:VALUE")
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    p.add_argument("--mark-ms", type=float, help="also count answers at least this slow")
    p.add_argument("--stagger-ms", type=float, default=100.0, help="spread of client starts")
    a = p.parse_args(argv)
    headers = dict(h.split(":", 1) for h in a.header) or None
    urls = Workload(consented=a.consented, seed=a.seed).ad_requests(a.base, a.pool)
    with asyncio.Runner(loop_factory=lambda: new_loop(a.loop)) as runner:
        result = runner.run(
            run_load(
                urls,
                a.concurrency,
                a.duration,
                a.warmup,
                a.timeout,
                headers,
                a.mark_ms,
                a.stagger_ms / 1000,
            )
        )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
