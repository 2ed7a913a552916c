"""The in-memory player-event queue (`[events] queue = "memory"`, the default).

Bounded: `offer` refuses (never blocks) when full. Delivery is `plugin.serve.delivery`: each
user's events in time order, one batch at a time. A batch is sent again, with exponential
backoff and jitter (honouring `Retry-After`), only when the CCS API provably did not process it
(`plugin.permutive.delivery`: no connection, 429, 503): the API counts every event it receives,
so a batch that may have landed (a timeout after sending, another 5xx) is counted `uncertain`
and not sent again, unless `[events] retry = "always"`. A 4xx drops the batch at once. `close`
flushes within a deadline, and whatever it could not deliver is counted and logged in one line:
an accepted event is never lost silently, but it is lost if the process dies (the `redis`
queue, `plugin.serve.stream_queue`, keeps accepted events across a crash).

Consent is not looked at here: only a `Prepared` batch can be offered, and consent was
decided when it was prepared (no event of an unconsented user is ever queued).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Sequence

from plugin.serve.delivery import DROP_REASON, Deliveries, Ending, Item, RetryPolicy, SendBatch
from plugin.serve.metrics import ServeMetrics
from plugin.serve.queue import Offered, user_key
from plugin.tracking import Prepared

log = logging.getLogger("cohortkv.serve.events")

# Why accepted events were lost during shutdown, as the shutdown line says it.
_LOSSES = {
    "grace": "{n} still queued or being sent when the {timeout_s:.1f} s left for the queue ran out",
    "retrying": "{n} waiting to retry after failed tries when the time ran out",
    "exhausted": "{n} failed all {attempts} tries",
    "rejected": "{n} refused by the CCS API (4xx)",
    "bug": "{n} failed with an unexpected error",
}


class MemoryQueue:
    def __init__(
        self,
        send: SendBatch,
        metrics: ServeMetrics,
        *,
        max_events: int,
        workers: int = 16,
        policy: RetryPolicy | None = None,
    ) -> None:
        self._max = max_events
        self._policy = policy if policy is not None else RetryPolicy()
        self._closing = asyncio.Event()
        self._deadline: float | None = None
        self._lost: Counter[str] = Counter()
        """Accepted events lost once closing began, by cause (see `_LOSSES`)."""
        self._last_error: dict[str, str] = {}
        self._queued = metrics.events.labels("queued")
        self._dropped = metrics.events.labels("dropped")
        self._drop_reason = metrics.events_dropped
        self._deliveries = Deliveries(
            send,
            metrics,
            self._policy,
            workers=workers,
            settled=self._settled,
            pause=self._pause,
        )

    @property
    def max(self) -> int:
        return self._max

    @property
    def depth(self) -> int:
        """Events accepted and neither delivered nor dropped yet."""
        return self._deliveries.depth

    def start(self) -> None:
        self._deliveries.start()

    async def offer(self, prepared: Prepared) -> Offered:
        """Queues all of the batch's events, or none when full."""
        n = len(prepared.events)
        if self._closing.is_set() or self.depth + n > self._max:
            self._drop(n, "queue_full")
            return "full"
        parts = [(p, None) for p in prepared.parts()]
        self._deliveries.push(user_key(prepared), prepared.identity, parts)
        self._queued.inc(n)
        return "accepted"

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
            if self.depth:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._deliveries.idle.wait(), timeout=timeout_s)
        finally:
            await self._deliveries.stop()
            left = self._deliveries.clear()
            if left:
                self._drop(len(left), "shutdown", "grace")
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
                why = text.format(n=n, attempts=self._policy.max_attempts, timeout_s=timeout_s)
                error = self._last_error.get(cause)
                parts.append(f"{why} (last error: {error})" if error else why)
        return "; ".join(parts)

    def _settled(self, batch: Sequence[Item], ending: Ending, error: str) -> None:
        n = len(batch)
        if ending == "stopped":  # cancelled in flight, or no time left for its next try
            self._drop(
                n, "exhausted" if error else "shutdown", "retrying" if error else "grace", error
            )
        elif ending in DROP_REASON:
            self._drop(n, DROP_REASON[ending], ending, error)

    async def _pause(self, delay: float, batch: Sequence[Item]) -> bool:
        """Sleeps before a retry; False when the shutdown deadline leaves no time."""
        loop = asyncio.get_running_loop()
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
