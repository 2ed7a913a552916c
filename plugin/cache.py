"""Last good answers, bounded and aged, plus single-flight so nothing is fetched twice at once.

The caches are plain insertion-ordered dicts used as LRUs: a hit moves the key to the end, a
full cache drops the oldest key. That is both faster and several times smaller per entry than
a linked-list TTL cache, which matters at a million cached users.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Generic, TypeVar

import msgspec

T = TypeVar("T")
Clock = Callable[[], float]


class Answer(msgspec.Struct, frozen=True, gc=False):
    """One API answer, reduced to what an ad request needs."""

    cohorts: tuple[str, ...]
    activations: tuple[tuple[str, tuple[str, ...]], ...] | None = None
    user_id: str | None = None

    @classmethod
    def from_wire(
        cls,
        cohorts: Iterable[str],
        activations: Mapping[str, Iterable[str]] | None,
        user_id: str | None = None,
    ) -> Answer:
        acts = (
            None
            if activations is None
            else tuple((p, tuple(codes)) for p, codes in activations.items())
        )
        return cls(tuple(cohorts), acts, user_id)

    def activated(self, platforms: Iterable[str]) -> list[str]:
        """Cohorts activated for any of `platforms`, in answer order, each once.

        Like the Direct API guide says, only per-platform activations go into an ad request,
        never the whole `cohorts` list.
        """
        if not self.activations:
            return []
        wanted = set(platforms)
        out: dict[str, None] = {}
        for platform, codes in self.activations:
            if platform in wanted:
                out.update(dict.fromkeys(codes))
        return list(out)


class AgedLru(Generic[T]):
    """A bounded LRU whose entries remember when they were stored.

    `get(key, max_age)` returns a value no older than `max_age` seconds; older entries are
    dropped. Readers decide how old is acceptable: a fresh answer and a fallback answer are
    the same entry read with two different ages.
    """

    __slots__ = ("_clock", "_data", "_ttl", "maxsize")

    def __init__(self, maxsize: int, ttl: float, clock: Clock = time.monotonic) -> None:
        self.maxsize = maxsize
        self._ttl = ttl
        self._clock = clock
        self._data: dict[str, tuple[T, float]] = {}

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def get(self, key: str, max_age: float | None = None) -> T | None:
        item = self._data.pop(key, None)
        if item is None:
            return None
        age = self._clock() - item[1]
        if age > self._ttl:
            return None
        self._data[key] = item
        if max_age is not None and age > max_age:
            return None
        return item[0]

    def put(self, key: str, value: T, age: float = 0.0) -> None:
        """Stores `value`; `age` backdates it (an answer that was already that old)."""
        data = self._data
        data.pop(key, None)
        if len(data) >= self.maxsize:
            del data[next(iter(data))]
        data[key] = (value, self._clock() - age)

    def discard(self, key: str) -> None:
        self._data.pop(key, None)


class SingleFlight(Generic[T]):
    """At most one call per key in flight; everyone asking meanwhile shares its future.

    The call runs as its own task, so a caller that stops waiting (deadline) never cancels it:
    a late answer still completes and lands wherever the call puts it.
    """

    def __init__(self) -> None:
        self._flights: dict[str, asyncio.Task[T]] = {}

    def __len__(self) -> int:
        return len(self._flights)

    def get(self, key: str) -> asyncio.Task[T] | None:
        return self._flights.get(key)

    def run(self, key: str, call: Callable[[], Awaitable[T]]) -> asyncio.Task[T]:
        task = self._flights.get(key)
        if task is None:
            task = asyncio.ensure_future(call())
            self._flights[key] = task
            task.add_done_callback(lambda t: self._land(key, t))
        return task

    def _land(self, key: str, task: asyncio.Task[T]) -> None:
        if self._flights.get(key) is task:
            del self._flights[key]

    def tasks(self) -> list[asyncio.Task[T]]:
        return list(self._flights.values())
