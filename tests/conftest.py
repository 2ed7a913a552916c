"""Shared test set-up: hypothesis profiles.

`HYPOTHESIS_PROFILE=long` runs the fuzz targets with at least 10,000 examples each; the default
`ci` profile keeps the whole suite within a few minutes.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.fake_adserver import FakeAdServer, Running, running, sidecar_config
from tests.fakes import FakePermutive
from tests.helpers.redis import RedisProcess, free_port, shared_redis_url

settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "long", max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# Local stand-ins shared by the test modules: the Permutive APIs, an ad server, the sidecar.


@pytest.fixture
async def fake() -> AsyncIterator[FakePermutive]:
    async with FakePermutive() as f:
        yield f


@pytest.fixture
async def ads() -> AsyncIterator[FakeAdServer]:
    async with FakeAdServer() as a:
        yield a


@pytest.fixture
async def side(fake: FakePermutive, ads: FakeAdServer) -> AsyncIterator[Running]:
    async with running(sidecar_config(fake, ads)) as r:
        yield r


@pytest.fixture
def shared_redis() -> str:
    """The machine's Redis (127.0.0.1:6379); under CI=true its absence fails the test."""
    return shared_redis_url()


@pytest.fixture
def private_redis() -> Iterator[RedisProcess]:
    """A redis-server of the test's own, on its own port, that it may stop and start."""
    r = RedisProcess(free_port())
    r.start()
    yield r
    r.stop()
