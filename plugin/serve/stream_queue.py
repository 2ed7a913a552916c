"""The durable player-event queue (`[events] queue = "redis"`): Redis Streams.

`/v1/events` answers 202 only once the events are in their partition's stream (all of an
offer's events or none; a stream at its bound answers 503, never drops). Every replica
consumes the partitions it holds a lease on (`plugin.serve.partitions`) through the consumer
group: new entries (XREADGROUP), delivered per user in time order by `plugin.serve.delivery`,
settled once the CCS API answered 2xx or refused them for good (XACK and XDEL). A replica that
takes a partition over first delivers what earlier holders read and left unsettled: its own
(from before it lost the partition), then others' once idle for `[events] claim_idle_s`
(XAUTOCLAIM), and only then reads new entries, so a user's events keep their order.

Delivery is at least once: an event is delivered twice only when the CCS API accepted it and
its holder stopped (crash, SIGKILL, the grace running out in mid-call) or could not reach Redis
before settling it.
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

from plugin.cache.redis_calls import RedisCalls, Unavailable, make_client
from plugin.config import Config
from plugin.identity import Identity
from plugin.observe.metrics import Metrics, RateLimitedLog
from plugin.permutive.wire import Event
from plugin.serve.delivery import BATCH, Deliveries, Ending, Item, RetryPolicy, SendBatch
from plugin.serve.metrics import ServeMetrics
from plugin.serve.partitions import Owned, Ownership
from plugin.serve.queue import Offered
from plugin.serve.streams import Entry, Streams, partition_of

log = logging.getLogger("cohortkv.serve.events")

_encode = msgspec.json.Encoder().encode
_identity = msgspec.json.Decoder(Identity).decode
_event = msgspec.json.Decoder(Event).decode
_DROP_REASON = {"rejected": "rejected", "exhausted": "exhausted", "bug": "rejected"}
_QUIET_MAX_S = 0.5
"""The longest pause between reads of a partition that had nothing new."""
_MEASURE_EVERY_S = 5.0


class _Token:
    """Where an item came from: its partition, under which holding, its entry id."""

    __slots__ = ("epoch", "id", "n")

    def __init__(self, n: int, epoch: int, entry: bytes) -> None:
        self.n = n
        self.epoch = epoch
        self.id = entry


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
        call_s = c.redis_call_timeout_ms / 1000
        client = make_client(
            c.redis_url,
            cluster=c.redis_cluster,
            max_connections=c.redis_max_connections,
            timeout_s=call_s,
        )
        self._calls = RedisCalls(
            client,
            store_metrics,
            name="redis_events",
            max_connections=c.redis_max_connections,
            timeout_s=call_s,
            log=log,
        )
        me = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._streams = Streams(self._calls, c.redis_prefix, me)
        self._partitions = e.partitions
        self._max = s.events_queue_max
        self._bound = max(1, math.ceil(self._max / e.partitions))
        self._idle_ms = int(e.claim_idle_s * 1000)
        self._own = Ownership(
            self._streams, e.partitions, e.claim_idle_s / 3, self._idle_ms, time.monotonic
        )
        self._read_ahead = max(100, 4 * s.events_workers * BATCH)
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
        self._closing = asyncio.Event()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._warn = RateLimitedLog(log)
        self._queued = metrics.events.labels("queued")
        self._claimed = metrics.events.labels("claimed")
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
                asyncio.create_task(self._reads(), name="cohortkv-events-reads"),
            ]

    async def offer(self, identity: Identity, events: Sequence[Event], key: bytes) -> Offered:
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
        owned = self._own.owned.get(n)
        if owned is not None:
            owned.next_read = 0.0
            self._wake.set()
        return "accepted"

    async def close(self, timeout_s: float) -> int:
        """Stops reading; lets batches in flight finish within `timeout_s`; gives the
        partitions up. Nothing accepted is lost: what was not delivered stays in Redis, marked
        for the next holder to take at once."""
        self._closing.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
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

    # -- leases and reads -------------------------------------------------------------------

    async def _leases(self) -> None:
        every = self._own.lease_s / 3
        measure_at = 0.0
        while True:
            try:
                if await self._own.tick():
                    self._wake.set()
                await self._settle_unsent()
                if time.monotonic() >= measure_at:
                    measure_at = time.monotonic() + _MEASURE_EVERY_S
                    await self._measure()
            except Unavailable:
                pass  # counted; leases not renewed in time stop their deliveries
            except Exception as e:
                self._bug("leases", e)
            await asyncio.sleep(every)

    async def _reads(self) -> None:
        while True:
            self._wake.clear()
            soonest = time.monotonic() + _QUIET_MAX_S
            for owned in list(self._own.owned.values()):
                now = time.monotonic()
                if owned.draining or self._deliveries.depth >= self._read_ahead:
                    continue
                if now < owned.next_read:
                    soonest = min(soonest, owned.next_read)
                    continue
                try:
                    got = await (self._read(owned) if owned.reading else self._take_over(owned))
                except Unavailable:
                    got = False
                except Exception as e:
                    self._bug("reads", e)
                    got = False
                if got:
                    owned.next_read = 0.0
                    soonest = now
                else:
                    owned.next_read = now + min(_QUIET_MAX_S, 0.05 * 2 ** min(owned.quiet, 8))
                    owned.quiet += 1
                    soonest = min(soonest, owned.next_read)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, soonest - time.monotonic()))

    async def _read(self, owned: Owned) -> bool:
        """New entries; True when there were some (read again at once)."""
        room = max(1, min(100, self._read_ahead - self._deliveries.depth))
        entries = await self._streams.read(owned.n, room)
        if entries is None:
            owned.valid_until = 0.0  # not ours any more: deliver nothing more of it
            return False
        self._feed(owned, entries)
        if entries:
            owned.quiet = 0
        return bool(entries)

    async def _take_over(self, owned: Owned) -> bool:
        """What earlier holders left, before anything new: this consumer's own entries from
        an earlier holding, then other consumers' once idle for `claim_idle_s`. True once
        done (new entries may be read)."""
        n, after, rereads = owned.n, b"0", owned.rereads
        while batch := await self._streams.read(n, 500, after=after):
            self._feed(owned, batch)
            after = batch[-1][0]
            if len(batch) < 500:
                break
        if batch is None:
            owned.valid_until = 0.0
            return False
        if await self._streams.foreign(n):
            self._claimed.inc(self._feed(owned, await self._streams.take_over(n, self._idle_ms)))
            if await self._streams.foreign(n):
                return False  # not idle long enough yet: their holder may still be sending
        # Events let go of meanwhile (their lease was not confirmed in time) are read again.
        owned.reading = owned.rereads == rereads
        return owned.reading

    def _feed(self, owned: Owned, entries: list[Entry]) -> int:
        users: dict[bytes, tuple[Identity, list[tuple[Event, object]]]] = {}
        settle: list[bytes] = []
        unsent = self._unsent.get(owned.n, ())
        for entry, fields in entries:
            if entry in owned.unsettled or entry in unsent:
                continue
            if not fields:  # deleted meanwhile: nothing to deliver
                settle.append(entry)
                continue
            u = fields.get(b"u", b"")
            try:
                found = users.get(u)
                identity = found[0] if found is not None else _identity(u)
                event = _event(fields.get(b"e", b""))
            except (msgspec.DecodeError, msgspec.ValidationError):
                self._drop(1, "corrupt")
                self._warn.warning("events:corrupt", "an event in Redis does not decode: dropped")
                settle.append(entry)
                continue
            owned.unsettled.add(entry)
            users.setdefault(u, (identity, []))[1].append(
                (event, _Token(owned.n, owned.epoch, entry))
            )
        for u, (identity, items) in users.items():
            self._deliveries.push(u, identity, items)
        if settle:
            self._settle(owned.n, settle)
        return sum(len(items) for _, items in users.values())

    # -- settling ---------------------------------------------------------------------------

    def _keep(self, item: Item) -> bool:
        """Deliver only while the partition is held: else the events stay for its holder."""
        token: _Token = item.token
        if self._own.valid(token.n, token.epoch) is not None:
            return True
        owned = self._own.owned.get(token.n)
        if owned is not None and owned.epoch == token.epoch:
            # Still held, its lease just not confirmed in time: read its entries again later.
            self._reread(owned, token.id)
        return False

    @staticmethod
    def _reread(owned: Owned, entry: bytes) -> None:
        owned.unsettled.discard(entry)
        owned.rereads += 1
        owned.reading = False

    def _settled(self, batch: Sequence[Item], ending: Ending, error: str) -> None:
        by_partition: dict[int, list[bytes]] = {}
        for item in batch:
            token: _Token = item.token
            owned = self._own.owned.get(token.n)
            if owned is not None and owned.epoch == token.epoch:
                if ending == "stopped":
                    self._reread(owned, token.id)  # read again from Redis before anything new
                else:
                    owned.unsettled.discard(token.id)
            by_partition.setdefault(token.n, []).append(token.id)
        if ending == "stopped":
            return  # not settled: it stays pending in Redis
        if ending != "sent":
            self._drop(len(batch), _DROP_REASON[ending])
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

    def _drop(self, n: int, reason: str) -> None:
        self._dropped.inc(n)
        self._drop_reason.labels(reason).inc(n)

    def _bug(self, where: str, e: Exception) -> None:
        self._warn.warning(f"events:{where}", "event queue %s failed: %s", where, type(e).__name__)
        log.debug("event queue %s failed", where, exc_info=e)
