"""A circuit breaker per upstream, so a dead API costs nothing per ad request.

Closed: calls go out. After `failures` consecutive failures it opens: no call is made and the
caller falls back to its cache at once. After a jittered, growing pause it lets exactly one
probe through (half-open); the probe's success closes it, its failure opens it again for
longer, up to `max_open_s`. An upstream's own `Retry-After` is honoured as the pause. Calls that
were already out when it opened and fail afterwards do not lengthen the pause: only a failed
probe does, so an outage of any length (or any number of failures) keeps the arithmetic bounded.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from enum import IntEnum

from prometheus_client import Gauge

_MAX_DOUBLINGS = 60
"""The pause doubles per failed probe up to `max_open_s`; the exponent stops here, long after
any real `max_open_s / open_s` ratio, so that it never overflows a float."""


class State(IntEnum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class Breaker:
    __slots__ = (
        "_clock",
        "_consecutive",
        "_gauge",
        "_max_open_s",
        "_open_s",
        "_opens",
        "_probe_out",
        "_reopen_at",
        "_threshold",
        "state",
    )

    def __init__(
        self,
        failures: int = 5,
        open_s: float = 1.0,
        max_open_s: float = 30.0,
        *,
        gauge: Gauge | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = failures
        self._open_s = open_s
        self._max_open_s = max_open_s
        self._clock = clock
        self._gauge = gauge
        self._consecutive = 0
        self._opens = 0
        self._reopen_at = 0.0
        self._probe_out = False
        self.state = State.CLOSED
        self._publish()

    def allow(self) -> bool:
        """May a call go out now? In half-open state only one probe is let through."""
        if self.state is State.CLOSED:
            return True
        if self.state is State.OPEN:
            if self._clock() < self._reopen_at:
                return False
            self._set(State.HALF_OPEN)
        if self._probe_out:
            return False
        self._probe_out = True
        return True

    def remaining_s(self) -> float:
        """Seconds until an open breaker lets its probe through (0 unless it is open): how long
        a caller that can wait (an event's retry) should."""
        if self.state is not State.OPEN:
            return 0.0
        return max(0.0, self._reopen_at - self._clock())

    def success(self) -> None:
        self._consecutive = 0
        self._probe_out = False
        if self.state is not State.CLOSED:
            self._opens = 0
            self._set(State.CLOSED)

    def failure(self, retry_after_s: float | None = None) -> None:
        self._consecutive = min(self._consecutive + 1, self._threshold)
        self._probe_out = False
        if retry_after_s is not None:
            self._open(retry_after_s)
        elif self.state is State.HALF_OPEN or (
            self.state is State.CLOSED and self._consecutive >= self._threshold
        ):
            self._open(None)

    def _open(self, retry_after_s: float | None) -> None:
        if retry_after_s is not None:
            pause = min(max(retry_after_s, 0.0), self._max_open_s)
        else:
            pause = min(self._open_s * 2.0**self._opens, self._max_open_s)
            pause *= random.uniform(0.8, 1.2)  # replicas must not probe in lockstep
        self._opens = min(self._opens + 1, _MAX_DOUBLINGS)
        self._reopen_at = self._clock() + pause
        self._set(State.OPEN)

    def _set(self, state: State) -> None:
        self.state = state
        self._publish()

    def _publish(self) -> None:
        if self._gauge is not None:
            self._gauge.set(int(self.state))
