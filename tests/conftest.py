"""Shared test set-up: hypothesis profiles, the garbage collector.

`HYPOTHESIS_PROFILE=long` runs the fuzz targets with at least 10,000 examples each; the default
`ci` profile keeps the whole suite within a few minutes.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import AsyncIterator, Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.fake_adserver import FakeAdServer, Running, running, sidecar_config
from tests.fakes import FakePermutive
from tests.helpers.redis import RUN_PREFIX, SHARED_REDIS, SharedRedis, port_open, remove_keys
from tests.helpers.redis import shared_redis as _shared_redis

settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "long", max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Every module is imported now: keep those objects out of the collector's full passes.
    Hundreds of thousands of them made one full pass take half a second mid-test, longer than
    a 300 ms enrichment budget, so a test could see its own call "miss" the budget."""
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def _root_logging_as_it_was() -> Iterator[None]:
    """A test that runs the command line in-process (`main([...])`) sets up logging the way
    the command does; the next test starts from the logging it had before."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.setLevel(level)
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)


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
def shared_redis(_redis_cleanup: None) -> SharedRedis:
    """The machine's Redis (127.0.0.1:6379) under this run's own key prefix; under CI=true
    its absence fails the test. Whatever the run wrote there is removed at its end."""
    return _shared_redis()


@pytest.fixture(scope="session")
def _redis_cleanup() -> Iterator[None]:
    yield
    if port_open(6379):
        remove_keys(SharedRedis(SHARED_REDIS, RUN_PREFIX))
