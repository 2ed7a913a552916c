"""Reading the event partitions this replica holds into its deliveries (the Redis queue).

A partition is read only by its lease's holder (`plugin.serve.streams`): new entries once it
has taken over what earlier holders left (its own unsettled entries, then others' once idle
for `claim_idle_s`). Reads pause while the deliveries hold `read_ahead` events, and back off
on a quiet partition (up to half a second; an offer to a partition held here wakes it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection

import msgspec

from plugin.cache.redis_calls import Unavailable
from plugin.identity import Identity
from plugin.observe.metrics import RateLimitedLog
from plugin.permutive.wire import Event
from plugin.serve.delivery import Deliveries
from plugin.serve.partitions import Owned, Ownership
from plugin.serve.streams import Entry, Streams
from plugin.tracking import Prepared

log = logging.getLogger("cohortkv.serve.events")

_identity = msgspec.json.Decoder(Identity).decode
_event = msgspec.json.Decoder(Event).decode
_QUIET_MAX_S = 0.5
"""The longest pause between reads of a partition that had nothing new."""


class Token:
    """Where a delivery item came from: its partition, under which holding, its entry id."""

    __slots__ = ("epoch", "id", "n")

    def __init__(self, n: int, epoch: int, entry: bytes) -> None:
        self.n = n
        self.epoch = epoch
        self.id = entry


def reread(owned: Owned, entry: bytes) -> None:
    """An entry read from `owned` and let go of: it is read again from Redis before anything
    new of the partition."""
    owned.unsettled.discard(entry)
    owned.rereads += 1
    owned.reading = False


class StreamReader:
    def __init__(
        self,
        streams: Streams,
        own: Ownership,
        deliveries: Deliveries,
        *,
        read_ahead: int,
        idle_ms: int,
        claimed: Callable[[int], None],
        settle: Callable[[int, list[bytes]], None],
        unsent: Callable[[int], Collection[bytes]],
        corrupt: Callable[[], None],
    ) -> None:
        self._streams = streams
        self._own = own
        self._deliveries = deliveries
        self._read_ahead = read_ahead
        self._idle_ms = idle_ms
        self._claimed = claimed
        self._settle = settle
        self._unsent = unsent
        self._corrupt = corrupt
        self._wake = asyncio.Event()
        self._running = True
        self._warn = RateLimitedLog(log)

    def stop(self) -> None:
        self._running = False
        self._wake.set()

    def wake(self, n: int | None = None) -> None:
        """Something to read: in partition `n` if held here (None: a partition was taken)."""
        owned = self._own.owned.get(n) if n is not None else None
        if owned is not None:
            owned.next_read = 0.0
        if n is None or owned is not None:
            self._wake.set()

    async def run(self) -> None:
        """Reads the partitions held, as fast as there is something and room for it."""
        while self._running:
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
                    self._warn.warning(
                        "events:reads", "event queue reads failed: %s", type(e).__name__
                    )
                    log.debug("event queue reads failed", exc_info=e)
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
            self._claimed(self._feed(owned, await self._streams.take_over(n, self._idle_ms)))
            if await self._streams.foreign(n):
                return False  # not idle long enough yet: their holder may still be sending
        # Events let go of meanwhile (their lease was not confirmed in time) are read again.
        owned.reading = owned.rereads == rereads
        return owned.reading

    def _feed(self, owned: Owned, entries: list[Entry]) -> int:
        users: dict[bytes, tuple[Identity, list[tuple[Prepared, object]]]] = {}
        settle: list[bytes] = []
        unsent = self._unsent(owned.n)
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
                self._corrupt()
                self._warn.warning("events:corrupt", "an event in Redis does not decode: dropped")
                settle.append(entry)
                continue
            owned.unsettled.add(entry)
            # Prepared when it was queued (`RedisQueue.offer`): not decided on again.
            part = Prepared.restored(identity, event)
            users.setdefault(u, (identity, []))[1].append(
                (part, Token(owned.n, owned.epoch, entry))
            )
        for u, (identity, items) in users.items():
            self._deliveries.push(u, identity, items)
        if settle:
            self._settle(owned.n, settle)
        return sum(len(items) for _, items in users.values())
