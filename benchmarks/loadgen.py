"""Closed-loop HTTP load generator: `concurrency` clients, each sending its next request as soon
as the previous one is answered, for a warm-up then a measured window. Runs in its own process
(uvloop when installed) and prints one JSON line:
`{"rps", "count", "errors", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "statuses"}`.

Like the emulated upstreams, it must cost as little CPU as possible on the two cores it shares
with the system under test: each client owns one keep-alive connection, a bare asyncio
protocol that writes a prebuilt request and reads a Content-Length answer (about a tenth of
what an aiohttp client call costs; with aiohttp the load generator used as much CPU per request
as the passthrough proxy it measured). A connection that closes is opened again.

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
from urllib.parse import urlsplit

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


class _Conn(asyncio.Protocol):
    """One client's keep-alive connection: one request at a time, a Content-Length answer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buf += data
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None:
            return
        head = buf[:end]
        at = head.lower().find(b"\r\ncontent-length:")
        length = 0
        if at >= 0:
            stop = head.find(b"\r\n", at + 2)
            length = int(head[at + 17 : stop if stop >= 0 else len(head)])
        if len(buf) < end + 4 + length:
            return
        self.buf = buf[end + 4 + length :]
        waiter, self.waiter = self.waiter, None
        if not waiter.done():
            waiter.set_result((int(head[9:12]), head))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionResetError("closed"))


class _Client:
    """One closed-loop client: `get` sends a prebuilt request, (re)connecting as needed."""

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.conn: _Conn | None = None

    async def get(self, request: bytes) -> tuple[int, bytes]:
        loop = asyncio.get_running_loop()
        conn = self.conn
        if conn is None or conn.transport is None:
            _, conn = await loop.create_connection(_Conn, self.host, self.port)
            self.conn = conn
        assert conn.transport is not None
        conn.waiter = loop.create_future()
        conn.transport.write(request)
        try:
            async with asyncio.timeout(self.timeout_s):
                return await conn.waiter
        except BaseException:
            if conn.transport is not None:
                conn.transport.abort()
            self.conn = None
            raise

    def close(self) -> None:
        if self.conn is not None and self.conn.transport is not None:
            self.conn.transport.close()


def _requests(urls: list[str], headers: dict[str, str] | None) -> tuple[str, int, list[bytes]]:
    """Host, port and every request's bytes, built once before the clock starts."""
    first = urlsplit(urls[0])
    host, port = first.hostname or "127.0.0.1", first.port or 80
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    out = []
    for u in urls:
        parts = urlsplit(u)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        out.append(f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n{extra}\r\n".encode())
    return host, port, out


def _delay(head: bytes) -> str | None:
    """The `X-Emulated-Delay-Ms` the ad server put on its answer, passed back by the proxies."""
    at = head.lower().find(_DELAY)
    if at < 0:
        return None
    start = at + len(_DELAY)
    end = head.find(b"\r\n", start)
    return head[start : end if end >= 0 else len(head)].strip().decode()


_DELAY = f"\r\n{DELAY_HEADER.lower()}:".encode()
_ERRORS = (OSError, TimeoutError, ValueError)


async def send_all(urls: list[str], concurrency: int, timeout_s: float) -> dict[str, Any]:
    """Every URL once, `concurrency` at a time, unmeasured: a history to be remembered."""
    host, port, requests = _requests(urls, None) if urls else ("", 0, [])
    targets = iter(requests)
    errors = 0
    started = time.perf_counter()

    async def client() -> None:
        nonlocal errors
        c = _Client(host, port, timeout_s)
        for request in targets:
            try:
                status, _ = await c.get(request)
                errors += status != 200
            except _ERRORS:
                errors += 1
        c.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
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
    host, port, targets = _requests(urls, headers)
    tally = _Tally(labels, mark_ms)
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
        c = _Client(host, port, timeout_s)
        while (sent := perf()) < end:
            at = position % len(targets)
            position += 1
            status = "error"
            held = None
            try:
                code, head = await c.get(targets[at])
                status = str(code)
                held = _delay(head)
            except _ERRORS as e:
                if sent >= measure_from:
                    tally.errors[type(e).__name__] += 1
            done = perf()
            if sent >= measure_from and done <= end:
                tally.answered(at, status, done - sent, held)
        c.close()

    await asyncio.gather(*(client(n) for n in range(concurrency)))
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
