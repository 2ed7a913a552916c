"""Closed-loop HTTP load generator: `concurrency` clients, each sending its next request as soon
as the previous one is answered, for a warm-up then a measured window. Runs in its own process
(aiohttp client, uvloop when installed) and prints one JSON line:
`{"rps", "count", "errors", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "statuses"}`.

Only requests both sent and answered inside the measured window count. `added_p50_ms` (and
`added_p99_ms`, `added_p999_ms`) is the p50 of each answer's time minus the time the ad server
emulator says it held that request (`X-Emulated-Delay-Ms`, passed back through the proxies):
what the system in front added. With `--mix realistic` the same figures come per group of
requests too (`groups`: returning or new viewers, first breaks; see `GROUPS`), and
`--phase history` sends the mix's history (earlier views) once, unmeasured, and exits.

    python -m benchmarks.loadgen --base http://127.0.0.1:8080/proxy/gam --concurrency 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiohttp
from yarl import URL

from benchmarks.stats import summarize
from benchmarks.upstreams import DELAY_HEADER, new_loop
from benchmarks.workload import Workload

GROUPS: dict[str, Callable[[str], bool]] = {
    "returning": lambda lb: lb[0] == "R",
    "new": lambda lb: lb[0] == "N",
    "first_break": lambda lb: lb[2:] == "0",
    "returning_first_break": lambda lb: lb[0] == "R" and lb[2:] == "0",
    "later_breaks": lambda lb: lb[2:] not in ("", "0"),
}
"""Groups of the realistic mix's requests by label (`benchmarks.workload.label`)."""


async def send_all(urls: list[str], concurrency: int, timeout_s: float) -> dict[str, Any]:
    """Every URL once, `concurrency` at a time, unmeasured: a history to be remembered."""
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0, ttl_dns_cache=None)
    session = aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=timeout_s),
    )
    targets = iter([URL(u, encoded=True) for u in urls])
    errors = 0
    started = time.perf_counter()

    async def client() -> None:
        nonlocal errors
        for target in targets:
            try:
                async with session.get(target, allow_redirects=False) as resp:
                    await resp.read()
                    errors += resp.status != 200
            except (aiohttp.ClientError, TimeoutError):
                errors += 1

    try:
        await asyncio.gather(*(client() for _ in range(concurrency)))
    finally:
        await session.close()
    return {"sent": len(urls), "errors": errors, "wall_s": time.perf_counter() - started}


def _grouped(samples: list[tuple[str, float, float | None]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, member in GROUPS.items():
        chosen = [s for s in samples if member(s[0])]
        if not chosen:
            continue
        doc = summarize([s[1] for s in chosen])
        over = [s[2] for s in chosen if s[2] is not None]
        if over:
            o = summarize(over)
            doc.update(
                added_p50_ms=o["p50_ms"], added_p99_ms=o["p99_ms"], added_p999_ms=o["p999_ms"]
            )
        out[name] = doc
    return out


class _Tally:
    """What the measured window saw: only requests both sent and answered inside it count."""

    def __init__(self, labels: list[str] | None, mark_ms: float | None) -> None:
        self.labels = labels
        self.mark_ms = mark_ms
        self.latencies: list[float] = []
        self.added: list[float] = []
        self.grouped: list[tuple[str, float, float | None]] = []
        self.statuses: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()

    def answered(self, at: int, status: str, took: float, held: str | None) -> None:
        self.statuses[status] += 1
        if status != "200":
            return
        self.latencies.append(took)
        over = None
        if held is not None:
            over = took - float(held) / 1000
            self.added.append(over)
        if self.labels is not None:
            self.grouped.append((self.labels[at], took, over))

    def result(self, duration_s: float) -> dict[str, Any]:
        result = summarize(self.latencies)
        if self.added:
            over = summarize(self.added)
            result["added_p50_ms"] = over["p50_ms"]
            result["added_p99_ms"] = over["p99_ms"]
            result["added_p999_ms"] = over["p999_ms"]
        if self.labels is not None:
            result["groups"] = _grouped(self.grouped)
        result["cpu_s"] = time.process_time()
        if self.mark_ms is not None:
            result["at_mark"] = sum(1 for x in self.latencies if x * 1000 >= self.mark_ms)
        ok = len(self.latencies)
        failed = sum(n for s, n in self.statuses.items() if s != "200")
        result.update(
            rps=ok / duration_s,
            count=ok,
            errors=sum(self.errors.values()) + failed,
            error_kinds=dict(self.errors),
            statuses=dict(self.statuses),
        )
        return result


async def run_load(
    urls: list[str],
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    timeout_s: float,
    headers: dict[str, str] | None = None,
    mark_ms: float | None = None,
    stagger_s: float = 0.0,
    labels: list[str] | None = None,
) -> dict[str, Any]:
    targets = [URL(u, encoded=True) for u in urls]
    tally = _Tally(labels, mark_ms)
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0, ttl_dns_cache=None)
    session = aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=timeout_s),
        headers=headers,
    )
    perf = time.perf_counter
    measure_from = perf() + warmup_s
    end = measure_from + duration_s
    position = 0

    async def client(n: int) -> None:
        nonlocal position
        # Clients start spread over `stagger_s`, as independent viewers do: started all at
        # once, they would stay in lockstep (every wave timing out in the same millisecond).
        if stagger_s:
            await asyncio.sleep(stagger_s * n / concurrency)
        while (sent := perf()) < end:
            at = position % len(targets)
            position += 1
            status = "error"
            held = None
            try:
                async with session.get(targets[at], allow_redirects=False) as resp:
                    await resp.read()
                    status = str(resp.status)
                    held = resp.headers.get(DELAY_HEADER)
            except (aiohttp.ClientError, TimeoutError) as e:
                if sent >= measure_from:
                    tally.errors[type(e).__name__] += 1
            done = perf()
            if sent >= measure_from and done <= end:
                tally.answered(at, status, done - sent, held)

    try:
        await asyncio.gather(*(client(n) for n in range(concurrency)))
    finally:
        await session.close()
    return {**tally.result(duration_s), "concurrency": concurrency, "sent": position}


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
    p.add_argument(
        "--mix",
        choices=("worst", "realistic"),
        default="worst",
        help="worst: every request a new viewer's first break; realistic: see workload.Mix",
    )
    p.add_argument(
        "--phase",
        choices=("load", "history"),
        default="load",
        help="history: send the realistic mix's earlier views once, unmeasured, and exit",
    )
    p.add_argument(
        "--history-upto",
        type=int,
        help="realistic mix: history only for the requests before this position",
    )
    a = p.parse_args(argv)
    headers = dict(h.split(":", 1) for h in a.header) or None
    workload = Workload(consented=a.consented, seed=a.seed)
    labels: list[str] | None = None
    if a.mix == "realistic":
        pairs, history = workload.realistic(a.base, a.pool, history_upto=a.history_upto)
        urls = [u for u, _ in pairs]
        labels = [lb for _, lb in pairs]
    else:
        urls, history = workload.ad_requests(a.base, a.pool), []
    with asyncio.Runner(loop_factory=lambda: new_loop(a.loop)) as runner:
        if a.phase == "history":
            result = runner.run(send_all(history, a.concurrency, a.timeout))
        else:
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
                    labels,
                )
            )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
