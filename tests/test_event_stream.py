"""The durable event queue (`[events] queue = "redis"`) against real Redis: 202 only once the
events are in a stream, delivery in order per user across replicas, a bound that refuses and
never trims, a graceful hand-over, and a replica killed with SIGKILL whose accepted events a
second replica delivers, each once. Each test uses a key prefix of its own."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as redis

from plugin.config import (
    Config,
    ConfigError,
    EventsConfig,
    HttpConfig,
    ServeConfig,
    config_from_dict,
)
from tests.helpers.cli import serve_process
from tests.helpers.fake_adserver import Running, running
from tests.helpers.fakes import API_KEY, FakePermutive
from tests.helpers.redis import RedisProcess, SharedRedis
from tests.helpers.times import recent
from tests.helpers.waiting import until

GRANTED = {"granted": True}


def config(
    fake: FakePermutive, redis: SharedRedis, *, cluster: bool = False, **events: Any
) -> Config:
    """A sidecar with the Redis event queue on `redis` (a prefix of the test's own)."""
    serve = {k: events.pop(k) for k in list(events) if k.startswith("events_")}
    return Config(
        api_key=API_KEY,
        ccs_url=fake.url,
        ctx_url=fake.url,
        cache=redis.cache(redis_cluster=cluster),
        http=HttpConfig(request_timeout_s=0.5),
        events=EventsConfig(queue="redis", **{"claim_idle_s": 1.0, **events}),
        serve=ServeConfig(**{"events_backoff_ms": 20, "events_backoff_max_ms": 200, **serve}),
    )


def body(user: str, *seqs: int) -> dict[str, Any]:
    """Events of `user`, numbered: event `seq` happened `seq` seconds into the hour."""
    return {
        "identity": {"alias": {"tag": "t", "id": user}},
        "consent": GRANTED,
        "events": [
            {"name": "VideoCompletion", "time": recent(0, s), "properties": {"seq": s}}
            for s in seqs
        ],
    }


async def post(r: Running, doc: dict[str, Any]) -> tuple[int, Any]:
    resp = await r.client.post("/v1/events", json=doc)
    return resp.status, await resp.json()


def delivered(fake: FakePermutive) -> dict[str, list[int]]:
    """Per user, the events the CCS API accepted (2xx), in the order it received them."""
    out: dict[str, list[int]] = {}
    for call in fake.bodies["ccs"]:
        if call["status"] == 200:
            events = call["body"]["events"]
            assert 1 <= len(events) <= 10
            out.setdefault(call["body"]["alias"]["id"], []).extend(
                e["properties"]["seq"] for e in events
            )
    return out


@asynccontextmanager
async def replicas(*configs: Config) -> AsyncIterator[list[Running]]:
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(running(c)) for c in configs]


def test_the_redis_queue_needs_redis_and_a_claim_idle_above_the_call_timeout() -> None:
    with pytest.raises(ConfigError) as e:
        config_from_dict({"events": {"queue": "redis"}})
    assert e.value.field == "events.queue" and "cache.redis_url" in str(e.value)
    with pytest.raises(ConfigError) as e:
        config_from_dict(
            {
                "cache": {"redis_url": "redis://127.0.0.1:6379/0"},
                "events": {"queue": "redis", "claim_idle_s": 5},
                "http": {"request_timeout_s": 5},
            }
        )
    assert e.value.field == "events.claim_idle_s"


async def test_events_are_in_redis_when_accepted_and_delivered_in_order(
    fake: FakePermutive, shared_redis: SharedRedis
) -> None:
    own = shared_redis.own()
    async with replicas(config(fake, own, partitions=4)) as (side,):
        status, doc = await post(side, body("u1", *range(25, 0, -1)))
        assert (status, doc["accepted"]) == (202, 25)
        await until(lambda: side.sample("cohortkv_events_total", state="sent") == 25)
        assert delivered(fake) == {"u1": list(range(1, 26))}
        sizes = [len(c["body"]["events"]) for c in fake.bodies["ccs"]]
        assert sizes == [10, 10, 5]
        assert side.sample("cohortkv_events_total", state="queued") == 25
    client = redis.Redis.from_url(own.url)
    try:
        lengths = [await client.xlen(f"{own.prefix}:{{ev-{n}}}:stream") for n in range(4)]
        assert lengths == [0, 0, 0, 0], "settled entries leave the stream"
    finally:
        await client.aclose()


