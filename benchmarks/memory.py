"""Memory per cached user: fill an Enricher's behavioral cache the way traffic does.

Each user is a device alias (`idfa`, an upper-case UUID) whose CCS answer goes through the
enricher's own path (`BehavioralSignal.call`, as `Enricher.send_batch` uses it: its cache key,
the real client's decoding with the HTTP exchange replaced by the bytes the API would send,
its own store step). Answers carry the user's own Permutive `user_id` and one of a small
pool of distinct cohort sets, as real traffic does.

Reported: RSS growth over the fill divided by users (what the machine pays, allocator slack
included), and a tracemalloc pass on a tenth of the users naming the lines that allocate.

    python -m benchmarks.memory --users 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import sys
import time
import tracemalloc
import uuid
from typing import Any

from benchmarks.library import bench_config
from benchmarks.procs import ROOT
from benchmarks.upstreams import _CCS_SETS
from plugin import Enricher
from plugin.cache.local import compact_key
from plugin.config import HttpConfig
from plugin.identity import Alias, Identity
from plugin.permutive.clients import CcsClient
from plugin.permutive.wire import CcsRequest, Event
from plugin.signals.events import now_rfc3339


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class _Replay(CcsClient):
    """The real CCS client with its HTTP exchange replaced by a canned answer."""

    payload = b""

    async def _post(self, *args: Any, **kwargs: Any) -> bytes:
        return self.payload


async def fill(users: int, seed: int, e: Enricher | None = None) -> tuple[Enricher, float]:
    """An enricher whose behavioral cache got `users` more answers, stored its own way;
    returns it and the seconds per answer stored."""
    if e is None:
        config = bench_config(
            "http://127.0.0.1:9", "http://127.0.0.1:9", behavioral_max_entries=users
        )
        e = Enricher(config)
        await e.start()
        session = e.backends._session
        assert session is not None
        # `BehavioralSignal.call` keys, decodes and stores exactly as an ad request's CCS call does.
        e.backends._ccs = _Replay(session, "http://127.0.0.1:9", "k", e.metrics, HttpConfig())
    events = [Event(name="Videoview", time=now_rfc3339(), properties={})]
    rnd = random.Random(seed)
    sets = _CCS_SETS
    weights = [1 / (k + 1) for k in range(len(sets))]
    picks = rnd.choices(range(len(sets)), weights=weights, k=min(users, 100_000))
    started = time.perf_counter()
    for i in range(users):
        device = str(uuid.UUID(int=rnd.getrandbits(128), version=4)).upper()
        uid = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
        _Replay.payload = b'{"user_id":"%s",%s}' % (uid.encode(), sets[picks[i % len(picks)]])
        identity = Identity(alias=Alias(tag="idfa", id=device))
        request = CcsRequest(events=events, alias=identity.alias)
        await e.behavioral.call(compact_key(identity.cache_key()), request)
    return e, (time.perf_counter() - started) / max(users, 1)


async def measure(users: int, traced_users: int, seed: int) -> dict[str, Any]:
    gc.collect()
    before = rss_bytes()
    e, per_answer_s = await fill(users, seed)
    gc.collect()
    after = rss_bytes()
    entries = len(e.behavioral.cache)
    # The same path once the cache is full: each answer stored now also evicts.
    probe = min(20_000, users)
    _, full_s = await fill(probe, seed + 7, e)
    out: dict[str, Any] = {
        "users": users,
        "entries": entries,
        "rss_delta_bytes": after - before,
        "bytes_per_user_rss": (after - before) / max(entries, 1),
        "us_per_answer_filling": per_answer_s * 1e6,
        "us_per_answer_full": full_s * 1e6,
    }
    await e.close()
    del e
    gc.collect()
    if traced_users:
        tracemalloc.start()
        snap0 = tracemalloc.take_snapshot()
        e2, _ = await fill(traced_users, seed + 1)
        gc.collect()
        snap1 = tracemalloc.take_snapshot()
        tracemalloc.stop()
        n = max(len(e2.behavioral.cache), 1)
        await e2.close()
        diff = snap1.compare_to(snap0, "lineno")
        total = sum(d.size_diff for d in diff)
        out["traced_users"] = traced_users
        out["bytes_per_user_traced"] = total / n
        out["by_line"] = [
            {
                "where": f"{_short(d.traceback[0].filename)}:{d.traceback[0].lineno}",
                "bytes_per_user": round(d.size_diff / n, 1),
            }
            for d in diff[:6]
            if d.size_diff > 0
        ]
    return out


def _short(path: str) -> str:
    for marker in (str(ROOT) + "/", "site-packages/"):
        at = path.find(marker)
        if at >= 0:
            return path[at + len(marker) :]
    return path.rsplit("/", 1)[-1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.memory")
    p.add_argument("--users", type=int, default=1_000_000)
    p.add_argument("--traced-users", type=int, default=None, help="default: users / 10")
    p.add_argument("--seed", type=int, default=5)
    a = p.parse_args(argv)
    traced = a.users // 10 if a.traced_users is None else a.traced_users
    result = asyncio.run(measure(a.users, traced, a.seed))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
