"""A cache shared by replicas (Redis), behind each replica's in-process cache.

Answers one replica fetched serve as fallback on every other, and a contextual answer is
fetched once per fleet rather than once per replica. Redis is a helper, never a dependency of
the ad request: every operation has a short timeout, failures are counted, a breaker stops
paying the timeout while Redis is down, and redis-py reconnects by itself when it is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

import msgspec

from plugin.breaker import Breaker
from plugin.cache import Answer
from plugin.metrics import Metrics, RateLimitedLog

log = logging.getLogger("cohortkv.shared")


class _Stored(msgspec.Struct, array_like=True, gc=False):
    answer: Answer
    stored_at: float
    """Wall-clock seconds: ages must agree across processes."""


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(_Stored).decode


class SharedStore(Protocol):
    """What the enricher needs from a shared cache. `get` returns None on any failure."""

    async def get(self, namespace: str, key: str, max_age_s: float) -> Answer | None: ...

    def put(self, namespace: str, key: str, answer: Answer, ttl_s: float) -> None: ...

    async def close(self) -> None: ...


class RedisStore:
    """`redis.asyncio` client (or cluster client) with a timeout and a breaker on every call.

    Keys are `cohortkv:{namespace}:{key}`; values are msgpack `[answer, stored_at]` with the
    cache TTL as Redis expiry. Writes are fire-and-forget so they never hold up a request.
    """

    def __init__(
        self,
        url: str,
        metrics: Metrics,
        *,
        timeout_s: float = 0.05,
        cluster: bool = False,
        prefix: str = "cohortkv",
    ) -> None:
        import redis.asyncio as redis

        common: dict[str, Any] = {
            "socket_timeout": timeout_s,
            "socket_connect_timeout": timeout_s,
        }
        self._client: Any = (
            redis.RedisCluster.from_url(url, **common)
            if cluster
            else redis.Redis.from_url(url, health_check_interval=5, **common)
        )
        self._timeout = timeout_s
        self._prefix = prefix
        self._errors = metrics.shared_cache_errors
        self._ops = metrics.shared_cache_ops
        self._breaker = Breaker(3, 0.5, 5.0, gauge=metrics.breaker_state.labels("redis"))
        self._warn = RateLimitedLog(log)
        self._writes: set[asyncio.Task[None]] = set()

    async def get(self, namespace: str, key: str, max_age_s: float) -> Answer | None:
        if not self._breaker.allow():
            self._ops.labels("get", "skipped").inc()
            return None
        try:
            raw = await asyncio.wait_for(
                self._client.get(f"{self._prefix}:{namespace}:{key}"), self._timeout
            )
        except Exception as e:  # any Redis failure means "not shared this time"
            self._failed("get", e)
            return None
        self._breaker.success()
        if raw is None:
            self._ops.labels("get", "miss").inc()
            return None
        try:
            stored = _decode(raw)
        except (msgspec.DecodeError, TypeError, ValueError):
            self._ops.labels("get", "corrupt").inc()
            return None
        if time.time() - stored.stored_at > max_age_s:
            self._ops.labels("get", "stale").inc()
            return None
        self._ops.labels("get", "hit").inc()
        return stored.answer

    def put(self, namespace: str, key: str, answer: Answer, ttl_s: float) -> None:
        if not self._breaker.allow():
            self._ops.labels("put", "skipped").inc()
            return
        task = asyncio.ensure_future(self._put(namespace, key, answer, ttl_s))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _put(self, namespace: str, key: str, answer: Answer, ttl_s: float) -> None:
        value = _encode(_Stored(answer, time.time()))
        try:
            await asyncio.wait_for(
                self._client.set(f"{self._prefix}:{namespace}:{key}", value, ex=max(1, int(ttl_s))),
                self._timeout,
            )
        except Exception as e:
            self._failed("put", e)
            return
        self._breaker.success()
        self._ops.labels("put", "ok").inc()

    def _failed(self, op: str, e: Exception) -> None:
        self._breaker.failure()
        kind = "timeout" if isinstance(e, TimeoutError) else type(e).__name__
        self._errors.labels(op, kind).inc()
        self._warn.warning(
            f"redis:{op}", "shared cache %s failed (%s); using local cache", op, kind
        )

    async def close(self) -> None:
        if self._writes:
            await asyncio.wait(list(self._writes), timeout=self._timeout * 2)
        try:
            await self._client.aclose()
        except Exception as e:  # closing a broken connection must not fail shutdown
            log.debug("closing redis client: %s", type(e).__name__)
