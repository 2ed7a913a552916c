"""Redis for the shared-state tests: 127.0.0.1:6379 on these machines.

Under `CI=true` a missing Redis fails a test instead of skipping it.
"""

from __future__ import annotations

import os
import socket

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
