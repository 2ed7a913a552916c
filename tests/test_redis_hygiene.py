"""The suite leaves no trace in the shared Redis: it writes under its own run's prefix, never
under the `cohortkv` keys a deployment (or another run) uses, and removes what it wrote."""

from __future__ import annotations

import uuid

import redis

from plugin import ConsentSignals, Content, Context, Enricher
from plugin.config import Config
from plugin.signals.content_properties import ContentDescription
from plugin.signals.contextual import contextual_key
from tests.helpers.fakes import API_KEY, FakePermutive
from tests.helpers.redis import RUN_PREFIX, SharedRedis, keys_of, remove_keys
from tests.helpers.samples import GAM_SAMPLE


async def test_a_run_writes_only_under_its_own_prefix_and_removes_it(
    fake: FakePermutive, shared_redis: SharedRedis
) -> None:
    assert shared_redis.prefix == RUN_PREFIX and RUN_PREFIX.startswith("cohortkv-test-")
    # A prefix of this test's own, so that removing it takes nothing the rest of the run wrote.
    mine = SharedRedis(shared_redis.url, f"{RUN_PREFIX}-{uuid.uuid4().hex[:8]}")
    url = f"https://example.com/hygiene/{uuid.uuid4()}"
    cfg = Config(api_key=API_KEY, ccs_url=fake.url, ctx_url=fake.url, cache=mine.cache())
    async with Enricher(cfg) as e:  # closing waits for the fire-and-forget writes
        await e.enrich(GAM_SAMPLE, Context(consent=ConsentSignals(override=False),
                                           content=Content(url=url)))  # fmt: skip
    hashed = contextual_key(
        ContentDescription(url, {}, section="video").contextual_request()
    ).hex()  # GAM: the `video` section
    assert keys_of(mine) == [f"{mine.prefix}:c:{hashed}"]
    client = redis.Redis.from_url(shared_redis.url)
    try:
        assert client.exists(f"cohortkv:c:{hashed}") == 0, "a deployment's keyspace was written"
        assert remove_keys(mine) == 1
        assert keys_of(mine) == []
    finally:
        client.close()


def test_the_default_prefix_is_the_deployments() -> None:
    assert Config().cache.redis_prefix == "cohortkv"
