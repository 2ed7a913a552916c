"""The player-event delivery queue: accepted events reach the CCS API, in order, in batches.

Bounded and in memory: `offer` refuses (never blocks) when full. Each user's events wait in
time order; a user's batches (at most 10 events) go out one at a time, so the CCS API sees them
chronologically, while different users' batches go out concurrently. A batch is sent again,
with exponential backoff and jitter (honouring `Retry-After`), only when the CCS API provably
did not process it (`plugin.permutive.delivery`: no connection, 429, 503): the API counts every
event it receives, so a batch that may have landed (a timeout after sending, another 5xx) is
counted `uncertain` and not sent again, unless `[events] retry = "always"`. A 4xx means the
batch itself is wrong and is dropped at once. `close` flushes within a deadline.

Consent is not looked at here: the caller decides it before offering (no event of an
unconsented user is ever queued).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, Literal

from plugin.identity import Identity
from plugin.observe.metrics import RateLimitedLog
from plugin.permutive.clients import UpstreamError
from plugin.permutive.delivery import delivery
from plugin.permutive.wire import MAX_EVENTS_PER_REQUEST, Event
from plugin.serve.metrics import ServeMetrics

log = logging.getLogger("cohortkv.serve.events")

BATCH = MAX_EVENTS_PER_REQUEST
SendBatch = Callable[[Identity, Sequence[Event]], Awaitable[Any]]

# Why accepted events were lost during shutdown, as the shutdown line says it.
_LOSSES = {
    "grace": "{n} still queued or being sent when the {timeout_s:.1f} s left for the queue ran out",
    "retrying": "{n} waiting to retry after failed tries when the time ran out",
    "exhausted": "{n} failed all {attempts} tries",
    "rejected": "{n} refused by the CCS API (4xx)",
    "bug": "{n} failed with an unexpected error",
}


class _User:
    __slots__ = ("busy", "identity", "pending", "scheduled")

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.pending: list[tuple[float, int, Event]] = []
        self.busy = False
        self.scheduled = False


class EventQueue:
    def __init__(
        self,
        send: SendBatch,
        metrics: ServeMetrics,
        *,
        max_events: int,
        workers: int = 16,
        max_attempts: int = 8,
        backoff_s: float = 0.2,
        backoff_max_s: float = 30.0,
        retry: Literal["safe", "always"] = "safe",
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._send = send
        self._retry_uncertain = retry == "always"
        self._max = max_events
        self._workers_n = workers
        self._max_attempts = max_attempts
        self._backoff = backoff_s
        self._backoff_max = backoff_max_s
        self._rng = rng
        self._users: dict[bytes, _User] = {}
        self._ready: asyncio.Queue[bytes] = asyncio.Queue()
        self._seq = itertools.count()
        self._depth = 0
        self._workers: list[asyncio.Task[None]] = []
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = asyncio.Event()
        self._deadline: float | None = None
        self._lost: Counter[str] = Counter()
        """Accepted events lost once closing began, by cause (see `_LOSSES`)."""
        self._last_error: dict[str, str] = {}
        self._warn = RateLimitedLog(log)
        m = metrics
        self._queued = m.events.labels("queued")
        self._sent = m.events.labels("sent")
        self._retried = m.events.labels("retried")
        self._uncertain = m.events.labels("uncertain")
        self._dropped = m.events.labels("dropped")
        self._drop_reason = m.events_dropped
        self._gauge = m.queue_depth

    @property
    def max(self) -> int:
        return self._max

    @property
    def depth(self) -> int:
        """Events accepted and neither delivered nor dropped yet."""
        return self._depth

    def start(self) -> None:
        if not self._workers:
            self._workers = [
                asyncio.create_task(self._work(), name=f"cohortkv-events-{i}")
                for i in range(self._workers_n)
            ]

    def offer(self, identity: Identity, events: Sequence[Event], key: bytes) -> bool:
        """Queues all of `events` for `identity` (`key` names it exactly), or none when full.

        Every event's `time` must be a valid ISO 8601 timestamp (the caller validated it).
        """
        n = len(events)
        if self._closing.is_set() or self._depth + n > self._max:
            self._drop(n, "queue_full")
            return False
        user = self._users.get(key)
        if user is None:
            user = self._users[key] = _User(identity)
        for e in events:
            heapq.heappush(user.pending, (_seconds(e.time), next(self._seq), e))
        self._depth += n
        self._gauge.set(self._depth)
        self._queued.inc(n)
        self._idle.clear()
        self._schedule(key, user)
        return True

    async def close(self, timeout_s: float) -> int:
        """Stops accepting, delivers what it can within `timeout_s`; returns events lost.

        Whenever accepted events are lost from the moment closing begins, for whatever reason
        (time ran out, the CCS API failed or refused them, its breaker stayed open), one line
        says how many and why; it is not rate-limited. Also when `close` itself is cancelled.
        """
        timeout_s = max(0.0, timeout_s)
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + timeout_s
        self._closing.set()
        try:
            if self._depth and self._workers:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._idle.wait(), timeout=timeout_s)
        finally:
            for task in self._workers:
                task.cancel()
            await asyncio.gather(*self._workers, return_exceptions=True)
            self._workers = []
            left = self._depth
            if left:
                self._drop(left, "shutdown", "grace")
                self._users.clear()
                self._depth = 0
                self._gauge.set(0)
            lost = sum(self._lost.values())
            if lost:
                log.warning(
                    "shutdown: %d accepted events were not delivered to the CCS API: %s",
                    lost,
                    self._losses(timeout_s),
                )
        return lost

    def _losses(self, timeout_s: float) -> str:
        parts = []
        for cause, text in _LOSSES.items():
            n = self._lost.get(cause, 0)
            if n:
                why = text.format(n=n, attempts=self._max_attempts, timeout_s=timeout_s)
                error = self._last_error.get(cause)
                parts.append(f"{why} (last error: {error})" if error else why)
        return "; ".join(parts)

    # -- workers ------------------------------------------------------------------------------

    def _schedule(self, key: bytes, user: _User) -> None:
        if not user.busy and not user.scheduled and user.pending:
            user.scheduled = True
            self._ready.put_nowait(key)

    async def _work(self) -> None:
        while True:
            key = await self._ready.get()
            user = self._users.get(key)
            if user is None:
                continue
            user.scheduled = False
            user.busy = True
            batch = [heapq.heappop(user.pending)[2] for _ in range(min(BATCH, len(user.pending)))]
            try:
                await self._deliver(user.identity, batch)
            except asyncio.CancelledError:
                self._drop(len(batch), "shutdown", "grace")
                raise
            finally:
                user.busy = False
                self._depth -= len(batch)
                self._gauge.set(self._depth)
                if user.pending:
                    self._schedule(key, user)
                else:
                    del self._users[key]
                if self._depth == 0:
                    self._idle.set()

    async def _deliver(self, identity: Identity, batch: list[Event]) -> None:
        n = len(batch)
        for attempt in range(1, self._max_attempts + 1):
            try:
                await self._send(identity, batch)
            except UpstreamError as e:
                got = delivery(e)
                if got == "delivered":
                    break
                if got == "refused":
                    self._drop(n, "rejected", "rejected", str(e))
                    self._warn.warning(f"events:{e.kind}", "events refused by the CCS API: %s", e)
                    return
                if got == "uncertain" and not self._retry_uncertain:
                    self._uncertain.inc(n)
                    self._warn.warning(
                        "events:uncertain",
                        "events may have reached the CCS API; not sent again (%s)",
                        e,
                    )
                    return
                if attempt == self._max_attempts:
                    self._drop(n, "exhausted", "exhausted", str(e))
                    self._warn.warning("events:exhausted", "events dropped after retries: %s", e)
                    return
                if not await self._pause(attempt, e):
                    self._drop(n, "exhausted", "retrying", str(e))
                    return
                self._retried.inc(n)
                continue
            except Exception as e:
                self._drop(n, "rejected", "bug", type(e).__name__)
                self._warn.warning("events:bug", "event delivery failed: %s", type(e).__name__)
                log.debug("event delivery failed", exc_info=True)
                return
            break
        self._sent.inc(n)

    async def _pause(self, attempt: int, e: UpstreamError) -> bool:
        """Sleeps before retry `attempt + 1`; False when the shutdown deadline leaves no time."""
        loop = asyncio.get_running_loop()
        delay = min(self._backoff_max, self._backoff * 2 ** (attempt - 1))
        delay *= 0.5 + self._rng() / 2
        if e.retry_after_s is not None:
            delay = max(delay, min(e.retry_after_s, self._backoff_max))
        until = loop.time() + delay
        if not self._closing.is_set():
            try:
                await asyncio.wait_for(self._closing.wait(), timeout=delay)
            except TimeoutError:
                return True
        # Flushing: retry sooner, and never past the deadline.
        assert self._deadline is not None
        now = loop.time()
        left = self._deadline - now
        if left <= 0:
            return False
        await asyncio.sleep(max(0.0, min(until - now, left / 2)))
        return True

    def _drop(self, n: int, reason: str, cause: str | None = None, error: str = "") -> None:
        """Counts `n` events dropped for metric `reason`; `cause` (a key of `_LOSSES`) when
        they had been accepted, `error` the last error that made them go."""
        self._dropped.inc(n)
        self._drop_reason.labels(reason).inc(n)
        if cause is not None and self._closing.is_set():
            self._lost[cause] += n
            if error:
                self._last_error[cause] = error


def _seconds(value: str) -> float:
    """Events were checked when accepted (`plugin.signals.events.parse_event_time`): RFC 3339 times
    with a zone, which `fromisoformat` reads (after `Z`)."""
    return datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00")).timestamp()
