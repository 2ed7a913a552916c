"""Calls to Redis that never fail for want of a connection and never pay for a busy replica.

Every call takes a connection slot (at most `cache.redis_max_connections` in use; a call waits
for a free one, redis-py's pool never raises `MaxConnectionsError`), then runs under one bound,
`cache.redis_call_timeout_ms`. Only a call that fails or exceeds that bound counts against
Redis (its breaker, `cohortkv_shared_cache_errors_total`): waiting for a slot is this
replica's own queue. A caller with less time to spare
(an ad request) stops waiting without cancelling the call (`answer`, or its own wait): a
replica whose event loop is slow under load would otherwise cancel calls Redis answered in
time, count Redis as failing, open the breaker, and decide alone what the fleet decides.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from plugin.config import CacheConfig, ConfigError
from plugin.observe.metrics import Metrics, RateLimitedLog
from plugin.permutive.breaker import Breaker, State

T = TypeVar("T")


class Unavailable(Exception):
    """The call did not happen or did not end well; it is already counted and logged."""


REDIS_MISSING = (
    "config: cache.redis_url: needs the Redis client, which is not installed:"
    " pip install 'cohortkv[redis]'"
)


def make_client(url: str, *, cluster: bool, max_connections: int, timeout_s: float) -> Any:
    """A `redis.asyncio` client whose pool waits for a free connection instead of raising."""
    try:
        import redis.asyncio as redis
    except ImportError:
        raise ConfigError(REDIS_MISSING, field="cache.redis_url") from None

    common: dict[str, Any] = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
    if cluster:
        # One pool per node, each at most `max_connections`: the slots keep every node below.
        return redis.RedisCluster.from_url(url, max_connections=max_connections, **common)
    pool = redis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=timeout_s, health_check_interval=5, **common
    )
    return redis.Redis.from_pool(pool)


class RedisCalls:
    """One client's calls: connection slots, the bound, a breaker, counters, a quiet log."""

    def __init__(
        self,
        client: Any,
        metrics: Metrics,
        *,
        name: str,
        max_connections: int,
        timeout_s: float,
        log: logging.Logger,
    ) -> None:
        self.client = client
        self.timeout_s = timeout_s
        self._slots = asyncio.Semaphore(max_connections)
        self._waiting = 0
        self._max_waiting = max(1024, 16 * max_connections)
        """Calls waiting for a connection beyond which new ones are refused (`kind="pool"`):
        a Redis that cannot keep up must not collect an unbounded queue."""
        self._max_background = 4 * max_connections
        self._errors = metrics.shared_cache_errors
        self.ops = metrics.shared_cache_ops
        self.breaker = Breaker(3, 0.5, 5.0, gauge=metrics.breaker_state.labels(name))
        self._warn = RateLimitedLog(log)
        self._log = log
        self._background: set[asyncio.Task[Any]] = set()

    @classmethod
    def for_config(
        cls, cache: CacheConfig, metrics: Metrics, *, name: str, log: logging.Logger
    ) -> RedisCalls:
        """A client of `cache.redis_url` as `[cache]` says (needs the URL set)."""
        if not cache.redis_url:
            raise ValueError("cache.redis_url is not set")
        timeout_s = cache.redis_call_timeout_ms / 1000
        client = make_client(
            cache.redis_url,
            cluster=cache.redis_cluster,
            max_connections=cache.redis_max_connections,
            timeout_s=timeout_s,
        )
        return cls(
            client,
            metrics,
            name=name,
            max_connections=cache.redis_max_connections,
            timeout_s=timeout_s,
            log=log,
        )

    async def run(
        self,
        op: str,
        call: Callable[[], Awaitable[T]],
        *,
        slot_wait_s: float | None = None,
        pool_after_s: float | None = None,
    ) -> T:
        """`call()` on a connection slot, within the bound once it has one; raises
        `Unavailable` (counted) when the breaker is open, no slot comes, or the call fails.

        Waiting for a slot is this replica's own queue, not Redis failing: it never counts
        against Redis. `slot_wait_s` bounds it (the call is then not made: `late`); without
        it the call waits its turn, unless too many already wait (`kind="pool"`).
        `pool_after_s`: a wait longer than this (the request's budget) is counted as
        `kind="pool"` once, and goes on."""
        if not self.breaker.allow():
            self.ops.labels(op, "skipped").inc()
            raise Unavailable(op)
        await self._slot(op, slot_wait_s, pool_after_s)
        try:
            if self.breaker.state is State.OPEN:  # it opened while this call waited
                self.ops.labels(op, "skipped").inc()
                raise Unavailable(op)
            async with asyncio.timeout(self.timeout_s):
                got = await call()
        except Unavailable:
            raise
        except Exception as e:  # any Redis failure means "this replica goes on without it"
            self.failed(op, e)
            raise Unavailable(op) from None
        finally:
            self._slots.release()
        self.breaker.success()
        return got

    async def _slot(self, op: str, wait_s: float | None, pool_after_s: float | None) -> None:
        slots = self._slots
        if not slots.locked():
            await slots.acquire()
            return
        if wait_s is None and self._waiting >= self._max_waiting:
            self._pool(op, "too many calls already wait for a connection")
            raise Unavailable(op)
        self._waiting += 1
        try:
            first = wait_s if wait_s is not None else pool_after_s
            if first is not None:
                try:
                    async with asyncio.timeout(max(first, 0.0)):
                        await slots.acquire()
                    return
                except TimeoutError:
                    if wait_s is not None:
                        self.ops.labels(op, "late").inc()
                        raise Unavailable(op) from None
                    self._pool(op, "every connection busy past the request's budget")
            await slots.acquire()
        finally:
            self._waiting -= 1

    def _pool(self, op: str, why: str) -> None:
        self._errors.labels(op, "pool").inc()
        self._warn.warning(
            f"redis:{op}:pool",
            "shared store %s: %s (cache.redis_max_connections); it went on without the fleet",
            op,
            why,
        )

    async def answer(self, op: str, call: Callable[[], Awaitable[T]], wait_s: float) -> T:
        """`run` for a caller that waits at most `wait_s`: `Unavailable` when the call failed,
        found no connection in time (not made), or has not ended by then (counted as `late`;
        once sent, it still runs to its end)."""
        task = self.spawn(self.run(op, call, slot_wait_s=wait_s))
        if task is None:
            raise Unavailable(op)
        if not task.done():
            await asyncio.wait((task,), timeout=wait_s)
        if not task.done():
            self.ops.labels(op, "late").inc()
            raise Unavailable(op)
        if task.cancelled() or task.exception() is not None:
            raise Unavailable(op)
        return task.result()

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T] | None:
        """Runs `coro` in the background (awaited on close); None, and counted as `shed`, when
        so many are already running that Redis cannot keep up with them."""
        if len(self._background) >= self._max_background:
            coro.close()
            self.ops.labels("background", "shed").inc()
            return None
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._landed)
        return task

    def _landed(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled():
            task.exception()  # read: an `Unavailable` was counted where it was raised

    def failed(self, op: str, e: BaseException) -> None:
        self.breaker.failure()
        kind = "timeout" if isinstance(e, TimeoutError) else type(e).__name__
        self._errors.labels(op, kind).inc()
        self._warn.warning(f"redis:{op}", "shared store %s failed (%s); going on without", op, kind)

    async def close(self, wait_s: float) -> None:
        """Lets background calls end (within `wait_s`), then closes the client."""
        if self._background:
            await asyncio.wait(list(self._background), timeout=wait_s)
            for task in list(self._background):
                task.cancel()
        try:
            await self.client.aclose()
        except Exception as e:  # closing a broken connection must not fail shutdown
            self._log.debug("closing redis client: %s", type(e).__name__)
