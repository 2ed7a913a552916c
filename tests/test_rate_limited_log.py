"""The rate-limited log: one line per kind per interval, a count of what was held back, and
bounded memory whatever the kinds (they can carry names from outside)."""

from __future__ import annotations

import logging

import pytest

from plugin.observe.metrics import RateLimitedLog


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_kind_per_interval_then_the_count_held_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    log = RateLimitedLog(logging.getLogger("t.rl"), 60.0, clock=clock)
    with caplog.at_level(logging.WARNING, "t.rl"):
        for _ in range(5):
            log.warning("a", "bad %s", "a")
        log.warning("b", "bad %s", "b")
        clock.now = 30.0
        log.warning("a", "bad %s", "a")  # still inside a's interval
        clock.now = 61.0
        log.warning("a", "bad %s", "a")
        clock.now = 200.0
        log.warning("a", "bad %s", "a")
    assert [r.getMessage() for r in caplog.records] == [
        "bad a",
        "bad b",
        "bad a (5 more like it were not logged)",
        "bad a",
    ]


def test_a_flood_of_distinct_kinds_keeps_memory_bounded(caplog: pytest.LogCaptureFixture) -> None:
    log = RateLimitedLog(logging.getLogger("t.rl2"), 60.0, max_kinds=100, clock=Clock())
    with caplog.at_level(logging.WARNING, "t.rl2"):
        for i in range(10_000):
            log.warning(f"property:{i}", "property %d", i)
    assert len(log._held) <= 100
    # a line for each kind it has room for, then one for all the rest in the interval
    assert len(caplog.records) == 100
    assert caplog.records[-1].getMessage() == "property 99"  # the rest were held back
