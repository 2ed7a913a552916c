"""Scenario 8: two sidecars on one Redis, as a fleet runs them.

- Views across replicas: viewers of 4 ad breaks, each break on the other replica than the one
  before, `concurrency` viewers' breaks in flight at once. Every viewer is new and watches
  one piece of content of its own, so the CCS API must receive exactly one play event per
  viewer; the CCS emulator counts the viewers it heard from more than once.
- The Redis event queue: `/v1/events` requests (5 events each, users spread over both
  replicas) against a CCS API answering in a fixed 25 ms; events accepted per second (202s,
  each only once the events are in Redis), and delivered per second until the CCS API had
  them all.

A redis-server of the run's own is started on a free port (none installed: the rows say so).
The load comes from this module run as a child process:

    python -m benchmarks.fleet views --a URL --b URL --viewers N --concurrency C
    python -m benchmarks.fleet events --a URL --b URL --requests N --concurrency C
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import shutil
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp

from benchmarks.procs import Child, py, run_json
from benchmarks.rows import Row, verdict
from benchmarks.upstreams import new_loop
from benchmarks.workload import GAM_QUERY

CONCURRENCY = 256
EVENTS_PER_REQUEST = 5
CCS_FIXED = "fixed:25"


# -- the load (child process) ----------------------------------------------------------------


def view_url(base: str, viewer: int, brk: int, device: str) -> str:
    content = quote(f"https://video.example.com/fleet/{device}", safe="")
    return (
        f"{base}/proxy/gam/gampad/ads?{GAM_QUERY}&correlator={viewer * 10 + brk}"
        f"&description_url={content}&rdid={device}&idtype=idfa&is_lat=0&gdpr=0"
    )


async def _session(concurrency: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=2 * concurrency, limit_per_host=0, ttl_dns_cache=None)
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=10),
    )


async def views(a: str, b: str, viewers: int, concurrency: int) -> dict[str, Any]:
    """Each viewer's 4 breaks in turn, alternating replicas; `concurrency` viewers at once."""
    session = await _session(concurrency)
    devices = iter(range(viewers))
    errors = requests = 0
    started = time.perf_counter()

    async def viewer() -> None:
        nonlocal errors, requests
        for n in devices:
            device = str(uuid.UUID(int=n + 1, version=4)).upper()
            for brk, base in enumerate((a, b, a, b)):
                try:
                    async with session.get(view_url(base, n, brk, device)) as resp:
                        await resp.read()
                        errors += resp.status != 200
                except (aiohttp.ClientError, TimeoutError):
                    errors += 1
                requests += 1

    try:
        await asyncio.gather(*(viewer() for _ in range(concurrency)))
    finally:
        await session.close()
    wall = time.perf_counter() - started
    return {"viewers": viewers, "requests": requests, "errors": errors, "wall_s": wall}


async def events(a: str, b: str, requests: int, concurrency: int) -> dict[str, Any]:
    """`requests` POSTs of 5 events each (100 users, in turns on both replicas)."""
    session = await _session(concurrency)
    now = datetime.now(UTC) - timedelta(minutes=10)
    counter = itertools.count()
    statuses: dict[int, int] = {}
    accepted = 0
    started = time.perf_counter()

    async def client() -> None:
        nonlocal accepted
        while (i := next(counter)) < requests:
            body = {
                "identity": {"alias": {"tag": "bench", "id": f"user-{i % 100}"}},
                "consent": {"granted": True},
                "events": [
                    {
                        "name": "VideoCompletion",
                        "time": (now + timedelta(milliseconds=i * 10 + k)).isoformat(),
                        "properties": {"percentage_watched": 0.5},
                    }
                    for k in range(EVENTS_PER_REQUEST)
                ],
            }
            try:
                async with session.post(f"{(a, b)[i % 2]}/v1/events", json=body) as resp:
                    doc = await resp.json() if resp.status == 202 else {}
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
                    accepted += int(doc.get("accepted", 0))
            except (aiohttp.ClientError, TimeoutError):
                statuses[0] = statuses.get(0, 0) + 1

    try:
        await asyncio.gather(*(client() for _ in range(concurrency)))
    finally:
        await session.close()
    wall = time.perf_counter() - started
    return {"accepted": accepted, "statuses": statuses, "wall_s": wall}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.fleet")
    p.add_argument("what", choices=("views", "events"))
    p.add_argument("--a", required=True)
    p.add_argument("--b", required=True)
    p.add_argument("--viewers", type=int, default=3000)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=CONCURRENCY)
    a = p.parse_args(argv)
    run = (
        views(a.a, a.b, a.viewers, a.concurrency)
        if a.what == "views"
        else events(a.a, a.b, a.requests, a.concurrency)
    )
    with asyncio.Runner(loop_factory=new_loop) as runner:
        print(json.dumps(runner.run(run)))
    return 0


# -- the scenario (in the orchestrator) ------------------------------------------------------


