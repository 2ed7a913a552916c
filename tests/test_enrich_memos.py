"""The enrich step's kept results equal what the slow path makes, input for input.

Each memo on the hot path (descriptions, a description's client and Contextual request, what
two answers write, a kept-alive session or view, counters that add straight to their values)
is checked here against the code it stands in for.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector

from adapters.base import Adapter
from adapters.registry import build_adapters
from plugin.cache.local import AgedLru
from plugin.config import (
    DEFAULT_PROPERTY_TYPES,
    CacheConfig,
    Config,
    KeysConfig,
    adapter_settings,
)
from plugin.context import Content, Context
from plugin.observe.metrics import LATENCY_BUCKETS, Metrics
from plugin.observe.tally import DeferredCounter, DeferredHistogram, counting, timing
from plugin.permutive.answer import Answer
from plugin.signals.content_properties import ContentDescription
from plugin.signals.contextual import ContextualSignal, contextual_key
from plugin.signals.describe import ContentDescriber
from plugin.signals.merge import RememberedPlans, build_keyvalues, keys_to_clear

ADAPTERS: dict[str, Adapter] = {a.name: a for a in build_adapters(adapter_settings(Config()))}
TYPES = {**DEFAULT_PROPERTY_TYPES, "season": "number", "live": "boolean"}

# Few distinct values, so that requests differ in one thing only, often.
text = st.one_of(st.sampled_from(["", "a", "A", "1", "true", " 2 ", "x,y"]), st.text(max_size=4))
urls = st.one_of(
    st.none(),
    st.just(""),
    st.sampled_from(
        ["https://v.example.com/w/1", "https://V.example.com:8080/w/2?a=b", "myapp://x/1"]
    ),
)
plain = st.one_of(text, st.integers(-3, 3), st.booleans(), st.none(), st.floats(allow_nan=False))
values_ = st.one_of(plain, st.lists(plain, max_size=3), st.dictionaries(text, plain, max_size=3))
names = st.sampled_from(
    ["video_id", "cms_id", "title", "categories", "season", "live", "client", "content_id", "x"]
)
properties = st.one_of(
    st.dictionaries(names, text, max_size=4),  # what URLs give: text only (kept)
    st.dictionaries(names, values_, max_size=4),  # what a host's JSON may give (not kept)
)
clients = st.one_of(st.none(), st.dictionaries(st.sampled_from(["url", "referrer", "type"]), plain))


@st.composite
def varied_contents(draw: st.DrawFn) -> Content:
    props: dict[str, Any] = draw(properties)
    client = draw(clients)
    if client is not None:
        props["client"] = client
    title: Any = draw(st.one_of(st.none(), text, st.integers(0, 1), st.booleans()))  # a host's
    return Content(
        url=draw(urls),
        properties=props,
        title=title,
        client_type=draw(st.one_of(st.none(), st.sampled_from(["", "web", "ctv"]))),
    )


# Fields of contents that differ in one thing only, often: a value and its look-alikes.
CLOSE_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "url": st.sampled_from(["https://v.example.com/w/1", None, "", "myapp://x/1"]),
    "properties": st.sampled_from(
        [
            {},
            {"video_id": "1"},
            {"video_id": 1},
            {"video_id": True},
            {"video_id": "1", "cms_id": "2"},
            {"episode_id": " 7 "},
            {"season": "x"},
            {"season": "2"},
            {"season": 2},
            {"live": "1"},
            {"live": True},
            {"live": 1},
            {"categories": "a,b"},
            {"title": "t"},
            {"client": {"url": "https://c.example.com/"}},
            {"client": "web"},
            {"content_id": "b"},
        ]
    ),
    "title": st.sampled_from([1, True, 1.0, "1", None, ""]),
    "client_type": st.sampled_from([None, "", "web"]),
}


@st.composite
def close_requests(draw: st.DrawFn) -> list[tuple[Content, str]]:
    """Requests about a content and its variants (one field changed) on a few platforms."""
    base = Content(**{name: draw(field) for name, field in CLOSE_FIELDS.items()})
    pool = [base]
    for name in draw(st.lists(st.sampled_from(sorted(CLOSE_FIELDS)), min_size=1, max_size=4)):
        pool.append(msgspec.structs.replace(base, **{name: draw(CLOSE_FIELDS[name])}))
    platforms = draw(st.lists(st.sampled_from(sorted(ADAPTERS)), min_size=1, max_size=2))
    pairs = st.tuples(st.sampled_from(pool), st.sampled_from(platforms))
    return draw(st.lists(pairs, min_size=2, max_size=12))


def _as_made(d: ContentDescription | None) -> str:
    """Everything a description tells the Direct API, as the calls would carry it (`repr`:
    1, 1.0 and True are equal, but are not sent alike)."""
    if d is None:
        return "None"
    made = (
        d.url,
        d.properties,
        d.title,
        d.client_type,
        d.section,
        d.client(),
        d.event_properties(),
        d.event_properties(client=False),
        d.contextual_request(),
        contextual_key(d.contextual_request()),
    )
    return repr(made)


def _contextual_signal() -> ContextualSignal:
    """A contextual signal that never calls out (only its cache and kept requests are used)."""
    backends: Any = None
    return ContextualSignal(
        CacheConfig(), Metrics(), Clock(), backends=backends, track=lambda t: None, late_after_s=1
    )


def _check_contextual(
    signal: ContextualSignal, got: ContentDescription, expected: ContentDescription
) -> None:
    """The kept Contextual request and key of a description are the ones made anew, and a
    fresh cached answer's outcome is that answer's, whichever came last."""
    about = signal._about(got)
    assert repr(about.request) == repr(expected.contextual_request())
    assert about.key == contextual_key(expected.contextual_request())
    for cohorts in (("1",), ("2",)):
        answer = Answer(cohorts)
        signal.cache.put(about.key, answer)
        outcome = signal.begin(got).outcome()
        assert (outcome.source, outcome.answer, outcome.reason) == ("cache", answer, "fresh_cache")
        assert outcome.answer is answer


def _check_kept(requests: list[tuple[Content, str]]) -> None:
    heard: list[str] = []
    kept = ContentDescriber(TYPES, heard.append)
    signal = _contextual_signal()
    for content, platform in requests * 2:  # every one again: from what was kept
        ctx, adapter = Context(content=content), ADAPTERS[platform]
        new: list[str] = []
        expected, bad = ContentDescriber(TYPES, new.append).describe(ctx, adapter)
        heard.clear()
        got = kept(ctx, adapter)
        assert _as_made(got) == _as_made(expected)
        assert heard == list(bad), "values that do not parse are reported on every use"
        assert _as_made(got) == _as_made(expected), "a kept description does not change"
        if got is not None and expected is not None:
            _check_contextual(signal, got, expected)


@settings(max_examples=300)
@given(close_requests())
def test_kept_descriptions_are_the_ones_made_anew(requests: list[tuple[Content, str]]) -> None:
    _check_kept(requests)


@given(st.lists(st.tuples(varied_contents(), st.sampled_from(sorted(ADAPTERS))), max_size=8))
def test_kept_descriptions_of_any_content_are_the_ones_made_anew(
    requests: list[tuple[Content, str]],
) -> None:
    _check_kept(requests)


HOST_TITLES: tuple[Any, ...] = (1, True, 1.0, "1", None, "")
"""Titles a host's JSON may give: equal as dict keys, not sent alike."""
LOOK_ALIKES = (
    [(Content(url="https://v.example.com/w/1", title=title), "gam") for title in HOST_TITLES]
    + [
        (Content(url="https://v.example.com/w/1", properties={"live": live}), "gam")
        for live in (1, True, 1.0, "1", "true")
    ]
    + [
        (Content(properties={"video_id": "1", "content_id": "1", "cms_id": "2"}), platform)
        for platform in sorted(ADAPTERS)
    ]
)


