"""The Redis-shared cache against real redis-server processes.

Under `CI=true` a missing Redis fails these tests instead of skipping them.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from prometheus_client import CollectorRegistry

from plugin import Config, ConsentSignals, Content, Context, Enricher, Identity
from plugin.cache.shared import RedisStore
from plugin.config import CacheConfig
from plugin.identity import Alias
from plugin.observe.metrics import Metrics
from plugin.permutive.answer import Answer
from tests.helpers.fakes import API_KEY, FakePermutive
from tests.helpers.redis import RedisProcess, SharedRedis
from tests.helpers.samples import GAM_SAMPLE
from tests.helpers.waiting import until

ROOT = Path(__file__).resolve().parent.parent


def _enrich_in_process(fake: FakePermutive, redis: SharedRedis, alias: str) -> dict[str, object]:
    """`cohortkv enrich --json` as its own OS process: a replica of its own."""
    env = {
        **os.environ,
        "COHORTKV_API_KEY": API_KEY,
        "COHORTKV_CCS_URL": fake.url,
        "COHORTKV_CTX_URL": fake.url,
        **redis.env(),
    }
    out = subprocess.run(
        [sys.executable, "-m", "plugin", "enrich", GAM_SAMPLE, "--json", "--alias", alias,
         "--consent", "granted", "--content-url", f"https://example.com/v/{uuid.uuid4()}"],
        env=env, cwd=ROOT, capture_output=True, timeout=60,
    )  # fmt: skip
    # 4: the ad request went out, but an API failed (the tests break it on purpose)
    assert out.returncode in (0, 4), out.stderr
    result: dict[str, object] = json.loads(out.stdout)
    return result


async def test_answers_from_one_replica_serve_as_fallback_on_another(
    fake: FakePermutive, shared_redis: SharedRedis
) -> None:
    alias = f"tifa:{uuid.uuid4()}"
    first = await asyncio.to_thread(_enrich_in_process, fake, shared_redis, alias)
    assert first["behavioral"] == {
        "source": "live",
        "cohorts": ["12345", "67890"],
        "reason": "live",
    }

    fake.status["ccs"] = 503  # the second replica cannot reach the CCS API
    fake.ccs_answer = {"user_id": "x", "cohorts": [], "activations": {}}
    second = await asyncio.to_thread(_enrich_in_process, fake, shared_redis, alias)
    assert second["behavioral"] == {
        "source": "cache",
        "cohorts": ["12345", "67890"],
        "reason": "cache_fallback_error",
    }

    stranger = await asyncio.to_thread(
        _enrich_in_process, fake, shared_redis, f"tifa:{uuid.uuid4()}"
    )
    assert stranger["behavioral"] == {
        "source": "none",
        "cohorts": [],
        "reason": "cache_fallback_error",
    }


async def test_contextual_answers_are_fetched_once_per_fleet(
    fake: FakePermutive, shared_redis: SharedRedis
) -> None:
    content = Content(url=f"https://example.com/show/{uuid.uuid4()}")
    ctx = Context(consent=ConsentSignals(override=False), content=content)
    cfg = Config(
        api_key=API_KEY,
        ccs_url=fake.url,
        ctx_url=fake.url,
        cache=shared_redis.cache(),
    )
    async with Enricher(cfg) as a:
        ra = await a.enrich(GAM_SAMPLE, ctx)
    # (closing `a` waits for its fire-and-forget writes)
    async with Enricher(cfg) as b:
        rb = await b.enrich(GAM_SAMPLE, ctx)
    assert ra.contextual.source == "live"
    assert rb.contextual.cohorts == ra.contextual.cohorts
    assert fake.calls["contextual"] == 1


async def test_redis_down_mid_run_then_back(
    fake: FakePermutive, private_redis: RedisProcess
) -> None:
    registry = CollectorRegistry()
    cfg = Config(
        api_key=API_KEY,
        ccs_url=fake.url,
        ctx_url=fake.url,
        budget_ms=300,
        cache=CacheConfig(redis_url=f"redis://127.0.0.1:{private_redis.port}/0"),
    )
    who = Identity(alias=Alias(tag="tifa", id=str(uuid.uuid4())))

    def ctx(n: int) -> Context:
        return Context(
            identity=who,
            consent=ConsentSignals(override=True),
            content=Content(url=f"https://example.com/v/{n}"),
        )

    def puts_ok() -> float:
        v = registry.get_sample_value(
            "cohortkv_shared_cache_ops_total", {"op": "put", "result": "ok"}
        )
        return v or 0.0

    async with Enricher(cfg, registry=registry) as e:
        await e.enrich(GAM_SAMPLE, ctx(0))
        await until(lambda: puts_ok() >= 1, what="the answer written to Redis")

        private_redis.stop()
        fake.status["ccs"] = 503
        for n in range(1, 20):
            started = time.perf_counter()
            r = await e.enrich(GAM_SAMPLE, ctx(n))
            # a bound, not a measurement: a hung Redis would take its 0.5 s timeout or more
            assert time.perf_counter() - started < 0.3 + 0.2
            assert (r.behavioral.source, r.behavioral.cohorts) == ("cache", ["12345", "67890"])

        def errors() -> float:
            return sum(
                s.value
                for m in registry.collect()
                if m.name == "cohortkv_shared_cache_errors"
                for s in m.samples
                if s.name.endswith("_total")
            )

        await until(lambda: errors() >= 1, what="Redis failures are counted")

        private_redis.start()
        fake.status["ccs"] = 200
        before = puts_ok()
        deadline = time.monotonic() + 15
        n = 100
        while puts_ok() == before and time.monotonic() < deadline:
            n += 1
            await e.enrich(GAM_SAMPLE, ctx(n))
            await asyncio.sleep(0.1)
        assert puts_ok() > before, "the shared cache is used again once Redis is back"


async def test_corrupt_or_foreign_values_are_ignored(shared_redis: SharedRedis) -> None:
    import redis.asyncio as redis

    client = redis.Redis.from_url(shared_redis.url)
    key = str(uuid.uuid4())
    store = RedisStore(shared_redis.url, Metrics(), prefix=shared_redis.prefix)
    # a viewer's behavioral answer is a reference in the viewer's hash (field `a`)
    await client.hset(store.viewer_key(key), "a", b"\x00not a reference")
    await client.expire(store.viewer_key(key), 60)
    try:
        assert await store.get("b", key, 60) is None
        store.put("b", key, Answer(("1",), (("dfp", ("1",)),), "u"), 60)
        want = Answer(("1",), (("dfp", ("1",)),), "u")

        async def written() -> bool:
            return await store.get("b", key, 60) == want

        await until(written, what="the fire-and-forget write")
        assert await store.get("b", key, -1) is None, "older than allowed"
    finally:
        await store.close()
        await client.aclose()


async def test_works_against_a_redis_cluster(fake: FakePermutive, redis_cluster: str) -> None:
    cfg = Config(
        api_key=API_KEY,
        ccs_url=fake.url,
        ctx_url=fake.url,
        cache=CacheConfig(redis_url=redis_cluster, redis_cluster=True, redis_timeout_ms=500),
    )
    registry = CollectorRegistry()
    urls = [f"https://example.com/show/{i}/{uuid.uuid4()}" for i in range(20)]
    async with Enricher(cfg, registry=registry) as a:
        for u in urls:
            await a.enrich(
                GAM_SAMPLE, Context(consent=ConsentSignals(override=False), content=Content(url=u))
            )
    # (closing `a` waits for its writes to the cluster)
    async with Enricher(cfg) as b:
        for u in urls:
            r = await b.enrich(
                GAM_SAMPLE, Context(consent=ConsentSignals(override=False), content=Content(url=u))
            )
            assert r.contextual.cohorts == ["99999"]
    assert fake.calls["contextual"] == len(urls), "keys spread over the cluster's slots are shared"
