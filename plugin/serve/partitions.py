"""Which event partitions this replica consumes: leases, a fair share, and giving them up.

One consumer per partition at a time is what keeps a user's events in order across replicas:
a replica delivers a partition's events only while it holds the partition's lease (renewed
every third of its length, `[events] claim_idle_s / 3`), and stops delivering them once it
cannot confirm the lease in time. Each replica holds about its share (partitions over the
replicas alive, by a heartbeat in Redis); beyond it, a partition is drained (nothing new is
read, what was read is delivered) and then given up, its unsettled entries marked idle so
that the next holder takes them over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import zlib
from collections.abc import Callable

from plugin.cache.redis_calls import Unavailable
from plugin.serve.streams import Streams


class Owned:
    """A partition this replica holds: since when (`epoch`), until when it may deliver."""

    __slots__ = (
        "draining",
        "epoch",
        "n",
        "next_read",
        "quiet",
        "reading",
        "rereads",
        "unsettled",
        "valid_until",
    )

    def __init__(self, n: int, epoch: int, valid_until: float) -> None:
        self.n = n
        self.epoch = epoch
        self.valid_until = valid_until
        self.reading = False
        """False while taking over what earlier holders left (or this one let go of): nothing
        new is read before."""
        self.rereads = 0
        """Counts the times events read from it were let go of, to be read again."""
        self.draining = False
        self.next_read = 0.0
        self.quiet = 0
        """Reads in a row that found nothing new: the next one waits longer."""
        self.unsettled: set[bytes] = set()
        """Entry ids read and not settled yet (so that none is taken in twice)."""


class Ownership:
    def __init__(
        self,
        streams: Streams,
        partitions: int,
        lease_s: float,
        idle_ms: int,
        clock: Callable[[], float],
    ) -> None:
        self._streams = streams
        self._partitions = partitions
        self.lease_s = lease_s
        self._idle_ms = idle_ms
        self._clock = clock
        self.owned: dict[int, Owned] = {}
        self._epochs = 0
        start = zlib.crc32(streams.consumer.encode()) % partitions
        self._order = [(start + i) % partitions for i in range(partitions)]
        """Where this replica starts looking for free partitions: not where every other does."""

    def valid(self, n: int, epoch: int) -> Owned | None:
        """The partition when it is still held under `epoch` and its lease is confirmed."""
        owned = self.owned.get(n)
        if owned is None or owned.epoch != epoch or self._clock() > owned.valid_until:
            return None
        return owned

    async def tick(self) -> bool:
        """Renews, takes up to the share, gives up drained extras; True when it took one."""
        lease_ms = int(self.lease_s * 1000)
        alive = await self._streams.hello(3 * lease_ms)
        share = math.ceil(self._partitions / max(alive, 1))
        for n, owned in list(self.owned.items()):
            started = self._clock()
            if await self._streams.hold(n, lease_ms):
                owned.valid_until = started + self.lease_s * 0.8  # margin for clock drift
            else:
                del self.owned[n]  # another replica holds it: what was read stays for it
        took = False
        for n in self._order:
            if len(self.owned) >= share:
                break
            if n not in self.owned:
                started = self._clock()
                if await self._streams.hold(n, lease_ms):
                    self._epochs += 1
                    self.owned[n] = Owned(n, self._epochs, started + self.lease_s * 0.8)
                    took = True
        for owned in [o for o in self.owned.values() if o.draining and not o.unsettled]:
            await self.leave(owned)
        kept = sorted(
            (o for o in self.owned.values() if not o.draining), key=lambda o: len(o.unsettled)
        )
        for owned in kept[: max(0, len(kept) - share)]:
            owned.draining = True  # read no more; given up once what it read is settled
        return took

    async def leave(self, owned: Owned) -> None:
        """Gives the partition up; its unsettled entries go to the next holder at once."""
        self.owned.pop(owned.n, None)
        # Unavailable: its lease runs out by itself, and the entries age into `claim_idle_s`.
        with contextlib.suppress(Unavailable):
            await self._streams.leave(owned.n, self._idle_ms)

    async def leave_all(self) -> None:
        """Gives every partition up, and says so: the other replicas take them at once."""
        await asyncio.gather(*(self.leave(o) for o in list(self.owned.values())))
        with contextlib.suppress(Unavailable):
            await self._streams.goodbye()
