"""Shared test set-up: hypothesis profiles, the garbage collector.

`HYPOTHESIS_PROFILE=long` runs the fuzz targets with at least 10,000 examples each; the default
`ci` profile keeps the whole suite within a few minutes.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.helpers.fake_adserver import FakeAdServer, Running, running, sidecar_config
from tests.helpers.fakes import FakePermutive
from tests.helpers.redis import (
    RUN_PREFIX,
    SHARED_REDIS,
    RedisProcess,
    SharedRedis,
    free_cluster_port,
    free_port,
    missing,
    port_open,
    remove_keys,
)
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


@pytest.fixture
def private_redis() -> Iterator[RedisProcess]:
    """A redis-server of the test's own, on its own port, that it may stop and start."""
    r = RedisProcess(free_port())
    r.start()
    yield r
    r.stop()


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[str]:
    """Three redis-server nodes of the test's own, as one Redis Cluster."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        missing("redis-server / redis-cli are not installed")
    nodes = [RedisProcess(free_cluster_port(), "--cluster-enabled", "yes",
                          "--cluster-config-file", str(tmp_path / f"nodes-{i}.conf"))
             for i in range(3)]  # fmt: skip
    for n in nodes:
        n.start()
    try:
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in nodes),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while True:
            info = subprocess.run(
                ["redis-cli", "-p", str(nodes[0].port), "cluster", "info"],
                capture_output=True, text=True, timeout=5,
            ).stdout  # fmt: skip
            if "cluster_state:ok" in info or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        yield f"redis://127.0.0.1:{nodes[0].port}/0"
    finally:
        for n in nodes:
            n.stop()