class RedisServer:
    """A redis-server of this run's own, on a free port."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        self.proc: subprocess.Popen[bytes] | None = None
        if binary is None:
            return
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()

    @property
    def url(self) -> str | None:
        return f"redis://127.0.0.1:{self.port}/0" if self.proc is not None else None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def _config(redis_url: str, queue: str) -> str:
    return (
        f'[cache]\nredis_url = "{redis_url}"\nredis_prefix = "bench-{uuid.uuid4().hex[:8]}"\n'
        f'[events]\nqueue = "{queue}"\n'
    )


class Plan(Protocol):
    @property
    def fleet_viewers(self) -> int: ...
    @property
    def fleet_event_requests(self) -> int: ...


class Bench(Protocol):
    """What scenario 8 uses of the benchmark run (`benchmarks.scenarios.Bench`)."""

    @property
    def plan(self) -> Plan: ...
    @property
    def rows(self) -> list[Row]: ...
    @property
    def data(self) -> dict[str, Any]: ...
    def log(self, line: str) -> None: ...
    def sidecar(self, *, extra: str = "", serve: str = "") -> Child: ...
    def set_upstream(self, role: str, **control: Any) -> None: ...
    def restore_upstreams(self) -> None: ...
    def reset_stats(self) -> None: ...
    def stats(self) -> dict[str, dict[str, Any]]: ...


def run(bench: Bench) -> None:
    redis = RedisServer()
    url = redis.url
    try:
        if url is None:
            bench.rows.append(_skipped("duplicate play events"))
            bench.rows.append(_skipped("redis event queue"))
            return
        _views(bench, url)
        _events(bench, url)
    finally:
        redis.stop()


def _skipped(what: str) -> Row:
    return Row("8", f"two replicas on one Redis: {what}", "not run: no redis-server installed")


def _views(bench: Bench, redis_url: str) -> None:
    viewers = bench.plan.fleet_viewers
    extra = _config(redis_url, "memory")
    a, b = bench.sidecar(extra=extra), bench.sidecar(extra=extra)
    bench.reset_stats()
    bench.log(f"  two replicas: {viewers} viewers of 4 breaks at concurrency {CONCURRENCY}")
    argv = py("benchmarks.fleet", "views", "--a", a.url, "--b", b.url)
    argv += ["--viewers", str(viewers), "--concurrency", str(CONCURRENCY)]
    load = run_json(argv, timeout_s=600)
    time.sleep(1.0)  # claims answered after their requests went on send their play events now
    ccs = bench.stats()["ccs"]
    a.stop()
    b.stop()
    repeated = int(ccs.get("repeat_identities", 0))
    heard = int(ccs.get("identities", 0))
    bench.data["s8_views"] = {**load, "ccs": ccs}
    bench.rows.append(
        Row(
            "8",
            f"two replicas on one Redis, c={CONCURRENCY}: viewers of 4 breaks (alternating "
            f"replicas) with a duplicate play event ({heard} of {viewers} viewers' play events "
            f"received, {load['errors']} ad requests failed)",
            f"{repeated} of {viewers}",
            "0",
            verdict(repeated == 0),
        )
    )


def _events(bench: Bench, redis_url: str) -> None:
    requests = bench.plan.fleet_event_requests
    extra = _config(redis_url, "redis")
    serve = f"events_queue_max = {10 * requests * EVENTS_PER_REQUEST}\n"  # measure, not refuse
    bench.set_upstream("ccs", latency=CCS_FIXED)
    a = bench.sidecar(extra=extra, serve=serve)
    b = bench.sidecar(extra=extra, serve=serve)
    bench.reset_stats()
    bench.log(f"  redis event queue: {requests} requests of {EVENTS_PER_REQUEST} events")
    started = time.monotonic()
    argv = py("benchmarks.fleet", "events", "--a", a.url, "--b", b.url)
    argv += ["--requests", str(requests), "--concurrency", str(CONCURRENCY)]
    load = run_json(argv, timeout_s=600)
    accepted = int(load["accepted"])
    deadline = time.monotonic() + 120
    delivered = 0
    while time.monotonic() < deadline:
        delivered = int(bench.stats()["ccs"].get("ccs_events", 0))
        if delivered >= accepted:
            break
        time.sleep(0.05)
    took = time.monotonic() - started
    a.stop()
    b.stop()
    bench.restore_upstreams()
    bench.data["s8_events"] = {**load, "delivered": delivered, "delivered_s": took}
    bench.rows.append(
        Row(
            "8",
            f"redis event queue, two replicas, CCS API {CCS_FIXED[6:]} ms, c={CONCURRENCY}: "
            f"events/s accepted (202, in Redis) / delivered ({delivered} of {accepted})",
            f"{accepted / load['wall_s']:.0f} / {delivered / took:.0f}",
        )
    )


if __name__ == "__main__":
    sys.exit(main())
