"""Player events in Redis Streams: the commands the `redis` event queue is made of.

Events are partitioned by user (`partition_of`, a hash of the identity): partition `n` is the
stream `{prefix}:{ev-n}:stream`, consumed through the group `cohortkv`, and its lease
`{prefix}:{ev-n}:lease` says which replica consumes it now. The hash tag `{ev-n}` keeps a
partition's keys in one Redis Cluster slot, and spreads partitions over the slots. One entry is
one event: `u` the identity (JSON, exactly as accepted), `e` the event (JSON, ids filled in).
Entries are deleted once settled (delivered, or refused for good), so a stream's length is
what waits, and the bound is checked before anything is added: an offer that would pass it
adds nothing (never a silent trim).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from functools import partial
from typing import Any

from plugin.cache.redis_calls import RedisCalls

GROUP = "cohortkv"

# KEYS: stream. ARGV: bound, identity, event... One offer's events, all or none.
_ADD = """
local bound = tonumber(ARGV[1])
local n = #ARGV - 2
if redis.call('XLEN', KEYS[1]) + n > bound then return 0 end
for i = 3, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', bound, '*', 'u', ARGV[2], 'e', ARGV[i])
end
return n
"""

# KEYS: lease, stream. ARGV: consumer, group, count, id (">": new entries; else this consumer's
# unsettled ones after it). Only the lease's holder reads: {1, XREADGROUP's answer}, else {0}.
_READ = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {0} end
local read = {'XREADGROUP', 'GROUP', ARGV[2], ARGV[1], 'COUNT', ARGV[3],
              'STREAMS', KEYS[2], ARGV[4]}
local got = redis.pcall(unpack(read))
if type(got) == 'table' and got.err then
  if not string.find(got.err, 'NOGROUP') then return redis.error_reply(got.err) end
  redis.call('XGROUP', 'CREATE', KEYS[2], ARGV[2], '0', 'MKSTREAM')
  got = redis.call(unpack(read))
end
return {1, got}
"""

# KEYS: stream. ARGV: group, ids... Settled entries leave the stream.
_SETTLE = """
redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
return redis.call('XDEL', KEYS[1], unpack(ARGV, 2))
"""

# KEYS: lease. ARGV: consumer, lease ms. Takes a free lease or keeps one's own: 1, else 0.
_HOLD = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

# KEYS: lease, stream. ARGV: consumer, group, idle ms. Gives a partition up: the entries still
# pending to this consumer are marked idle for `idle ms`, so that the next holder takes them at
# once instead of waiting for them to age.
_LEAVE = """
local start = '-'
while true do
  local pending = redis.pcall('XPENDING', KEYS[2], ARGV[2], start, '+', 500, ARGV[1])
  if type(pending) ~= 'table' or pending.err or #pending == 0 then break end
  local args = {'XCLAIM', KEYS[2], ARGV[2], ARGV[1], 0}
  for _, e in ipairs(pending) do args[#args + 1] = e[1] end
  start = '(' .. args[#args]
  args[#args + 1] = 'IDLE'
  args[#args + 1] = ARGV[3]
  args[#args + 1] = 'JUSTID'
  redis.call(unpack(args))
end
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""

# KEYS: consumers. ARGV: consumer, stale after ms. Who is alive, by Redis's clock.
_HELLO = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return redis.call('ZCARD', KEYS[1])
"""

# KEYS: stream. ARGV: group. {length, pending}.
_SIZES = """
local pending = redis.pcall('XPENDING', KEYS[1], ARGV[1])
local n = 0
if type(pending) == 'table' and not pending.err then n = pending[1] end
return {redis.call('XLEN', KEYS[1]), n}
"""

Entry = tuple[bytes, dict[bytes, bytes] | None]
"""A stream entry as read: its id and fields (None for an entry deleted meanwhile)."""


def partition_of(key: bytes, partitions: int) -> int:
    """The partition of an identity (`key` is its JSON): stable across replicas and restarts."""
    return zlib.crc32(key) % partitions


