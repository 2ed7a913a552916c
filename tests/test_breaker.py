"""Circuit breaking and bounded in-flight calls, unit and over HTTP."""

from __future__ import annotations

import asyncio
import itertools

from prometheus_client import CollectorRegistry

from plugin import Config, ConsentSignals, Content, Context, Enricher
from plugin.config import HttpConfig
from plugin.permutive.breaker import Breaker, State
from tests.helpers.fakes import API_KEY, FakePermutive
from tests.helpers.samples import DEVICE, GAM_SAMPLE


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_and_probes_once() -> None:
    clock = Clock()
    b = Breaker(failures=3, open_s=1.0, max_open_s=10.0, clock=clock)
    for _ in range(2):
        assert b.allow()
        b.failure()
    b.success()  # a success resets the count
    for _ in range(3):
        assert b.allow()
        b.failure()
    assert b.state is State.OPEN and not b.allow()
    clock.now = 1.3  # past the jittered pause (0.8-1.2 s)
    assert b.allow() and b.state is State.HALF_OPEN
    assert not b.allow(), "only one probe while half-open"
    b.failure()
    assert b.state is State.OPEN
    clock.now = 1.3 + 1.5  # second pause is 2 s +-20%: still open
    assert not b.allow()
    clock.now = 1.3 + 2.5
    assert b.allow()
    b.success()
    assert b.state is State.CLOSED and b.allow()


def test_retry_after_sets_the_pause() -> None:
    clock = Clock()
    b = Breaker(failures=5, open_s=1.0, max_open_s=30.0, clock=clock)
    b.failure(retry_after_s=7)
    assert b.state is State.OPEN
    clock.now = 6.9
    assert not b.allow()
    clock.now = 7.0
    assert b.allow()


def test_a_24_hour_outage_keeps_probing_at_the_longest_pause_and_never_overflows() -> None:
    """Driven by the breaker's clock: every second for a day, a caller asks to call, and the
    call fails; calls already out when it opened keep failing too (ten per second)."""
    clock = Clock()
    b = Breaker(failures=5, open_s=1.0, max_open_s=30.0, clock=clock)
    probes: list[float] = []
    for second in range(24 * 3600):
        clock.now = float(second)
        if b.allow():
            if b.state is State.HALF_OPEN:
                probes.append(clock.now)
            b.failure()
        for _ in range(10):
            b.failure()  # late failures of calls made before it opened
    assert b.state is State.OPEN
    gaps = [later - earlier for earlier, later in itertools.pairwise(probes)]
    assert max(gaps) <= 30 * 1.2 + 1, "the pause is capped at max_open_s (plus jitter)"
    assert min(gaps[10:]) >= 30 * 0.8 - 1, "and it stays there: late failures do not reset it"
    assert 2400 <= len(probes) <= 3700, "about one probe per 30 s for 24 h"
    clock.now += 40
    assert b.allow()
    b.success()
    assert b.state is State.CLOSED and b.allow(), "the first successful probe closes it"


def test_failures_while_open_do_not_lengthen_the_pause() -> None:
    clock = Clock()
    b = Breaker(failures=1, open_s=1.0, max_open_s=60.0, clock=clock)
    b.failure()
    for _ in range(5000):  # today this overflowed a float after about a thousand
        b.failure()
    clock.now = 1.3  # the first pause (1 s +-20%), not 2**5000 s
    assert b.allow()


def _ctx(n: int) -> Context:
    return Context(
        identity=DEVICE,
        consent=ConsentSignals(override=True),
        content=Content(url=f"https://example.com/v/{n}"),
    )


async def test_open_breaker_makes_no_calls_and_recovers_after_half_open(
    fake: FakePermutive,
) -> None:
    registry = CollectorRegistry()
    http = HttpConfig(breaker_failures=3, breaker_open_s=0.3, breaker_max_open_s=0.3)
    cfg = Config(api_key=API_KEY, ccs_url=fake.url, ctx_url=fake.url, http=http)
    async with Enricher(cfg, registry=registry) as e:
        good = await e.enrich(GAM_SAMPLE, _ctx(0))
        fake.status["ccs"] = 503
        for n in range(1, 4):
            await e.enrich(GAM_SAMPLE, _ctx(n))
        assert e.backend_states()["ccs"] == "open"
        assert registry.get_sample_value("cohortkv_breaker_state", {"api": "ccs"}) == 1
        calls = fake.calls["ccs"]
        while_open = [await e.enrich(GAM_SAMPLE, _ctx(n)) for n in range(10, 20)]
        assert fake.calls["ccs"] == calls, "no call while open"
        assert all(r.behavioral.source == "cache" for r in while_open)
        assert all(r.behavioral.cohorts == good.behavioral.cohorts for r in while_open)
        assert all(r.elapsed_ms < 100 for r in while_open), "answers from the cache at once"
        assert (
            registry.get_sample_value(
                "cohortkv_upstream_errors_total", {"api": "ccs", "kind": "breaker_open"}
            )
            == 10
        )

        fake.status["ccs"] = 200
        await asyncio.sleep(0.4)  # past the pause (0.3 s, jitter capped by max_open_s)
        probe = await e.enrich(GAM_SAMPLE, _ctx(30))
        assert probe.behavioral.source == "live"
        assert fake.calls["ccs"] == calls + 1
        assert e.backend_states()["ccs"] == "closed"


async def test_inflight_bound_sheds_to_the_cache(fake: FakePermutive) -> None:
    registry = CollectorRegistry()
    http = HttpConfig(max_inflight_per_api=4)
    cfg = Config(api_key=API_KEY, ccs_url=fake.url, ctx_url=fake.url, http=http, budget_ms=200)
    async with Enricher(cfg, registry=registry) as e:
        await e.enrich(GAM_SAMPLE, _ctx(0))
        fake.delay["ccs"] = 1.0
        results = await asyncio.gather(*(e.enrich(GAM_SAMPLE, _ctx(n)) for n in range(1, 21)))
        assert fake.calls["ccs"] == 1 + 4
        assert all(r.behavioral.source == "cache" for r in results)
        shed = registry.get_sample_value(
            "cohortkv_upstream_errors_total", {"api": "ccs", "kind": "shed"}
        )
        assert shed == 16
