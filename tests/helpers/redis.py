"""Redis for the shared-state tests: 127.0.0.1:6379 on these machines.

Under `CI=true` a missing Redis fails a test instead of skipping it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

SHARED_REDIS = "redis://127.0.0.1:6379/0"


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
