"""A bug of ours that repeats (on every request, in every background call) is counted and
logged at a bounded rate, with a count of what was held back; never a traceback per request,
and the ad request still goes out."""

from __future__ import annotations

import asyncio
import gc
import logging
import uuid

import pytest
from prometheus_client import CollectorRegistry

from plugin import Config, ConsentSignals, Content, Context, Enricher
from plugin.accounting import Accounting
from plugin.observe.metrics import Metrics
from plugin.permutive.breaker import Breaker
from tests.helpers.fakes import API_KEY, FakePermutive
from tests.helpers.samples import DEVICE, GAM_SAMPLE
from tests.helpers.waiting import until


def _ctx() -> Context:
    return Context(
        identity=DEVICE,
        consent=ConsentSignals(override=True),
        content=Content(url=f"https://example.com/v/{uuid.uuid4()}"),
    )


class _Broken(Breaker):
    """A breaker with the kind of bug one once had: it raises on every failure."""

    def failure(self, retry_after_s: float | None = None) -> None:
        raise OverflowError("int too large to convert to float")


async def test_a_bug_in_every_call_is_counted_and_logged_once(
    fake: FakePermutive, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    cfg = Config(api_key=API_KEY, ccs_url=fake.url, ctx_url=fake.url, budget_ms=50)
    fake.status["ccs"] = 503
    fake.delay["ccs"] = 0.1  # the calls end after their requests did: nobody reads them
    async with Enricher(cfg, registry=registry) as e:
        e.backends.ccs.breaker = _Broken()
        with caplog.at_level(logging.DEBUG - 1, "asyncio"), caplog.at_level(logging.WARNING):
            results = await asyncio.gather(*(e.enrich(GAM_SAMPLE, _ctx()) for _ in range(40)))
            assert all(r.url for r in results), "every ad request still went out"

            def bugs() -> float:
                where = {"where": "background"}
                return registry.get_sample_value("cohortkv_internal_errors_total", where) or 0

            await until(lambda: bugs() == 40, what="every late call's bug counted")
            gc.collect()  # where asyncio would log a task's exception nobody read
    lines = [r for r in caplog.records if "internal error" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


async def test_the_event_loops_errors_are_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    accounting = Accounting(Metrics(registry))
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(accounting.loop_error)
    try:
        with caplog.at_level(logging.WARNING):
            for _ in range(100):
                loop.call_soon(lambda: 1 / 0)
            await asyncio.sleep(0.01)
            loop.call_exception_handler({"message": "no exception here"})
    finally:
        loop.set_exception_handler(previous)
    where = {"where": "event_loop"}
    assert registry.get_sample_value("cohortkv_internal_errors_total", where) == 101
    assert [r.getMessage() for r in caplog.records] == [
        "internal error in event_loop: ZeroDivisionError",
        "event loop: no exception here",
    ]
