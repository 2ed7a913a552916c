"""The in-process caches: bounded, aged LRU and single-flight."""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st

from plugin.cache.local import AgedLru, SingleFlight
from plugin.permutive.answer import Answer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_ages_and_ttl() -> None:
    clock = Clock()
    c: AgedLru[str] = AgedLru(10, ttl=60, clock=clock)
    c.put("a", "A")
    clock.now += 30
    assert c.get("a", max_age=10) is None, "too old for a fresh read"
    assert c.get("a") == "A", "still good as a fallback"
    clock.now += 31
    assert c.get("a") is None and len(c) == 0, "past the TTL it is gone"
    c.put("b", "B", age=50)
    clock.now += 11
    assert c.get("b") is None, "a backdated answer expires by its real age"


@given(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.booleans()), max_size=60))
def test_behaves_like_a_reference_lru(ops: list[tuple[str, bool]]) -> None:
    c: AgedLru[int] = AgedLru(3, ttl=1e9)
    ref: list[str] = []  # least recently used first
    for i, (key, is_put) in enumerate(ops):
        if is_put:
            c.put(key, i)
            if key in ref:
                ref.remove(key)
            elif len(ref) == 3:
                ref.pop(0)
            ref.append(key)
        else:
            hit = c.get(key) is not None
            assert hit == (key in ref)
            if hit:
                ref.remove(key)
                ref.append(key)
        assert len(c) == len(ref) <= 3


def test_activated_cohorts_follow_platform_activations_only() -> None:
    a = Answer.from_wire(
        ["1", "2", "3", "4"], {"dfp": ["2", "1"], "gam": ["1", "3"], "freewheel": ["4"]}
    )
    assert a.activated(("dfp", "gam", "target_dfp")) == ["2", "1", "3"]
    assert a.activated(("adswizz_keyvalue",)) == []
    assert Answer.from_wire(["1"], None).activated(("dfp",)) == [], "never the raw cohorts"


async def test_single_flight_shares_one_call_and_forgets_it_after() -> None:
    calls = 0
    gate = asyncio.Event()

    async def call() -> int:
        nonlocal calls
        calls += 1
        await gate.wait()
        return calls

    sf: SingleFlight[str, int] = SingleFlight()
    tasks = [sf.run("k", call) for _ in range(50)]
    assert len({id(t) for t in tasks}) == 1 and len(sf) == 1
    gate.set()
    assert await asyncio.gather(*tasks) == [1] * 50
    await asyncio.sleep(0)
    assert len(sf) == 0
    assert await sf.run("k", call) == 2, "a later miss makes a new call"
