"""The durable player-event queue (`[events] queue = "redis"`): Redis Streams.

`/v1/events` answers 202 only once the events are in their partition's stream (all of an
offer's events or none; a stream at its bound answers 503, never drops). Every replica
consumes the partitions it holds a lease on (`plugin.serve.partitions`) through the consumer
group: new entries (XREADGROUP), delivered per user in time order by `plugin.serve.delivery`,
settled (XACK and XDEL) once the CCS API answered 2xx or refused them for good, or once a batch
that may have reached it was counted `uncertain` and is not sent again (`[events] retry =
"safe"`, the default; `"always"` sends it again). A replica that takes a partition over first
delivers what earlier holders read and left unsettled: its own (from before it lost the
partition), then others' once idle for `[events] claim_idle_s` (XAUTOCLAIM), and only then
reads new entries, so a user's events keep their order.

Delivery is at least once: an event is delivered twice only when the CCS API accepted it and
its holder stopped (crash, SIGKILL, the grace running out in mid-call) or could not reach Redis
before settling it (and, with `[events] retry = "always"`, when a batch that may have landed
is sent again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Sequence

import msgspec

from plugin.cache.redis_calls import RedisCalls, Unavailable
from plugin.config import Config
from plugin.observe.metrics import Metrics, RateLimitedLog
from plugin.serve.delivery import (
    BATCH,
    DROP_REASON,
    Deliveries,
    Ending,
    Item,
    RetryPolicy,
    SendBatch,
    stop_tasks,
)
from plugin.serve.metrics import ServeMetrics
from plugin.serve.partitions import Ownership
from plugin.serve.queue import Offered, user_key
from plugin.serve.stream_reader import StreamReader, Token, reread
from plugin.serve.streams import Streams, partition_of
from plugin.tracking import Prepared

log = logging.getLogger("cohortkv.serve.events")

_encode = msgspec.json.Encoder().encode
_MEASURE_EVERY_S = 5.0


class RedisQueue:
    def __init__(
        self,
        send: SendBatch,
        metrics: ServeMetrics,
        store_metrics: Metrics,
        config: Config,
        *,
        policy: RetryPolicy,
        consumer: str | None = None,
    ) -> None:
        c, e, s = config.cache, config.events, config.serve
        if not c.redis_url:
            raise ValueError("the redis event queue needs cache.redis_url (check_config)")
        self._calls = RedisCalls.for_config(c, store_metrics, name="redis_events", log=log)
        me = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._streams = Streams(self._calls, c.redis_prefix, me)
        self._partitions = e.partitions
        self._max = s.events_queue_max
        self._bound = max(1, math.ceil(self._max / e.partitions))
        self._idle_ms = int(e.claim_idle_s * 1000)
        self._own = Ownership(
            self._streams, e.partitions, e.claim_idle_s / 3, self._idle_ms, time.monotonic
        )
        self._deliveries = Deliveries(
            send,
            metrics,
            policy,
            workers=s.events_workers,
            settled=self._settled,
            pause=self._pause,
            keep=self._keep,
        )
        self._unsent: dict[int, set[bytes]] = {}
        """Settled entries whose XACK has not reached Redis yet, by partition: retried."""
        self._reader = StreamReader(
            self._streams,
            self._own,
            self._deliveries,
            read_ahead=max(100, 4 * s.events_workers * BATCH),
            idle_ms=self._idle_ms,
            claimed=metrics.events.labels("claimed").inc,
            settle=self._settle,
            unsent=lambda n: self._unsent.get(n, ()),
            corrupt=self._corrupt,
        )
        self._closing = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._warn = RateLimitedLog(log)
        self._queued = metrics.events.labels("queued")
        self._dropped = metrics.events.labels("dropped")
        self._drop_reason = metrics.events_dropped
        self._length = metrics.stream_length
        self._pending = metrics.stream_pending

    @property
    def max(self) -> int:
        return self._max

    @property
    def depth(self) -> int:
        """Events this replica read and has not settled yet (the streams hold the rest)."""
        return self._deliveries.depth

    def start(self) -> None:
        if not self._tasks:
            self._deliveries.start()
            self._tasks = [
                asyncio.create_task(self._leases(), name="cohortkv-events-leases"),
                asyncio.create_task(self._reader.run(), name="cohortkv-events-reads"),
            ]

    async def offer(self, prepared: Prepared) -> Offered:
        """All of the batch's events go into the user's partition's stream, or none; read
        back, each is a `Prepared` part again (`plugin.serve.stream_reader`)."""
        key = user_key(prepared)
        events = prepared.events
        n = partition_of(key, self._partitions)
        try:
            added = await self._streams.add(n, key, [_encode(e) for e in events], self._bound)
        except Unavailable:
            self._drop(len(events), "unavailable")
            return "unavailable"
        if not added:
            self._drop(len(events), "queue_full")
            return "full"
        self._queued.inc(len(events))
        self._reader.wake(n)
        return "accepted"

    async def close(self, timeout_s: float) -> int:
        """Stops reading; lets batches in flight finish within `timeout_s`; gives the
        partitions up. Nothing accepted is lost: what was not delivered stays in Redis, marked
        for the next holder to take at once."""
        self._closing.set()
        self._reader.stop()
        await stop_tasks(self._tasks)
        left = len(self._deliveries.clear())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._deliveries.idle.wait(), max(0.0, timeout_s))
        left += self._deliveries.depth
        await self._deliveries.stop()
        await self._settle_unsent()
        await self._own.leave_all()
        if left:
            log.warning(
                "shutdown: %d accepted events not delivered yet stay in Redis for another"
                " replica (or this one's next start)",
                left,
            )
        await self._calls.close(1.0)
        return 0

    # -- leases ------------------------------------------------------------------------------

    async def _leases(self) -> None:
        every = self._own.lease_s / 3
        measure_at = 0.0
        while not self._closing.is_set():
            try:
                if await self._own.tick():
                    self._reader.wake()
                await self._settle_unsent()
                if time.monotonic() >= measure_at:
                    measure_at = time.monotonic() + _MEASURE_EVERY_S
                    await self._measure()
            except Unavailable:
                pass  # counted; leases not renewed in time stop their deliveries
            except Exception as e:
                self._bug("leases", e)
            await asyncio.sleep(every)

    # -- settling ---------------------------------------------------------------------------

    def _keep(self, item: Item) -> bool:
        """Deliver only while the partition is held: else the events stay for its holder."""
        token: Token = item.token
        if self._own.valid(token.n, token.epoch) is not None:
            return True
        owned = self._own.owned.get(token.n)
        if owned is not None and owned.epoch == token.epoch:
            # Still held, its lease just not confirmed in time: read its entries again later.
            reread(owned, token.id)
        return False

    def _settled(self, batch: Sequence[Item], ending: Ending, error: str) -> None:
        by_partition: dict[int, list[bytes]] = {}
        for item in batch:
            token: Token = item.token
            owned = self._own.owned.get(token.n)
            if owned is not None and owned.epoch == token.epoch:
                if ending == "stopped":
                    reread(owned, token.id)  # read again from Redis before anything new
                else:
                    owned.unsettled.discard(token.id)
            by_partition.setdefault(token.n, []).append(token.id)
        if ending == "stopped":
            return  # not settled: it stays pending in Redis
        if ending in DROP_REASON:
            self._drop(len(batch), DROP_REASON[ending])
        for n, ids in by_partition.items():
            self._settle(n, ids)

    def _settle(self, n: int, ids: list[bytes]) -> None:
        self._unsent.setdefault(n, set()).update(ids)
        self._calls.spawn(self._send_settle(n, ids))

    async def _send_settle(self, n: int, ids: list[bytes]) -> None:
        await self._streams.settle(n, ids)
        unsent = self._unsent.get(n)
        if unsent is not None:
            unsent.difference_update(ids)
            if not unsent:
                del self._unsent[n]

    async def _settle_unsent(self) -> None:
        for n, ids in list(self._unsent.items()):
            if not ids:
                continue
            with contextlib.suppress(Unavailable):
                await self._send_settle(n, list(ids))

    async def _pause(self, delay: float, batch: Sequence[Item]) -> bool:
        """Before a retry; False (the batch stays in Redis) when closing or when the
        partition is no longer held."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), delay)
            return False
        return all(self._keep(item) for item in batch)

    async def _measure(self) -> None:
        length = pending = 0
        for n in range(self._partitions):
            waiting, read = await self._streams.sizes(n)
            length += waiting
            pending += read
        self._length.set(length)
        self._pending.set(pending)

    def _corrupt(self) -> None:
        self._drop(1, "corrupt")
        self._warn.warning("events:corrupt", "an event in Redis does not decode: dropped")

    def _drop(self, n: int, reason: str) -> None:
        self._dropped.inc(n)
        self._drop_reason.labels(reason).inc(n)

    def _bug(self, where: str, e: Exception) -> None:
        self._warn.warning(f"events:{where}", "event queue %s failed: %s", where, type(e).__name__)
        log.debug("event queue %s failed", where, exc_info=e)
