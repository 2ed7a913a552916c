"""Redis for the shared-state tests: 127.0.0.1:6379 on these machines, shared with others.

Each test run writes under a key prefix of its own (`cache.redis_prefix`,
`cohortkv-test-<random>`), never under the `cohortkv` keys a deployment or another run uses,
and removes what it wrote when the session ends (`conftest.py`): nothing is flushed, nothing of
anyone else's is touched. Under `CI=true` a missing Redis fails a test instead of skipping it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
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

    def own(self) -> SharedRedis:
        """A prefix below this one for a single test (its streams, groups and leases meet no
        other test's); the run's clean-up removes it with the rest."""
        return SharedRedis(self.url, f"{self.prefix}:{uuid.uuid4().hex[:8]}")


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
        # Viewer keys end in 16 raw bytes: shown escaped, never read as text.
        keys = client.scan_iter(match=redis.pattern(), count=500)
        return [k.decode("utf-8", "backslashreplace") for k in keys]
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisProcess:
    """A private redis-server this test can stop and start again on the same port."""

    def __init__(self, port: int, *extra: str) -> None:
        self.port = port
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            missing("redis-server is not installed")
            return
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", *self.extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not port_open(self.port):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def free_cluster_port() -> int:
    """A port below 55536 whose cluster bus port (+10000) is free too."""
    import random

    for _ in range(200):
        port = random.randrange(20000, 45000)
        if not port_open(port) and not port_open(port + 10000):
            with socket.socket() as a, socket.socket() as b:
                try:
                    a.bind(("127.0.0.1", port))
                    b.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port pair for a cluster node")
