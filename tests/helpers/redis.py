"""Redis for the shared-state tests: 127.0.0.1:6379 on these machines, shared with others.

Each test run writes under a key prefix of its own (`cache.redis_prefix`,
`cohortkv-test-<random>`), never under the `cohortkv` keys a deployment or another run uses,
and removes what it wrote when the session ends (`conftest.py`): nothing is flushed, nothing of
anyone else's is touched. Under `CI=true` a missing Redis fails a test instead of skipping it.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from plugin.config import CacheConfig

SHARED_REDIS = "redis://127.0.0.1:6379/0"
RUN_PREFIX = f"cohortkv-test-{uuid.uuid4().hex[:12]}"
"""This test run's key prefix: unique per run, so that runs sharing the Redis never meet."""


@dataclass(frozen=True)
class SharedRedis:
    url: str
    prefix: str

    def cache(self, **settings: Any) -> CacheConfig:
        """`[cache]` pointing at this Redis under this run's prefix."""
        return CacheConfig(redis_url=self.url, redis_prefix=self.prefix, **settings)

    def env(self) -> dict[str, str]:
        """The same as `COHORTKV_*` variables, for a `cohortkv` process."""
        return {"COHORTKV_CACHE__REDIS_URL": self.url, "COHORTKV_CACHE__REDIS_PREFIX": self.prefix}

    def pattern(self) -> str:
        return f"{self.prefix}:*"


def missing(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"Redis is required under CI=true: {why}")
    pytest.skip(why)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def shared_redis_url() -> str:
    """The machine's Redis, or a failure (CI) / skip (elsewhere) saying it is missing."""
    if not port_open(6379):
        missing("no Redis on 127.0.0.1:6379")
    return SHARED_REDIS


def shared_redis() -> SharedRedis:
    return SharedRedis(shared_redis_url(), RUN_PREFIX)


def keys_of(redis: SharedRedis) -> list[str]:
    """Every key under the run's prefix (SCAN, never KEYS)."""
    import redis as redis_py

    client = redis_py.Redis.from_url(redis.url)
    try:
        return [k.decode() for k in client.scan_iter(match=redis.pattern(), count=500)]
    finally:
        client.close()


def remove_keys(redis: SharedRedis) -> int:
    """Deletes every key under the run's prefix, and only those; how many there were."""
    import redis as redis_py

    client = redis_py.Redis.from_url(redis.url)
    try:
        keys = list(client.scan_iter(match=redis.pattern(), count=500))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
        return len(keys)
    finally:
        client.close()