def test_look_alikes_are_not_taken_for_one_another() -> None:
    """1, 1.0 and True are equal keys in a dict but are sent differently; a content without
    URL is named by each platform's own content id rules."""
    _check_kept(LOOK_ALIKES)
    _check_kept(LOOK_ALIKES[::-1])


def test_a_kept_description_is_shared_and_hands_out_copies() -> None:
    kept = ContentDescriber(TYPES, lambda name: None)
    ctx = Context(content=Content(url="https://v.example.com/w/1", properties={"vid": "1"}))
    first, second = kept(ctx, ADAPTERS["gam"]), kept(ctx, ADAPTERS["gam"])
    assert first is second
    assert first is not None and second is not None
    client = first.client()
    client["url"] = "changed"
    assert first.client()["url"] == "https://v.example.com/w/1"
    assert first.event_properties()["client"] is not second.event_properties()["client"]


def test_a_description_keeps_only_as_many_as_it_may() -> None:
    kept = ContentDescriber(TYPES, lambda name: None)
    kept.MAX_KEPT = 3
    for i in range(10):
        ctx = Context(content=Content(url=f"https://v.example.com/w/{i}"))
        assert kept(ctx, ADAPTERS["gam"]) is not None
        assert len(kept._kept) <= 3


answers = st.one_of(
    st.none(),
    st.builds(
        Answer,
        st.lists(st.sampled_from("123456"), max_size=4).map(tuple),
        st.one_of(
            st.none(),
            st.lists(
                st.tuples(
                    st.sampled_from(["dfp", "gam", "freewheel", "x"]),
                    st.lists(st.sampled_from("123456"), max_size=4).map(tuple),
                ),
                max_size=3,
            ).map(tuple),
        ),
        st.one_of(st.none(), st.just("u-1")),
    ),
)
keys_configs = st.builds(
    KeysConfig,
    mode=st.sampled_from(["merge", "split"]),
    puid=st.one_of(st.none(), st.just("puid")),
)


