"""One signal of one ad request while it is being decided, and how it ended.

A signal either knows its outcome at once (a fresh cache hit, a view's earlier answer, consent
denied), or has a call to wait for, with a cache to fall back on if the call fails or misses
the deadline. The enricher waits for every signal's call under one deadline, never cancelling
them (a late answer still refreshes the cache), then asks each for its `outcome`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import msgspec

from plugin.permutive.answer import Answer
from plugin.result import Reason, Source


class Failed(msgspec.Struct, frozen=True, gc=False):
    """A call that ended without an answer: `kind` is the upstream error kind."""

    kind: str


Call = asyncio.Task[Answer | Failed]

_BUG = Failed("bug")
_FAILURE_REASON: dict[str, Reason] = {"breaker_open": "breaker_open", "shed": "shed"}


class Outcome(msgspec.Struct, frozen=True, gc=False):
    source: Source
    answer: Answer | None
    reason: Reason


class Pending:
    """`ready` when the outcome is known now; else `call` (answered in time: `source` /
    `reason`), falling back to `fallback()` (local cache) or the shared store's `prefetch`."""

    __slots__ = ("call", "fallback", "prefetch", "ready", "reason", "source")

    def __init__(
        self,
        ready: Outcome | None = None,
        *,
        call: Call | None = None,
        source: Source = "live",
        reason: Reason = "live",
        fallback: Callable[[], Answer | None] | None = None,
        prefetch: asyncio.Task[Answer | None] | None = None,
    ) -> None:
        self.ready = ready
        self.call = call
        self.source: Source = source
        self.reason: Reason = reason
        self.fallback = fallback
        self.prefetch = prefetch

    def waiting(self, into: list[asyncio.Task[Any]]) -> None:
        """Adds what is worth waiting for (unfinished calls) to `into`."""
        if self.ready is not None:
            return
        if self.call is not None and not self.call.done():
            into.append(self.call)
        if self.prefetch is not None and not self.prefetch.done():
            into.append(self.prefetch)

    def outcome(self) -> Outcome:
        """The call's answer if it came in time, else the last good one (local, then shared),
        with the reason it had to be the fallback."""
        if self.ready is not None:
            return self.ready
        call = self.call
        why: Reason = self.reason
        if call is not None:
            if not call.done():
                why = "cache_fallback_timeout"
            elif call.cancelled():
                why = "cache_fallback_error"
            else:
                try:
                    got = call.result()
                except Exception:  # a bug of ours, counted where the call was made
                    got = _BUG
                if type(got) is Answer:
                    return Outcome(self.source, got, self.reason)
                why = _FAILURE_REASON.get(got.kind, "cache_fallback_error")  # type: ignore[union-attr]
        answer = self.fallback() if self.fallback is not None else None
        prefetch = self.prefetch
        if answer is None and prefetch is not None and prefetch.done() and not prefetch.cancelled():
            answer = prefetch.result() if prefetch.exception() is None else None
        if answer is None:
            return Outcome("none", None, why)
        return Outcome("cache", answer, why)


def ready(source: Source, answer: Answer | None, reason: Reason) -> Pending:
    return Pending(Outcome(source, answer, reason))


async def wait_all(
    loop: asyncio.AbstractEventLoop, tasks: list[asyncio.Task[Any]], until: float
) -> None:
    """Until every task is done or the loop's clock reaches `until`; never cancels them.

    `asyncio.wait` does the same with more bookkeeping per call, on the hot path.
    """
    waiter: asyncio.Future[None] = loop.create_future()
    left = len(tasks)

    def one_done(_: asyncio.Task[Any]) -> None:
        nonlocal left
        left -= 1
        if left == 0 and not waiter.done():
            waiter.set_result(None)

    def timed_out() -> None:
        if not waiter.done():
            waiter.set_result(None)

    for t in tasks:
        t.add_done_callback(one_done)
    timer = loop.call_at(until, timed_out)
    try:
        await waiter
    finally:
        timer.cancel()
        for t in tasks:
            t.remove_done_callback(one_done)