class Streams:
    """The partitions' Redis commands, each one call through `RedisCalls`."""

    def __init__(self, calls: RedisCalls, prefix: str, consumer: str) -> None:
        self._calls = calls
        self._prefix = prefix
        self.consumer = consumer
        client = calls.client
        self._add = client.register_script(_ADD)
        self._settle = client.register_script(_SETTLE)
        self._read = client.register_script(_READ)
        self._hold = client.register_script(_HOLD)
        self._leave = client.register_script(_LEAVE)
        self._hello = client.register_script(_HELLO)
        self._sizes = client.register_script(_SIZES)

    def stream(self, n: int) -> str:
        return f"{self._prefix}:{{ev-{n}}}:stream"

    def _lease(self, n: int) -> str:
        return f"{self._prefix}:{{ev-{n}}}:lease"

    async def add(self, n: int, identity: bytes, events: Sequence[bytes], bound: int) -> bool:
        """Appends all `events` or, when that would pass `bound`, none (False)."""
        keys, args = [self.stream(n)], [bound, identity, *events]
        got = await self._calls.run("xadd", lambda: self._add(keys=keys, args=args))
        return bool(got)

    async def settle(self, n: int, ids: Sequence[bytes]) -> None:
        keys, args = [self.stream(n)], [GROUP, *ids]
        await self._calls.run("xack", lambda: self._settle(keys=keys, args=args))

    async def hold(self, n: int, lease_ms: int) -> bool:
        keys, args = [self._lease(n)], [self.consumer, lease_ms]
        return bool(await self._calls.run("lease", lambda: self._hold(keys=keys, args=args)))

    async def leave(self, n: int, idle_ms: int) -> None:
        keys, args = [self._lease(n), self.stream(n)], [self.consumer, GROUP, idle_ms]
        await self._calls.run("leave", lambda: self._leave(keys=keys, args=args))

    async def hello(self, stale_ms: int) -> int:
        """Says this consumer is alive; how many are."""
        keys, args = [f"{self._prefix}:ev:consumers"], [self.consumer, stale_ms]
        return int(await self._calls.run("hello", lambda: self._hello(keys=keys, args=args)))

    async def goodbye(self) -> None:
        """No longer alive: the others count their share without this consumer at once."""
        key = f"{self._prefix}:ev:consumers"
        await self._calls.run("hello", lambda: self._calls.client.zrem(key, self.consumer))

    async def sizes(self, n: int) -> tuple[int, int]:
        """(entries waiting, entries read and not settled) of partition `n`."""
        keys, args = [self.stream(n)], [GROUP]
        got = await self._calls.run("sizes", lambda: self._sizes(keys=keys, args=args))
        return int(got[0]), int(got[1])

    async def read(self, n: int, count: int, *, after: bytes | None = None) -> list[Entry] | None:
        """New entries (or, given `after`, the ones this consumer read and has not settled,
        after that id), in stream order; None when this consumer does not hold the lease (a
        replica that lost its partition reads nothing more of it). Creates the group where
        Redis has none (a new stream, or a Redis that came back without it)."""
        keys = [self._lease(n), self.stream(n)]
        args = [self.consumer, GROUP, count, b">" if after is None else after]
        got = await self._calls.run("xread", lambda: self._read(keys=keys, args=args))
        if not got or got[0] != 1:
            return None
        streams = got[1] or []
        return [(e[0], _fields(e[1])) for _, entries in streams for e in entries]

    async def foreign(self, n: int) -> int:
        """Entries read by other consumers of partition `n` and not settled."""
        key = self.stream(n)
        got = await self._calls.run("xpending", lambda: self._calls.client.xpending(key, GROUP))
        return sum(
            int(c["pending"]) for c in got.get("consumers", ()) if _text(c["name"]) != self.consumer
        )

    async def take_over(self, n: int, idle_ms: int) -> list[Entry]:
        """Entries other consumers read and left unsettled for at least `idle_ms`: theirs no
        longer (XAUTOCLAIM), now this consumer's."""
        key = self.stream(n)
        out: list[Entry] = []
        start: Any = "0-0"
        client = self._calls.client
        while True:
            call = partial(client.xautoclaim, key, GROUP, self.consumer, idle_ms, start, count=100)
            got = await self._calls.run("xclaim", call)
            out.extend(got[1])
            start = got[0]
            if _text(start) == "0-0" or not got[1]:
                return out


def _fields(flat: Any) -> dict[bytes, bytes] | None:
    """`[name, value, ...]` as a dict; None for an entry deleted meanwhile."""
    if not flat:
        return None
    return dict(zip(flat[::2], flat[1::2], strict=False))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
