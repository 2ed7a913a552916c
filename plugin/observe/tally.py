"""Counters of the hot path that count in plain numbers between scrapes.

A prometheus_client increment takes a lock and checks its arguments, several times per ad
request. The counters the enricher bumps on every request (`DeferredCounter`,
`DeferredHistogram`) hand out tallies instead: a plain number per labelled child, added to the
child's value whenever the metric is collected (a scrape, `get_sample_value`, a name-filtered
scrape alike), so what is read is exactly what was counted. In multiprocess mode (`serve
--workers N`, `plugin.serve.worker_metrics`) a scrape reads every worker's files, not their
tallies: there a tally adds straight to the child's value, without the per-call checks.

Tallies are bumped from the enricher's event loop only (one writer); a scrape from another
thread only reads them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from prometheus_client import Counter, Histogram
from prometheus_client.metrics_core import Metric


class _Tally:
    """One value's count since it was last added to the value."""

    __slots__ = ("flushed", "n", "value")

    def __init__(self, value: Any) -> None:
        self.value = value
        self.n = 0
        self.flushed = 0

    def add(self) -> None:
        self.n += 1

    def flush(self) -> None:
        n = self.n
        if n != self.flushed:
            self.value.inc(n - self.flushed)
            self.flushed = n


class _Tallies:
    """A metric's tallies, added to their values under one lock (scrapes may overlap)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._all: list[_Tally] = []

    def new(self, value: Any) -> _Tally:
        tally = _Tally(value)
        with self._lock:
            self._all.append(tally)
        return tally

    def flush(self) -> None:
        with self._lock:
            for tally in self._all:
                tally.flush()


def _deferrable(value: Any) -> bool:
    """A value in this process's memory (not a multiprocess file) that can be added to."""
    return getattr(value, "_multiprocess", True) is False and callable(getattr(value, "inc", None))


class DeferredCounter(Counter):
    """A Counter whose `tally(*labels)` counts in a plain number until collected."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._tallies = _Tallies()
        super().__init__(*args, **kwargs)

    def tally(self, *labels: str) -> Callable[[], None]:
        """`labels(*labels).inc` for the hot path."""
        child = self.labels(*labels)
        value: Any = getattr(child, "_value", None)
        if _deferrable(value):
            return self._tallies.new(value).add
        return counting(child)

    def collect(self) -> Iterable[Metric]:
        self._tallies.flush()
        return super().collect()


class DeferredHistogram(Histogram):
    """A Histogram whose `tally(*labels)` adds to the sum at once and counts its buckets in
    plain numbers until collected (the sum is a float: added in the same order as always)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._tallies = _Tallies()
        super().__init__(*args, **kwargs)

    def tally(self, *labels: str) -> Callable[[float], None]:
        """`labels(*labels).observe` for the hot path."""
        child = self.labels(*labels)
        buckets: Any = getattr(child, "_buckets", None)
        shaped = _shaped(child)
        if shaped is None or not all(_deferrable(b) for b in buckets):
            return timing(child)
        add, bounds = shaped
        pairs = tuple(zip(bounds, (self._tallies.new(b) for b in buckets), strict=True))

        def observe(amount: float) -> None:
            add(amount)
            for bound, tally in pairs:
                if amount <= bound:
                    tally.n += 1
                    break

        return observe

    def collect(self) -> Iterable[Metric]:
        self._tallies.flush()
        return super().collect()


def counting(child: Counter) -> Callable[[], None]:
    """`child.inc` (a labelled child, resolved once) as a call that adds 1 straight to its
    value, as `Counter.inc(1)` does after checks that cannot fail for a child and 1: the same
    value, in-process or in multiprocess files. A client whose children keep their value
    otherwise gets the public method."""
    value: Any = getattr(child, "_value", None)
    if child._is_observable() and callable(getattr(value, "inc", None)):  # type: ignore[no-untyped-call]
        inc: Callable[[float], None] = value.inc
        return partial(inc, 1)
    return child.inc


def _shaped(child: Histogram) -> tuple[Callable[[float], None], list[float]] | None:
    """The child's sum's `inc` and its bucket bounds, when it keeps them as expected."""
    total: Any = getattr(child, "_sum", None)
    buckets: Any = getattr(child, "_buckets", None)
    bounds: Any = getattr(child, "_upper_bounds", None)
    usable = child._is_observable()  # type: ignore[no-untyped-call]
    if not (usable and callable(getattr(total, "inc", None)) and isinstance(buckets, list)):
        return None
    if not isinstance(bounds, list) or len(bounds) != len(buckets):
        return None
    if not all(callable(getattr(b, "inc", None)) for b in buckets):
        return None
    return total.inc, bounds


def timing(child: Histogram) -> Callable[[float], None]:
    """`child.observe` (a labelled child, resolved once), adding to its sum and to the first
    bucket the amount fits in, as `Histogram.observe` does after its checks; the public
    method when the client keeps them otherwise."""
    shaped = _shaped(child)
    if shaped is None:
        return child.observe
    add, bounds = shaped
    buckets: list[Any] = getattr(child, "_buckets", [])
    pairs = tuple(zip(bounds, (b.inc for b in buckets), strict=True))

    def observe(amount: float) -> None:
        add(amount)
        for bound, inc in pairs:
            if amount <= bound:
                inc(1)
                break

    return observe