@given(
    keys_configs,
    st.lists(st.tuples(answers, answers), min_size=1, max_size=6),
    st.sampled_from([("dfp", "gam"), ("freewheel",), ()]),
    st.booleans(),
)
def test_what_two_answers_write_is_worked_out_as_before(
    keys: KeysConfig,
    pairs: list[tuple[Answer | None, Answer | None]],
    platforms: tuple[str, ...],
    allowed: bool,
) -> None:
    plans = RememberedPlans(keys)
    for b, c in pairs * 2:
        b_codes = b.activated(platforms) if b is not None else []
        c_codes = c.activated(platforms) if c is not None else []
        puid = b.user_id if b is not None else None
        planned = plans(b, c, platforms)
        assert list(planned.b_codes) == b_codes and list(planned.c_codes) == c_codes
        written = planned.keyvalues()
        assert written == build_keyvalues(keys, b_codes, c_codes, puid)
        for values_out in written.values():
            values_out.append("changed by an adapter")
        assert planned.keyvalues() == build_keyvalues(keys, b_codes, c_codes, puid)
        assert plans.clear(allowed, bool(c_codes)) == keys_to_clear(keys, allowed, bool(c_codes))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@given(
    st.lists(
        st.tuples(st.sampled_from("abcde"), st.sampled_from(["put", "touch"]), st.floats(0, 40)),
        max_size=60,
    )
)
def test_touch_is_a_get_then_a_put_of_the_same_value(ops: list[tuple[str, str, float]]) -> None:
    clock = Clock()
    touched: AgedLru[int] = AgedLru(3, ttl=60, clock=clock)
    slow: AgedLru[int] = AgedLru(3, ttl=60, clock=clock)
    for i, (key, op, wait) in enumerate(ops):
        clock.now += wait
        if op == "put":
            touched.put(key, i)
            slow.put(key, i)
            continue
        got = touched.touch(key)
        expected = slow.get(key)
        if expected is not None:
            slow.put(key, expected)
        assert got == expected
        assert [(k, e.value, e.stamp) for k, e in touched._data.items()] == [
            (k, e.value, e.stamp) for k, e in slow._data.items()
        ]


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


def _metrics(
    registry: CollectorRegistry | None, deferred: bool = False
) -> tuple[Counter, Histogram]:
    counter_type, timer_type = (
        (DeferredCounter, DeferredHistogram) if deferred else (Counter, Histogram)
    )
    counter = counter_type("t_signal_total", "t", ["signal", "source"], registry=registry)
    timer = timer_type("t_seconds", "t", ["platform"], buckets=LATENCY_BUCKETS, registry=registry)
    return counter, timer


amounts = st.one_of(st.floats(0, 5), st.sampled_from([*LATENCY_BUCKETS, 0.0, float("nan")]))
ops_strategy = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["a", "b"]), amounts),
        st.just(("scrape", 0.0)),  # a scrape in between: the tallies so far are added
    ),
    max_size=30,
)


def _same(got: dict[Any, float], expected: dict[Any, float]) -> None:
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert got[name] == value or (value != value and got[name] != got[name])  # nan sums