async def test_a_full_stream_refuses_and_trims_nothing(
    fake: FakePermutive, shared_redis: SharedRedis
) -> None:
    fake.status["ccs"] = 503  # nothing leaves the stream
    cfg = config(fake, shared_redis.own(), partitions=1, events_queue_max=12)
    async with replicas(cfg) as (side,):
        assert (await post(side, body("u1", 1, 2, 3, 4, 5)))[0] == 202
        assert (await post(side, body("u2", 6, 7, 8, 9, 10)))[0] == 202
        status, doc = await post(side, body("u3", 11, 12, 13))
        assert status == 503 and doc["error"] == "event queue full"
        assert side.sample("cohortkv_events_dropped_total", reason="queue_full") == 3
        fake.status["ccs"] = 200
        await until(lambda: side.sample("cohortkv_events_total", state="sent") == 10)
        assert delivered(fake) == {"u1": [1, 2, 3, 4, 5], "u2": [6, 7, 8, 9, 10]}


async def stream_lengths(own: SharedRedis, partitions: int) -> list[int]:
    client = redis.Redis.from_url(own.url)
    try:
        return [await client.xlen(f"{own.prefix}:{{ev-{n}}}:stream") for n in range(partitions)]
    finally:
        await client.aclose()


@pytest.mark.parametrize("retry", ["safe", "always"])
async def test_a_batch_that_may_have_landed_is_settled_not_sent_again_unless_retry_always(
    fake: FakePermutive, shared_redis: SharedRedis, retry: str
) -> None:
    """The retry rule holds for the Redis queue as for the memory one: a 500 may have been
    processed, so by default the batch is counted uncertain and settled (it leaves the stream,
    no replica sends it again); with `retry = "always"` it is sent again."""
    own = shared_redis.own()
    fake.replies["ccs"] = [500]
    async with replicas(config(fake, own, partitions=1, retry=retry)) as (side,):
        assert (await post(side, body("u1", 1, 2)))[0] == 202

        async def settled() -> bool:
            return await stream_lengths(own, 1) == [0]

        if retry == "safe":
            await until(lambda: side.sample("cohortkv_events_total", state="uncertain") == 2)
            await until(settled, what="the uncertain batch is acknowledged")
            assert fake.calls["ccs"] == 1 and delivered(fake) == {}
            assert side.sample("cohortkv_events_total", state="sent") == 0
        else:
            await until(lambda: delivered(fake) == {"u1": [1, 2]}, what="sent again")
            await until(settled)
            assert fake.calls["ccs"] == 2
            assert side.sample("cohortkv_events_total", state="uncertain") == 0
        assert side.sample("cohortkv_events_dropped_total", reason="exhausted") == 0


async def test_redis_down_answers_503_and_accepts_nothing(
    fake: FakePermutive, private_redis: RedisProcess
) -> None:
    own = SharedRedis(private_redis.url, "cohortkv")
    async with replicas(config(fake, own)) as (side,):
        private_redis.stop()
        status, doc = await post(side, body("u1", 1))
        assert status == 503 and doc["error"] == "event queue unavailable"
        assert side.sample("cohortkv_events_dropped_total", reason="unavailable") == 1
        assert side.sample("cohortkv_events_total", state="queued") == 0


async def test_two_replicas_share_the_partitions_and_keep_each_users_order(
    fake: FakePermutive, shared_redis: SharedRedis
) -> None:
    cfg = config(fake, shared_redis.own(), partitions=8)
    async with replicas(cfg, cfg) as (a, b):
        owned = [x.sidecar.queue._own.owned for x in (a, b)]  # type: ignore[attr-defined]
        await until(lambda: [len(o) for o in owned] == [4, 4], what="a fair share each")
        users = [f"user-{i}" for i in range(40)]
        for round_ in range(3):  # each user's events arrive on both replicas, in turns
            await asyncio.gather(
                *(
                    post((a, b)[(i + round_) % 2], body(u, *range(round_ * 5, round_ * 5 + 5)))
                    for i, u in enumerate(users)
                )
            )
        want = {u: list(range(15)) for u in users}
        await until(lambda: delivered(fake) == want, what="every event, once, in order")

        def sent() -> list[float]:  # counted once the CCS API's answer is back
            return [x.sample("cohortkv_events_total", state="sent") for x in (a, b)]

        await until(lambda: sum(sent()) == 15 * len(users), what="counted as sent")
        assert min(sent()) > 0, "both replicas delivered"


