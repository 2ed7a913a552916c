"""Delivering accepted player events to the CCS API, whichever queue holds them.

`Deliveries` keeps each user's events in time order and sends a user's batches (at most 10
events) one at a time, so the CCS API sees them chronologically, while different users' batches
go out concurrently (`serve.events_workers`). Each batch goes through the product's one event-
sending path (`Enricher.send_batch`, which takes only `Prepared` batches), and `RetryPolicy`
says what its failure means (`plugin.permutive.delivery`): delivered, refused for good,
uncertain, worth another try after a pause, or out of tries. The CCS API counts every event it
receives, so a batch is sent again only when the API provably did not process it (no connection,
failed while writing, 429, 503); one that may have landed (a timeout after sending, another 5xx)
is counted `uncertain` and settled without another try, unless `[events] retry = "always"`. The
queue that owns the events is told how each batch ended (`Settled`), so that a durable queue can
acknowledge exactly what was settled and keep everything else.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, Literal

from plugin.identity import Identity
from plugin.observe.metrics import RateLimitedLog
from plugin.permutive.clients import UpstreamError
from plugin.permutive.delivery import delivery
from plugin.permutive.wire import MAX_EVENTS_PER_REQUEST, Event
from plugin.serve.metrics import ServeMetrics
from plugin.tracking import Prepared

log = logging.getLogger("cohortkv.serve.events")

BATCH = MAX_EVENTS_PER_REQUEST
SendBatch = Callable[[Prepared], Awaitable[object]]
"""`Enricher.send_batch`: it takes nothing that did not pass the events gate."""

Ending = Literal["sent", "uncertain", "rejected", "exhausted", "bug", "stopped"]
"""How a batch ended. All but `stopped` settle it (a queue may forget it); `uncertain`: it may
have reached the CCS API and is not sent again (counted, not dropped); `stopped`: the queue is
closing (or gave the events up to another replica) and the batch was not settled."""

DROP_REASON: dict[Ending, str] = {
    "rejected": "rejected",
    "exhausted": "exhausted",
    "bug": "rejected",
}
"""`cohortkv_events_dropped_total{reason}` of the endings that drop a batch."""


class RetryPolicy:
    """What a failed batch means (`outcome`), tries per batch, and the jittered exponential
    pause between them (`Retry-After` wins)."""

    def __init__(
        self,
        *,
        max_attempts: int = 8,
        backoff_s: float = 0.2,
        backoff_max_s: float = 30.0,
        retry: Literal["safe", "always"] = "safe",
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.max_attempts = max_attempts
        self._backoff = backoff_s
        self._backoff_max = backoff_max_s
        self._retry_uncertain = retry == "always"
        self._rng = rng

    def outcome(self, e: UpstreamError) -> Literal["sent", "rejected", "uncertain", "retry"]:
        """`retry` only for a batch the CCS API provably did not process (or, with
        `retry = "always"`, one that may have landed)."""
        got = delivery(e)
        if got == "delivered":
            return "sent"
        if got == "refused":
            return "rejected"
        if got == "uncertain" and not self._retry_uncertain:
            return "uncertain"
        return "retry"

    def pause_s(self, attempt: int, e: UpstreamError) -> float:
        """Before try `attempt + 1`."""
        delay: float = min(self._backoff_max, self._backoff * 2.0 ** min(attempt - 1, 60))
        delay *= 0.5 + self._rng() / 2
        if e.retry_after_s is not None:
            delay = max(delay, min(e.retry_after_s, self._backoff_max))
        return delay


class Item:
    """One accepted event (a one-event `Prepared` part) and what its queue needs to settle it
    (`token`)."""

    __slots__ = ("at", "part", "seq", "token")

    def __init__(self, at: float, seq: int, part: Prepared, token: Any) -> None:
        self.at = at
        self.seq = seq
        self.part = part
        self.token = token

    @property
    def event(self) -> Event:
        return self.part.events[0]

    def __lt__(self, other: Item) -> bool:
        return (self.at, self.seq) < (other.at, other.seq)


Settled = Callable[[Sequence[Item], Ending, str], None]
"""Told once per batch: its items, how it ended, the last error (for the log)."""
Pause = Callable[[float, Sequence[Item]], Awaitable[bool]]
"""Sleeps before retrying a batch; False when it must not be retried now (closing)."""


class _User:
    __slots__ = ("busy", "identity", "pending", "scheduled")

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.pending: list[Item] = []
        self.busy = False
        self.scheduled = False


class Deliveries:
    """Per-user ordered delivery with retries; the owning queue decides what comes in and
    what an ending means (`settled`), and may withdraw items it no longer owns (`keep`)."""

    def __init__(
        self,
        send: SendBatch,
        metrics: ServeMetrics,
        policy: RetryPolicy,
        *,
        workers: int,
        settled: Settled,
        pause: Pause,
        keep: Callable[[Item], bool] | None = None,
    ) -> None:
        self._send = send
        self._policy = policy
        self._workers_n = workers
        self._settled = settled
        self._pause = pause
        self._keep = keep
        self._users: dict[bytes, _User] = {}
        self._ready: asyncio.Queue[bytes] = asyncio.Queue()
        self._seq = itertools.count()
        self._workers: list[asyncio.Task[None]] = []
        self.depth = 0
        """Items held here: accepted and neither settled nor withdrawn."""
        self.idle = asyncio.Event()
        self.idle.set()
        self._warn = RateLimitedLog(log)
        self._sent = metrics.events.labels("sent")
        self._retried = metrics.events.labels("retried")
        self._uncertain = metrics.events.labels("uncertain")
        self._gauge = metrics.queue_depth

    def start(self) -> None:
        if not self._workers:
            self._workers = [
                asyncio.create_task(self._work(), name=f"cohortkv-events-{i}")
                for i in range(self._workers_n)
            ]

    async def stop(self) -> None:
        workers, self._workers = self._workers, []
        await stop_tasks(workers)

    def push(self, key: bytes, identity: Identity, parts: Sequence[tuple[Prepared, Any]]) -> None:
        """Adds a user's events (one-event `Prepared` parts, each with its token); `key`
        names the user exactly."""
        user = self._users.get(key)
        if user is None:
            user = self._users[key] = _User(identity)
        for part, token in parts:
            at = _seconds(part.events[0].time)
            heapq.heappush(user.pending, Item(at, next(self._seq), part, token))
        self._count(len(parts))
        self._schedule(key, user)

    def clear(self) -> list[Item]:
        """Withdraws every item not being sent now; returns them."""
        left = [item for user in self._users.values() for item in user.pending]
        for user in self._users.values():
            user.pending.clear()
        self._count(-len(left))
        return left

    def _count(self, n: int) -> None:
        self.depth += n
        self._gauge.set(self.depth)
        if self.depth == 0:
            self.idle.set()
        else:
            self.idle.clear()

    def _schedule(self, key: bytes, user: _User) -> None:
        if not user.busy and not user.scheduled and user.pending:
            user.scheduled = True
            self._ready.put_nowait(key)

    async def _work(self) -> None:
        while self._workers:
            key = await self._ready.get()
            user = self._users.get(key)
            if user is None:
                continue
            user.scheduled = False
            batch = self._take(user)
            if not batch:
                self._forget(key, user)
                continue
            user.busy = True
            ending: Ending = "stopped"
            error = ""
            try:
                ending, error = await self._deliver(user.identity, batch)
            finally:
                user.busy = False
                self._settled(batch, ending, error)
                self._count(-len(batch))
                self._forget(key, user)

    def _take(self, user: _User) -> list[Item]:
        batch: list[Item] = []
        withdrawn = 0
        while user.pending and len(batch) < BATCH:
            item = heapq.heappop(user.pending)
            if self._keep is None or self._keep(item):
                batch.append(item)
            else:
                withdrawn += 1
        if withdrawn:
            self._count(-withdrawn)
        return batch

    def _forget(self, key: bytes, user: _User) -> None:
        if user.pending:
            self._schedule(key, user)
        elif not user.busy:
            self._users.pop(key, None)

    async def _deliver(self, identity: Identity, batch: list[Item]) -> tuple[Ending, str]:
        n = len(batch)
        joined = Prepared.joined([item.part for item in batch])
        policy = self._policy
        attempt = 0
        while attempt < policy.max_attempts:
            attempt += 1
            try:
                await self._send(joined)
            except UpstreamError as e:
                outcome = policy.outcome(e)
                if outcome == "sent":
                    break
                if outcome == "rejected":
                    self._warn.warning(f"events:{e.kind}", "events refused by the CCS API: %s", e)
                    return "rejected", str(e)
                if outcome == "uncertain":
                    self._uncertain.inc(n)
                    self._warn.warning(
                        "events:uncertain",
                        "events may have reached the CCS API; not sent again (%s)",
                        e,
                    )
                    return "uncertain", str(e)
                # Refused by the open breaker: nothing went out, so the try is not spent; the
                # batch waits for the breaker's probe instead (it reopens within max_open_s).
                deferred = e.kind == "breaker_open"
                if attempt == policy.max_attempts and not deferred:
                    self._warn.warning("events:exhausted", "events dropped after retries: %s", e)
                    return "exhausted", str(e)
                if not await self._pause(policy.pause_s(attempt, e), batch):
                    return "stopped", str(e)
                if deferred:
                    attempt -= 1
                else:
                    self._retried.inc(n)
                continue
            except Exception as e:
                self._warn.warning("events:bug", "event delivery failed: %s", type(e).__name__)
                log.debug("event delivery failed", exc_info=True)
                return "bug", type(e).__name__
            break
        self._sent.inc(n)
        return "sent", ""


async def stop_tasks(tasks: Sequence[asyncio.Task[Any]], wait_s: float = 1.0) -> None:
    """Cancels `tasks` and waits for them, within `wait_s`. Python 3.11's `asyncio.wait_for`
    (which client libraries use) can swallow a cancellation that arrives as what it waits for
    completes: a task may go on after `cancel()`, so its loop also checks a flag, and closing
    never waits for it without a bound."""
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=wait_s)


def _seconds(value: str) -> float:
    """Events were checked when accepted (`plugin.signals.events.parse_event_time`): RFC 3339
    times with a zone, which `fromisoformat` reads (after `Z`)."""
    return datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00")).timestamp()
