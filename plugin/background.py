"""The enricher's background tasks: calls that outlive the ad request that started them (a
late answer still refreshes the cache), let finish briefly on close.

An exception in one is a bug of ours: counted and logged at a bounded rate, where asyncio
would log each one with its traceback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Spawn(Protocol):
    """Starts a coroutine as a task the enricher keeps track of."""

    def __call__(self, coro: Coroutine[Any, Any, T], /) -> asyncio.Task[T]: ...


Track = Callable[["asyncio.Task[Any]"], None]
"""Keeps track of a task started elsewhere (a single-flight call)."""


class Background:
    def __init__(self, bug: Callable[[str, BaseException], None]) -> None:
        self._bug = bug
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, T], /) -> asyncio.Task[T]:
        task = asyncio.ensure_future(coro)
        self.track(task)
        return task

    def track(self, task: asyncio.Task[Any]) -> None:
        if task not in self._tasks:
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (e := task.exception()) is not None:
            self._bug("background", e)

    async def close(self, timeout_s: float) -> None:
        """Lets the tasks still running finish within `timeout_s`, then cancels the rest."""
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout_s)
            for t in pending:
                t.cancel()
