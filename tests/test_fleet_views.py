"""One play event per view across two replicas that share one Redis: under load, when Redis
goes down after a view moved between them, when it restarts empty, and when every connection
is busy. The replicas are two enrichers (each with its own Redis client and local state) in
this test's event loop, which makes that loop as busy as a loaded replica's."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from prometheus_client import CollectorRegistry

from plugin import Config, ConsentSignals, Content, Context, Enricher, EnrichResult, Identity
from plugin.identity import Alias
from plugin.permutive.wire import Event
from plugin.signals.tracker import EventIds
from tests.helpers.fakes import API_KEY, FakePermutive
from tests.helpers.redis import RedisProcess, SharedRedis
from tests.helpers.samples import GAM_SAMPLE
from tests.helpers.times import recent
from tests.helpers.waiting import until


class Viewer:
    """One viewer watching one piece of content: every ad break is an ad request for it."""

    def __init__(self) -> None:
        self.name = str(uuid.uuid4())
        self.identity = Identity(alias=Alias(tag="tifa", id=self.name))
        self.content = Content(url=f"https://example.com/v/{uuid.uuid4()}")

    def context(self) -> Context:
        return Context(
            identity=self.identity, consent=ConsentSignals(override=True), content=self.content
        )

    async def ad_break(self, replica: Enricher) -> EnrichResult:
        return await replica.enrich(GAM_SAMPLE, self.context())


@asynccontextmanager
async def replicas(
    fake: FakePermutive, redis: SharedRedis | RedisProcess, n: int = 2, **cache: Any
) -> AsyncIterator[list[Enricher]]:
    """`n` replicas on one Redis: the shared one under a key prefix of this test's own, or a
    private one."""
    where = redis.own() if isinstance(redis, SharedRedis) else SharedRedis(redis.url, "cohortkv")
    cfg = Config(api_key=API_KEY, ccs_url=fake.url, ctx_url=fake.url, cache=where.cache(**cache))
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(Enricher(cfg, registry=CollectorRegistry()))
            for _ in range(n)
        ]


def play_events(fake: FakePermutive) -> Counter[str]:
    """Play events the CCS API received, by the alias of the viewer they were for."""
    return Counter(call["body"]["alias"]["id"] for call in fake.bodies["ccs"])


def view_ids(fake: FakePermutive) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for call in fake.bodies["ccs"]:
        out.setdefault(call["body"]["alias"]["id"], set()).update(
            ev["view_id"] for ev in call["body"]["events"]
        )
    return out


def duplicated(fake: FakePermutive, viewers: Sequence[Viewer]) -> list[str]:
    counts = play_events(fake)
    return [v.name for v in viewers if counts[v.name] > 1]


def errors(e: Enricher, kind: str) -> float:
    return sum(
        s.value
        for m in e.metrics.registry.collect()
        if m.name == "cohortkv_shared_cache_errors"
        for s in m.samples
        if s.name.endswith("_total") and s.labels.get("kind") == kind
    )


async def test_concurrency_256_with_redis_healthy_sends_one_play_event_per_view(
    fake: FakePermutive, shared_redis: SharedRedis
) -> None:
    viewers = [Viewer() for _ in range(320)]
    gate = asyncio.Semaphore(256)
    async with replicas(fake, shared_redis) as (a, b):

        async def watch(v: Viewer) -> None:
            for replica in (a, b, a, b):  # four ad breaks, alternating replicas
                async with gate:
                    await v.ad_break(replica)

        await asyncio.gather(*(watch(v) for v in viewers))
        # A claim that came back after its request went on sends its play event then.
        await until(lambda: len(play_events(fake)) == len(viewers), what="one per viewer")
        await asyncio.sleep(0.2)  # (anything still owed would be sent by now: nothing is)
        assert duplicated(fake, viewers) == []
        assert all(len(ids) == 1 for ids in view_ids(fake).values())
        for replica in (a, b):
            assert errors(replica, "MaxConnectionsError") == 0
            assert errors(replica, "timeout") == 0


async def test_breaks_on_a_then_b_then_redis_down_send_no_second_play_event(
    fake: FakePermutive, private_redis: RedisProcess
) -> None:
    viewers = [Viewer() for _ in range(100)]
    async with replicas(fake, private_redis) as (a, b):
        for v in viewers:
            first = await v.ad_break(a)
            second = await v.ad_break(b)
            assert first.behavioral.reason == "live"
            assert second.behavioral.reason == "view_reuse"
        assert play_events(fake) == Counter({v.name: 1 for v in viewers})

        private_redis.stop()
        for v in viewers:
            third = await v.ad_break(b)  # B learned the view through Redis: it remembers it
            fourth = await v.ad_break(a)
            assert third.behavioral.reason == fourth.behavioral.reason == "view_reuse"
        assert duplicated(fake, viewers) == []

        # A new view of the same viewer still sends its play event, on either replica.
        fresh = viewers[0]
        fresh.content = Content(url=f"https://example.com/v/{uuid.uuid4()}")
        assert (await fresh.ad_break(b)).behavioral.reason == "live"
        assert play_events(fake)[fresh.name] == 2


async def test_redis_restarted_empty_sends_no_second_play_event_for_known_views(
    fake: FakePermutive, private_redis: RedisProcess
) -> None:
    viewers = [Viewer() for _ in range(60)]
    async with replicas(fake, private_redis, redis_call_timeout_ms=500) as (a, b):
        for v in viewers:
            await v.ad_break(a)
            await v.ad_break(b)

        private_redis.stop()
        private_redis.start()  # empty: no persistence on this one

        async def redis_in_use(e: Enricher) -> bool:
            assert e.backends.shared is not None
            await e.backends.shared.get("probe", "x", 1)
            return (
                e.metrics.registry.get_sample_value("cohortkv_breaker_state", {"api": "redis"}) == 0
            )

        for replica in (a, b):
            await until(lambda r=replica: redis_in_use(r), what="the replica uses Redis again")  # type: ignore[misc]
        for v in viewers:
            third = await v.ad_break(a)  # known to A: written back, not claimed as new
            fourth = await v.ad_break(b)
            assert third.behavioral.reason == fourth.behavioral.reason == "view_reuse"
        assert duplicated(fake, viewers) == []

    # A third replica, that never saw these views, learns them from Redis again.
    async with Enricher(a.config) as c:
        for v in viewers:
            assert (await v.ad_break(c)).behavioral.reason == "view_reuse"
    assert duplicated(fake, viewers) == []
    assert sum(play_events(fake).values()) == len(viewers)


async def test_a_claim_without_a_free_connection_waits_only_its_budget_and_sends_once(
    fake: FakePermutive, private_redis: RedisProcess
) -> None:
    import redis.asyncio as redis

    viewers = [Viewer() for _ in range(20)]
    admin = redis.Redis.from_url(private_redis.url)
    try:
        async with replicas(fake, private_redis, redis_max_connections=1) as (a, b):
            for v in viewers[:10]:  # these views are known to A already
                await v.ad_break(a)
            await admin.execute_command("CLIENT", "PAUSE", "1500", "WRITE")
            results = await asyncio.gather(*(v.ad_break(r) for v in viewers for r in (a, b)))
            # Every request went on at the end of its budget, without the fleet's answer.
            assert all(r.url for r in results)
            await until(lambda: errors(a, "pool") + errors(b, "pool") > 0, what="counted")
            assert {r.behavioral.reason for r in results} <= {
                "cache_fallback_timeout",
                "view_reuse",
            }
            # Once Redis answers, the claims decide: one play event per view, all told.
            await until(
                lambda: len(play_events(fake)) == len(viewers), what="every view's play event"
            )
            await asyncio.sleep(0.2)
            assert duplicated(fake, viewers) == []
    finally:
        await admin.aclose()


async def test_a_host_play_event_waits_for_a_slow_fleet_and_opens_its_view_once(
    fake: FakePermutive, private_redis: RedisProcess
) -> None:
    """A host play event has no ad request's budget to keep: while Redis is slow to answer it
    waits for the fleet's word on its view rather than take this replica's guess (which says
    "not new" and would leave the event out as a duplicate)."""
    import redis.asyncio as redis

    viewer = Viewer()
    play = Event(name="Videoview", time=recent(), properties={"video_id": "v1"})
    admin = redis.Redis.from_url(private_redis.url)
    try:
        async with replicas(fake, private_redis) as (a, b):
            await admin.execute_command("CLIENT", "PAUSE", "300", "WRITE")
            sent = await a.track(
                [play],
                identity=viewer.identity,
                consent=True,
                ids=EventIds(content_url=viewer.content.url),
            )
            assert sent == 1 and play_events(fake)[viewer.name] == 1
            opened = a.metrics.registry.get_sample_value(
                "cohortkv_host_play_events_total", {"outcome": "opened"}
            )
            assert opened == 1
            # The view is open fleet-wide: its ad break on the other replica sends none.
            assert (await viewer.ad_break(b)).behavioral.reason == "view_reuse"
            assert play_events(fake)[viewer.name] == 1
    finally:
        await admin.aclose()


async def test_a_play_event_due_again_goes_out_once_the_slow_fleet_answers(
    fake: FakePermutive, private_redis: RedisProcess
) -> None:
    """A view whose play event failed in a way that may have landed is owed one more try
    (docs/signals.md). A break whose claim Redis is slow to answer goes on without it, and the
    claim's answer, when it comes, sends that one try (same view), not a second."""
    import redis.asyncio as redis

    viewer = Viewer()
    fake.replies["ccs"] = [500]
    admin = redis.Redis.from_url(private_redis.url)
    try:
        async with replicas(fake, private_redis) as (a, _):
            await viewer.ad_break(a)
            await until(lambda: fake.calls["ccs"] == 1, what="the play event failed")
            await admin.execute_command("CLIENT", "PAUSE", "1000", "WRITE")
            late = await viewer.ad_break(a)
            assert late.behavioral.reason == "cache_fallback_timeout"
            await until(lambda: fake.calls["ccs"] == 2, what="sent again once Redis answered")
            assert (await viewer.ad_break(a)).behavioral.reason == "view_reuse"
            assert fake.calls["ccs"] == 2
            assert len(view_ids(fake)[viewer.name]) == 1
    finally:
        await admin.aclose()