async def test_a_replica_that_stops_hands_its_events_over_at_once(
    fake: FakePermutive, shared_redis: SharedRedis
) -> None:
    own = shared_redis.own()
    fake.status["ccs"] = 503
    # Taking events over from a replica that just vanished waits claim_idle_s (a minute
    # here); one that stopped cleanly marked its events as free to take at once.
    slow = config(fake, own, partitions=2, claim_idle_s=60.0)
    async with replicas(slow) as (a,):
        assert (await post(a, body("u1", 1, 2, 3)))[0] == 202
        await until(lambda: fake.calls["ccs"] >= 2, what="read, tried and failed")
    assert delivered(fake) == {}
    fake.status["ccs"] = 200
    async with replicas(slow) as (b,):
        await until(lambda: delivered(fake) == {"u1": [1, 2, 3]}, what="taken over")
        assert b.sample("cohortkv_events_total", state="claimed") == 3


async def test_works_against_a_redis_cluster(fake: FakePermutive, redis_cluster: str) -> None:
    cfg = config(fake, SharedRedis(redis_cluster, "cohortkv"), cluster=True, partitions=6)
    async with replicas(cfg) as (side,):
        for i in range(12):
            assert (await post(side, body(f"u{i}", i, i + 100)))[0] == 202
        want = {f"u{i}": [i, i + 100] for i in range(12)}
        await until(lambda: delivered(fake) == want, timeout_s=20, what="all delivered")


# -- a replica killed with SIGKILL ------------------------------------------------------------


async def test_events_accepted_by_a_killed_replica_are_delivered_once_in_order(
    fake: FakePermutive, shared_redis: SharedRedis, tmp_path: Path
) -> None:
    own = shared_redis.own()
    cfg = tmp_path / "cohortkv.toml"
    cfg.write_text(
        f'api_key = "{API_KEY}"\nccs_url = "{fake.url}"\nctx_url = "{fake.url}"\n'
        f'[cache]\nredis_url = "{own.url}"\nredis_prefix = "{own.prefix}"\n'
        "[http]\nrequest_timeout_s = 0.5\n"
        '[events]\nqueue = "redis"\nclaim_idle_s = 1.0\npartitions = 4\n'
        '[serve]\nhost = "127.0.0.1"\nport = 0\nevents_backoff_ms = 50\n'
    )
    fake.status["ccs"] = 503
    users = [f"viewer-{i}" for i in range(12)]
    first, port = await serve_process(cfg)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:

            async def accept(user: str, seqs: range) -> int:
                async with session.post(f"{url}/v1/events", json=body(user, *seqs)) as resp:
                    assert resp.status == 202, await resp.text()
                    return int((await resp.json())["accepted"])

            accepted = 0
            for n in range(3):  # three requests per user, events out of order within each
                got = await asyncio.gather(
                    *(accept(u, range(n * 12 + 11, n * 12 - 1, -1)) for u in users)
                )
                accepted += sum(got)
        await until(lambda: fake.calls["ccs"] >= 4, what="the replica read events and tried")
    finally:
        first.send_signal(signal.SIGKILL)
        await first.wait()
    assert accepted == 36 * len(users) and delivered(fake) == {}

    fake.status["ccs"] = 200
    second, port = await serve_process(cfg)
    url = f"http://127.0.0.1:{port}"
    try:
        want = {u: list(range(36)) for u in users}
        await until(lambda: delivered(fake) == want, timeout_s=30, what="all, once, in order")
        async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as resp:
            metrics = await resp.text()
        claimed = re.search(r'^cohortkv_events_total\{state="claimed"\} (\S+)$', metrics, re.M)
        assert claimed is not None and float(claimed.group(1)) > 0, "taken over from the dead"
    finally:
        second.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(second.wait(), 30) == 0
    assert json.dumps(fake.bodies).count(API_KEY) == 0
