"""Last good answers, bounded and aged, plus single-flight so nothing is fetched twice at once.

The caches are plain insertion-ordered dicts used as LRUs: a hit moves the key to the end, a
full cache drops the oldest key. That is both faster and several times smaller per entry than
a linked-list TTL cache, which matters at a million cached users.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from itertools import islice
from typing import Generic, TypeVar

import msgspec

from plugin.permutive.answer import Answer

T = TypeVar("T")
K = TypeVar("K", str, bytes)
Clock = Callable[[], float]


Key = str | bytes


def compact_key(key: str) -> bytes:
    """A 16-byte digest standing in for a long identity key (`a:idfa:6D92078A-...`).

    At a million cached users the key is a large share of each entry; the digest also keeps
    raw device ids and emails out of memory dumps and the shared cache.
    """
    return hashlib.blake2b(key.encode(), digest_size=16).digest()


class Interner:
    """One shared object per distinct cohort answer: users overwhelmingly share a few hundred
    cohort sets, so a million cached users need not hold a million copies of the same tuples.

    Bounded: past `maxsize` distinct answers it starts over (sharing is an optimisation only).
    """

    def __init__(self, maxsize: int = 50_000) -> None:
        self._maxsize = maxsize
        self._seen: dict[Answer, Answer] = {}

    def __call__(self, answer: Answer, keep_user: bool = False) -> Answer:
        profile = Answer(answer.cohorts, answer.activations)
        shared = self._seen.get(profile)
        if shared is None:
            if len(self._seen) >= self._maxsize:
                self._seen.clear()
            shared = self._seen[profile] = profile
        if keep_user and answer.user_id is not None:
            return Answer(shared.cohorts, shared.activations, answer.user_id)
        return shared


class _Entry(msgspec.Struct, gc=False):
    value: object
    stamp: float


class AgedLru(Generic[T]):
    """A bounded LRU whose entries remember when they were stored.

    `get(key, max_age)` returns a value no older than `max_age` seconds; older entries are
    dropped. Readers decide how old is acceptable: a fresh answer and a fallback answer are
    the same entry read with two different ages.
    """

    __slots__ = ("_clock", "_data", "_resolution", "_stamp", "_ttl", "maxsize")

    def __init__(self, maxsize: int, ttl: float, clock: Clock = time.monotonic) -> None:
        self.maxsize = maxsize
        self._ttl = ttl
        self._clock = clock
        self._data: dict[Key, _Entry] = {}
        # Entries stored within one tick share one float object for their time stamp.
        self._resolution = min(1.0, ttl / 1000)
        self._stamp = float("-inf")

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: Key) -> bool:
        return self.get(key) is not None

    def get(self, key: Key, max_age: float | None = None) -> T | None:
        entry = self._data.pop(key, None)
        if entry is None:
            return None
        age = self._clock() - entry.stamp
        if age > self._ttl:
            return None
        self._data[key] = entry
        if max_age is not None and age > max_age:
            return None
        return entry.value  # type: ignore[return-value]

    def peek(self, key: Key, max_age: float | None = None) -> T | None:
        """`get` that changes nothing: no move to the end, no expired entry dropped (for
        explaining a request without touching the state a later request sees)."""
        entry = self._data.get(key)
        if entry is None:
            return None
        age = self._clock() - entry.stamp
        if age > self._ttl or (max_age is not None and age > max_age):
            return None
        return entry.value  # type: ignore[return-value]

    def put(self, key: Key, value: T, age: float = 0.0) -> None:
        """Stores `value`; `age` backdates it (an answer that was already that old)."""
        data = self._data
        data.pop(key, None)
        if len(data) >= self.maxsize:
            # Evict a batch found in one scan: the holes deletions leave at the front of a
            # dict make every `next(iter(data))` walk all of them again, O(n) per eviction.
            for old in list(islice(data, max(1, self.maxsize // 128))):
                del data[old]
        now = self._clock()
        data[key] = _Entry(value, now - age if age else self._stamped(now))

    def touch(self, key: Key) -> T | None:
        """`get`, then the entry stored again now: `put(key, get(key))` in one step, for
        entries kept alive by being used (sessions, views)."""
        data = self._data
        entry = data.pop(key, None)
        if entry is None:
            return None
        now = self._clock()
        if now - entry.stamp > self._ttl:
            return None
        entry.stamp = self._stamped(now)
        data[key] = entry
        return entry.value  # type: ignore[return-value]

    def _stamped(self, now: float) -> float:
        """`now` as a time stamp: entries stored within one tick share one float object."""
        if not 0.0 <= now - self._stamp <= self._resolution:  # never a later stamp
            self._stamp = now
        return self._stamp

    def discard(self, key: Key) -> None:
        self._data.pop(key, None)


class SingleFlight(Generic[K, T]):
    """At most one call per key in flight; everyone asking meanwhile shares its future.

    The call runs as its own task, so a caller that stops waiting (deadline) never cancels it:
    a late answer still completes and lands wherever the call puts it.
    """

    def __init__(self) -> None:
        self._flights: dict[K, asyncio.Task[T]] = {}

    def __len__(self) -> int:
        return len(self._flights)

    def get(self, key: K) -> asyncio.Task[T] | None:
        return self._flights.get(key)

    def run(self, key: K, call: Callable[[], Awaitable[T]]) -> asyncio.Task[T]:
        task = self._flights.get(key)
        if task is None:
            task = asyncio.ensure_future(call())
            self._flights[key] = task
            task.add_done_callback(lambda t: self._land(key, t))
        return task

    def _land(self, key: K, task: asyncio.Task[T]) -> None:
        if self._flights.get(key) is task:
            del self._flights[key]

    def tasks(self) -> list[asyncio.Task[T]]:
        return list(self._flights.values())