@given(ops_strategy)
def test_counting_and_timing_read_as_inc_and_observe(ops: list[tuple[str, float]]) -> None:
    fast, slow = CollectorRegistry(), CollectorRegistry()
    (fast_counter, fast_timer), (slow_counter, slow_timer) = _metrics(fast), _metrics(slow)
    for label, amount in ops:
        if label == "scrape":
            continue
        counting(fast_counter.labels(label, "cache"))()
        timing(fast_timer.labels(label))(amount)
        slow_counter.labels(label, "cache").inc()
        slow_timer.labels(label).observe(amount)
    _same(_samples(fast), _samples(slow))


@given(ops_strategy)
def test_tallies_read_as_inc_and_observe_whenever_scraped(ops: list[tuple[str, float]]) -> None:
    fast, slow = CollectorRegistry(), CollectorRegistry()
    fast_counter, fast_timer = _metrics(fast, deferred=True)
    slow_counter, slow_timer = _metrics(slow)
    assert isinstance(fast_counter, DeferredCounter)
    assert isinstance(fast_timer, DeferredHistogram)
    counts = {label: fast_counter.tally(label, "cache") for label in ("a", "b")}
    times = {label: fast_timer.tally(label) for label in ("a", "b")}
    for label in ("a", "b"):  # a tally is made where the child is first used
        slow_counter.labels(label, "cache")
        slow_timer.labels(label)
    for label, amount in ops:
        if label == "scrape":
            assert _exposition(fast) == _exposition(slow)
            continue
        counts[label]()
        times[label](amount)
        slow_counter.labels(label, "cache").inc()
        slow_timer.labels(label).observe(amount)
        fast_counter.labels(label, "cache").inc()  # the public way still adds to the same value
        slow_counter.labels(label, "cache").inc()
    assert _exposition(fast) == _exposition(slow)
    labels = {"signal": "a", "source": "cache"}
    assert fast.get_sample_value("t_signal_total", labels) == slow.get_sample_value(
        "t_signal_total", labels
    )


def _exposition(registry: CollectorRegistry) -> list[bytes]:
    """/metrics as served, but for the creation times."""
    return [line for line in generate_latest(registry).splitlines() if b"_created" not in line]


def _filtered(registry: CollectorRegistry, name: str) -> list[tuple[str, float]]:
    """What a scrape asking for `name[]=name` only reads."""
    restricted = registry.restricted_registry([name])
    samples = [s for family in restricted.collect() for s in family.samples]
    return sorted(
        (s.name + repr(sorted(s.labels.items())), s.value)
        for s in samples
        if not s.name.endswith("_created")
    )


def test_a_name_filtered_scrape_reads_the_tallies_too() -> None:
    registry = CollectorRegistry()
    counter, timer = _metrics(registry, deferred=True)
    assert isinstance(counter, DeferredCounter) and isinstance(timer, DeferredHistogram)
    counter.tally("a", "cache")()
    timer.tally("gam")(0.004)
    assert _filtered(registry, "t_signal_total") == [
        ("t_signal_total[('signal', 'a'), ('source', 'cache')]", 1.0)
    ]
    buckets = dict(_filtered(registry, "t_seconds_bucket"))
    assert buckets["t_seconds_bucket[('le', '0.005'), ('platform', 'gam')]"] == 1.0


@pytest.mark.parametrize("deferred", [False, True])
def test_counting_and_timing_write_the_multiprocess_files(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, deferred: bool
) -> None:
    """`serve --workers N`: every worker's values are read from files (worker_metrics), at
    once: a tally there adds straight to the file."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    made = values.ValueClass
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    try:
        counter, timer = _metrics(None, deferred)
        if isinstance(counter, DeferredCounter) and isinstance(timer, DeferredHistogram):
            count, observe = counter.tally("behavioral", "cache"), timer.tally("gam")
        else:
            count, observe = (
                counting(counter.labels("behavioral", "cache")),
                timing(timer.labels("gam")),
            )
        count()
        count()
        observe(0.004)
    finally:
        values.ValueClass = made
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    labels = {"signal": "behavioral", "source": "cache"}
    assert registry.get_sample_value("t_signal_total", labels) == 2
    assert registry.get_sample_value("t_seconds_bucket", {"platform": "gam", "le": "0.005"}) == 1
    assert registry.get_sample_value("t_seconds_bucket", {"platform": "gam", "le": "0.0025"}) == 0
    assert registry.get_sample_value("t_seconds_sum", {"platform": "gam"}) == pytest.approx(0.004)
