"""Recent error rate per ad server, for `/readyz`: cheap enough to update on every request."""

from __future__ import annotations

import time
from collections.abc import Callable

MIN_REQUESTS = 5
"""Below this many requests in the window an upstream is never called degraded."""


class ErrorWindow:
    """Requests and failures over the last `window_s` seconds, kept in 10 rotating buckets.

    Old failures age out even when no request comes: an upstream that failed an hour ago and
    has had no traffic since is not degraded now.
    """

    __slots__ = ("_buckets", "_clock", "_errors", "_requests", "_stamps", "_width")

    def __init__(
        self, window_s: float, clock: Callable[[], float] = time.monotonic, buckets: int = 10
    ) -> None:
        self._width = window_s / buckets
        self._buckets = buckets
        self._clock = clock
        self._requests = [0] * buckets
        self._errors = [0] * buckets
        self._stamps = [-1] * buckets

    def record(self, failed: bool) -> None:
        n = int(self._clock() / self._width)
        i = n % self._buckets
        if self._stamps[i] != n:
            self._stamps[i] = n
            self._requests[i] = 0
            self._errors[i] = 0
        self._requests[i] += 1
        if failed:
            self._errors[i] += 1

    def counts(self) -> tuple[int, int]:
        """(requests, failures) within the window."""
        n = int(self._clock() / self._width)
        requests = errors = 0
        for i, stamp in enumerate(self._stamps):
            if 0 <= n - stamp < self._buckets:
                requests += self._requests[i]
                errors += self._errors[i]
        return requests, errors

    def degraded(self, threshold: float) -> bool:
        requests, errors = self.counts()
        return requests >= MIN_REQUESTS and errors / requests >= threshold
