"""The enricher end to end over real HTTP on loopback, against local Permutive stand-ins."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from plugin import Config, ConsentSignals, Content, Context, Enricher, Identity
from plugin.config import BehavioralConfig, ConfigError, KeysConfig
from plugin.identity import Alias
from tests.helpers.fakes import FakePermutive, config
from tests.helpers.samples import DEVICE, GAM_SAMPLE
from tests.helpers.waiting import until

GRANTED = ConsentSignals(override=True)
DENIED = ConsentSignals(override=False)


def ctx(content_url: str = "https://example.com/v/1", **kw: Any) -> Context:
    return Context(
        identity=kw.pop("identity", DEVICE),
        consent=kw.pop("consent", GRANTED),
        content=Content(url=content_url, properties={"video_id": "v1"}),
        **kw,
    )


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_gam_sample_tag_gains_cohorts_inside_cust_params(fake: FakePermutive) -> None:
    async with Enricher(config(fake)) as e:
        r = await e.enrich(GAM_SAMPLE, ctx())
    assert r.url == GAM_SAMPLE.replace(
        "cust_params=sample_ct%3Dlinear&",
        "cust_params=sample_ct%3Dlinear%26permutive%3D12345%2C67890%2C99999&",
    )
    assert r.keyvalues == {"permutive": ["12345", "67890", "99999"]}
    assert (r.behavioral.source, r.behavioral.cohorts) == ("live", ["12345", "67890"])
    assert (r.contextual.source, r.contextual.cohorts) == ("live", ["99999"])
    assert r.consent.allowed and r.platform == "gam"


async def test_ccs_request_carries_identity_and_play_event(fake: FakePermutive) -> None:
    async with Enricher(config(fake)) as e:
        await e.enrich(GAM_SAMPLE, ctx(view_id="a2b3c4d5-e6f7-4901-a345-6789abcdef01"))
    (call,) = fake.bodies["ccs"]
    assert call["query"] == {"activations": "true"}
    body = call["body"]
    assert body["alias"] == {"tag": "idfa", "id": "6D92078A-8246-4BA4-AE5B-76104861E7DC"}
    assert "user_id" not in body and "aliases" not in body
    (event,) = body["events"]
    assert event["name"] == "Videoview"
    assert event["view_id"] == "a2b3c4d5-e6f7-4901-a345-6789abcdef01"
    assert event["properties"] == {
        "video_id": "v1",
        "client": {"url": "https://example.com/v/1", "domain": "example.com"},
    }
    # no host session: one is generated per identity (a UUIDv4), never null
    assert uuid.UUID(event["session_id"]).version == 4
    (cbody,) = [b["body"] for b in fake.bodies["contextual"]]
    assert cbody["url"] == "https://example.com/v/1"
    assert cbody["page_properties"]["video"] == {"video_id": "v1"}
    assert "user" not in str(cbody["page_properties"]).lower().replace("user_agent", "")


async def test_split_mode_and_puid(fake: FakePermutive) -> None:
    cfg = config(fake, keys=KeysConfig(mode="split", puid="puid"))
    async with Enricher(cfg) as e:
        r = await e.enrich(GAM_SAMPLE, ctx())
    assert r.keyvalues == {
        "permutive": ["12345", "67890"],
        "prmtvctx": ["99999"],
        "puid": ["2008c38f-dece-4570-976d-87593ed001c3"],
    }


async def test_merge_deduplicates_keeping_behavioral_order(fake: FakePermutive) -> None:
    fake.ctx_default = {"cohorts": [], "activations": {"dfp": ["67890", "555"]}}
    async with Enricher(config(fake)) as e:
        r = await e.enrich(GAM_SAMPLE, ctx())
    assert r.keyvalues == {"permutive": ["12345", "67890", "555"]}


async def test_late_ccs_answer_falls_back_to_cache_then_refreshes_it(
    fake: FakePermutive,
) -> None:
    registry = CollectorRegistry()
    async with Enricher(config(fake, budget_ms=300), registry=registry) as e:
        first = await e.enrich(GAM_SAMPLE, ctx("https://example.com/v/1"))
        assert first.behavioral.source == "live"

        fake.delay["ccs"] = 2.0
        fake.ccs_answer = {**fake.ccs_answer, "activations": {"dfp": ["77777"]}}
        started = time.perf_counter()
        second = await e.enrich(GAM_SAMPLE, ctx("https://example.com/v/2"))
        took = time.perf_counter() - started
        assert took < 1.0, "the 2 s answer must not delay the result past the budget"
        assert (second.behavioral.source, second.behavioral.cohorts) == (
            "cache",
            ["12345", "67890"],
        )
        assert second.contextual.source == "live"

        late = lambda: sample(registry, "cohortkv_late_answers_total", api="ccs") == 1  # noqa: E731
        await until(late, what="the late answer lands")
        fake.status["ccs"] = 500
        fake.delay["ccs"] = 0.0
        third = await e.enrich(GAM_SAMPLE, ctx("https://example.com/v/3"))
        assert (third.behavioral.source, third.behavioral.cohorts) == ("cache", ["77777"])
    assert fake.calls["ccs"] == 3


async def test_consent_denied_makes_no_ccs_call_but_contextual_flows(
    fake: FakePermutive,
) -> None:
    async with Enricher(config(fake)) as e:
        r = await e.enrich(GAM_SAMPLE, ctx(consent=DENIED))
        r2 = await e.enrich(
            GAM_SAMPLE + "&gdpr=1", ctx("https://example.com/v/9", consent=ConsentSignals())
        )
    assert fake.calls["ccs"] == 0
    assert r.behavioral.source == "skipped" and r2.behavioral.source == "skipped"
    assert r.contextual.source == "live"
    assert r.keyvalues == {"permutive": ["99999"]}
    assert not r2.consent.allowed


async def test_single_flight_contextual(fake: FakePermutive) -> None:
    fake.delay["contextual"] = 0.05
    urls = [f"https://example.com/show/{i}" for i in range(10)]
    async with Enricher(config(fake, budget_ms=2000)) as e:
        results = await asyncio.gather(
            *(e.enrich(GAM_SAMPLE, ctx(urls[i % 10], consent=DENIED)) for i in range(1000))
        )
    assert fake.calls["contextual"] <= 10
    assert all(r.contextual.cohorts == ["99999"] for r in results)


async def test_fresh_contextual_answer_is_reused_within_ttl(fake: FakePermutive) -> None:
    async with Enricher(config(fake)) as e:
        a = await e.enrich(GAM_SAMPLE, ctx(consent=DENIED))
        b = await e.enrich(GAM_SAMPLE, ctx(consent=DENIED))
    assert (a.contextual.source, b.contextual.source) == ("live", "cache")
    assert fake.calls["contextual"] == 1


async def test_play_event_once_per_view(fake: FakePermutive) -> None:
    view = Context(
        identity=DEVICE,
        consent=GRANTED,
        content=Content(url="https://example.com/v/1"),
        ssai_session_id="mediatailor-session-42",
    )
    async with Enricher(config(fake)) as e:
        breaks = [await e.enrich(GAM_SAMPLE, view) for _ in range(3)]
        other_view = await e.enrich(
            GAM_SAMPLE, msgspec_replace(view, content=Content(url="https://example.com/v/2"))
        )
    assert fake.calls["ccs"] == 2
    assert [b.behavioral.source for b in breaks] == ["live", "cache", "cache"]
    assert breaks[2].behavioral.cohorts == breaks[0].behavioral.cohorts
    first, second = (c["body"]["events"][0] for c in fake.bodies["ccs"])
    # uuid5-derived ids: same SSAI session, different views
    assert first["session_id"] == second["session_id"]
    assert first["view_id"] != second["view_id"]
    assert other_view.behavioral.source == "live"


async def test_derived_ids_are_uuid5_and_generated_ones_uuid4(fake: FakePermutive) -> None:
    cfg = config(fake)
    ns = uuid.UUID(cfg.events.view_namespace)
    ssai = Context(
        identity=DEVICE,
        consent=GRANTED,
        content=Content(url="https://example.com/v/1"),
        ssai_session_id="mediatailor-session-42",
    )
    other = ctx("https://example.com/v/9", identity=Identity(alias=Alias(tag="idfa", id="D-2")))
    async with Enricher(cfg) as e:
        await e.enrich(GAM_SAMPLE, ssai)
        await e.enrich(GAM_SAMPLE, other)
    derived, generated = (c["body"]["events"][0] for c in fake.bodies["ccs"])
    assert derived["session_id"] == str(uuid.uuid5(ns, "ssai-session:mediatailor-session-42"))
    assert derived["view_id"] == str(
        uuid.uuid5(ns, "ssai-view:mediatailor-session-42|https://example.com/v/1")
    )
    for value in (generated["session_id"], generated["view_id"]):
        assert uuid.UUID(value).version == 4 and str(uuid.UUID(value)) == value


async def test_if_uncached_first_break_uses_the_cached_answer_and_still_plays(
    fake: FakePermutive,
) -> None:
    cfg = config(fake, behavioral=BehavioralConfig(wait="if_uncached"))
    async with Enricher(cfg) as e:
        earlier = await e.enrich(GAM_SAMPLE, ctx("https://example.com/v/1"))
        fake.ccs_answer = {**fake.ccs_answer, "activations": {"dfp": ["55555"]}}
        fake.delay["ccs"] = 0.05
        first = await e.enrich(GAM_SAMPLE, ctx("https://example.com/v/2"))
        second = await e.enrich(GAM_SAMPLE, ctx("https://example.com/v/2"))
    # Nothing cached: the first view's first break waited for its play event's answer.
    assert (earlier.behavioral.source, earlier.behavioral.reason) == ("live", "live")
    # A returning user's next view: its first break takes the cached answer at once ...
    assert (first.behavioral.source, first.behavioral.reason) == ("cache", "cache_first")
    assert first.behavioral.cohorts == ["12345", "67890"]
    # ... its play event still goes out, and that answer serves the view's later breaks.
    assert fake.calls["ccs"] == 2
    assert [b["body"]["events"][0]["name"] for b in fake.bodies["ccs"]] == ["Videoview"] * 2
    # (the second break came while that call was in flight: it shared it, answered live)
    assert (second.behavioral.source, second.behavioral.reason) == ("live", "view_reuse")
    assert second.behavioral.cohorts == ["55555"]


async def test_same_view_concurrent_ad_breaks_share_one_call(fake: FakePermutive) -> None:
    fake.delay["ccs"] = 0.05
    async with Enricher(config(fake)) as e:
        rs = await asyncio.gather(*(e.enrich(GAM_SAMPLE, ctx(view_id="v-1")) for _ in range(5)))
    assert fake.calls["ccs"] == 1
    assert all(r.behavioral.cohorts == ["12345", "67890"] for r in rs)


async def test_failed_play_event_is_retried_by_the_next_ad_break(fake: FakePermutive) -> None:
    fake.status["ccs"] = 503
    async with Enricher(config(fake)) as e:
        a = await e.enrich(GAM_SAMPLE, ctx(view_id="v-1"))
        fake.status["ccs"] = 200
        b = await e.enrich(GAM_SAMPLE, ctx(view_id="v-1"))
    assert (a.behavioral.source, b.behavioral.source) == ("none", "live")
    assert fake.calls["ccs"] == 2


async def test_upstream_garbage_is_counted_and_the_request_still_goes_out(
    fake: FakePermutive,
) -> None:
    registry = CollectorRegistry()
    fake.raw["ccs"] = b'{"user_id": 5, "cohorts": "nope"'
    fake.raw["contextual"] = b"<html>oops</html>"
    async with Enricher(config(fake), registry=registry) as e:
        r = await e.enrich(GAM_SAMPLE, ctx())
    assert r.url == GAM_SAMPLE and r.keyvalues == {}
    assert (r.behavioral.source, r.contextual.source) == ("none", "none")
    assert sample(registry, "cohortkv_upstream_errors_total", api="ccs", kind="decode") == 1
    assert sample(registry, "cohortkv_upstream_errors_total", api="contextual", kind="decode") == 1


async def test_unreachable_upstream_is_a_connect_error_not_an_exception() -> None:
    registry = CollectorRegistry()
    cfg = Config(api_key="k", ccs_url="http://127.0.0.1:9", ctx_url="http://127.0.0.1:9")
    async with Enricher(cfg, registry=registry) as e:
        r = await e.enrich(GAM_SAMPLE, ctx())
    assert r.url == GAM_SAMPLE
    assert sample(registry, "cohortkv_upstream_errors_total", api="ccs", kind="connect") == 1


async def test_url_no_adapter_knows_comes_back_unchanged(fake: FakePermutive) -> None:
    registry = CollectorRegistry()
    async with Enricher(config(fake), registry=registry) as e:
        r = await e.enrich("https://example.com/not/an/ad?x=1", ctx())
        r2 = await e.enrich("::::not a url", None)
    assert r.url == "https://example.com/not/an/ad?x=1" and r2.url == "::::not a url"
    assert fake.calls["ccs"] == 0 and fake.calls["contextual"] == 0
    assert r.recognised is False and r.keyvalues == {}
    assert r.behavioral.reason == r.contextual.reason == "not_recognised"
    assert (
        sample(
            registry,
            "cohortkv_not_recognised_total",
            origin="library",
            platform="auto",
            reason="no_adapter",
        )
        == 2
    )
    assert sample(registry, "cohortkv_enrich_seconds_count", platform="gam") == 0


async def test_unknown_platform_name_is_a_person_error(fake: FakePermutive) -> None:
    async with Enricher(config(fake)) as e:
        with pytest.raises(ValueError, match="gam"):
            await e.enrich(GAM_SAMPLE, platform="spotx")


async def test_metrics_match_what_was_driven(fake: FakePermutive) -> None:
    registry = CollectorRegistry()
    async with Enricher(config(fake), registry=registry) as e:
        await e.enrich(GAM_SAMPLE, ctx("https://example.com/a"))
        await e.enrich(GAM_SAMPLE, ctx("https://example.com/a", identity=None))
        await e.enrich(GAM_SAMPLE, ctx("https://example.com/b", consent=DENIED))
    s = lambda name, **kw: sample(registry, name, **kw)  # noqa: E731
    assert s("cohortkv_enrich_seconds_count", platform="gam") == 3
    b = {"signal": "behavioral"}
    c = {"signal": "contextual"}
    assert s("cohortkv_signal_source_total", **b, source="live", reason="live") == 1
    assert s("cohortkv_signal_source_total", **b, source="none", reason="no_identity") == 1
    assert s("cohortkv_signal_source_total", **b, source="skipped", reason="consent_denied") == 1
    assert s("cohortkv_signal_source_total", **c, source="live", reason="live") == 2
    assert s("cohortkv_signal_source_total", **c, source="cache", reason="fresh_cache") == 1
    assert s("cohortkv_upstream_seconds_count", api="ccs", outcome="ok") == 1
    assert s("cohortkv_upstream_seconds_count", api="contextual", outcome="ok") == 2
    assert s("cohortkv_consent_decisions_total", decision="allowed", reason="override_granted") == 2
    assert s("cohortkv_consent_decisions_total", decision="denied", reason="override_denied") == 1
    assert s("cohortkv_cache_entries", cache="behavioral") == 1
    assert s("cohortkv_cache_entries", cache="contextual") == 2
    # buckets run from 1 ms to 2.5 s
    assert (
        registry.get_sample_value(
            "cohortkv_upstream_seconds_bucket", {"api": "ccs", "outcome": "ok", "le": "0.001"}
        )
        is not None
    )
    assert (
        registry.get_sample_value(
            "cohortkv_upstream_seconds_bucket", {"api": "ccs", "outcome": "ok", "le": "2.5"}
        )
        == 1
    )


async def test_track_sends_batches_of_ten_in_order_for_consented_users(
    fake: FakePermutive,
) -> None:
    from plugin.permutive.wire import Event

    start = datetime.now(UTC) - timedelta(hours=1)
    events = [
        Event(
            name="VideoCompletion",
            time=(start - timedelta(minutes=i)).isoformat().replace("+00:00", "Z"),
            properties={"i": i},
        )
        for i in range(23)
    ]
    async with Enricher(config(fake)) as e:
        assert await e.track(events, identity=DEVICE, consent=False) == 0
        assert fake.calls["ccs"] == 0
        assert await e.track(events, identity=DEVICE, consent=GRANTED) == 23
    sizes = [len(c["body"]["events"]) for c in fake.bodies["ccs"]]
    assert sizes == [10, 10, 3]
    times = [ev["time"] for c in fake.bodies["ccs"] for ev in c["body"]["events"]]
    assert times == sorted(times)


async def test_no_api_key_refuses_to_start_unless_the_sandbox_is_asked_for() -> None:
    with pytest.raises(ConfigError, match=r"api_key.*COHORTKV_API_KEY.*sandbox = true"):
        Enricher(Config())
    async with Enricher(Config(sandbox=True)) as e:
        assert e.sandbox is not None
        r = await e.enrich(
            GAM_SAMPLE,
            Context(
                identity=DEVICE,
                consent=GRANTED,
                content=Content(
                    url="https://example.com/sport/football/highlights",
                    properties={"video_id": "v1", "categories": ["sports", "football"]},
                ),
            ),
        )
    assert r.behavioral.source == "live" and r.contextual.source == "live"
    assert r.keyvalues["permutive"], "the default workspace puts a sports viewer in cohorts"
    assert e.sandbox is None  # closed with the enricher


def msgspec_replace(c: Context, **kw: Any) -> Context:
    import msgspec

    return msgspec.structs.replace(c, **kw)


def _vector(name: str) -> str:
    import json
    from pathlib import Path

    vectors = json.loads((Path(__file__).parent / "vectors" / "tcf_vectors.json").read_text())
    return next(v["tc_string"] for v in vectors if v["name"] == name)


@pytest.mark.parametrize(
    ("vector", "allowed"),
    [
        ("bitfield_even_vendors_without_361", False),
        ("range_without_361_gap", False),
        ("bitfield_purpose1_off", False),
        ("bitfield_odd_vendors_with_361", True),
        ("range_single_361_all_purposes", True),
    ],
)
async def test_tc_string_on_the_ad_request_gates_the_ccs_call(
    fake: FakePermutive, vector: str, allowed: bool
) -> None:
    url = f"{GAM_SAMPLE}&gdpr=1&gdpr_consent={_vector(vector)}&rdid=6D92078A&idtype=idfa"
    url += "&url=https%3A%2F%2Fexample.com%2Fv%2F1"
    async with Enricher(config(fake)) as e:
        r = await e.enrich(url)
    assert r.consent.allowed is allowed, r.consent
    assert fake.calls["ccs"] == (1 if allowed else 0)
    assert fake.calls["contextual"] == 1 and r.contextual.source == "live"
    assert r.behavioral.source == ("live" if allowed else "skipped")


async def test_concurrent_first_calls_start_one_session() -> None:
    """Three first `enrich()` calls at once on a fresh Enricher share one start: one HTTP
    session (the lean client), one set of clients, nothing leaked."""
    from plugin.httpclient import HttpClient

    made: list[HttpClient] = []
    real_init = HttpClient.__init__

    def counting_init(self: HttpClient, *a: Any, **kw: Any) -> None:
        made.append(self)
        real_init(self, *a, **kw)

    e = Enricher(Config(sandbox=True))  # the sandbox's start awaits: the calls interleave
    HttpClient.__init__ = counting_init  # type: ignore[method-assign]
    try:
        rs = await asyncio.gather(
            *(e.enrich(GAM_SAMPLE, ctx(f"https://x.example/{i}")) for i in range(3))
        )
    finally:
        HttpClient.__init__ = real_init  # type: ignore[method-assign]
        await e.close()
    assert all(r.behavioral.source == "live" for r in rs)
    assert len(made) == 1
    assert all(c.closed for c in made)


async def test_an_adapter_that_raises_is_counted_logged_and_the_request_still_goes_out(
    fake: FakePermutive, caplog: pytest.LogCaptureFixture
) -> None:
    from adapters.base import Parsed
    from adapters.gam import GamAdapter
    from plugin.request import Applied

    class Broken(GamAdapter):
        def _apply(self, parsed: Parsed, keyvalues: Any, cohorts_for: Any) -> Applied:
            raise RuntimeError("boom: " + parsed.request.url)  # must not reach the logs

    registry = CollectorRegistry()
    async with Enricher(config(fake), registry=registry) as e:
        broken = Broken(on_error=e.accounting.adapter_failed)
        e.adapters = (broken, *e.adapters[1:])
        with caplog.at_level(logging.WARNING, "cohortkv.enricher"):
            r = await e.enrich(GAM_SAMPLE, ctx())
    assert r.url == GAM_SAMPLE and r.keyvalues == {}  # out unchanged, and says so
    assert r.behavioral.source == "live"  # the signals still ran
    labels = {"platform": "gam", "stage": "apply"}
    assert registry.get_sample_value("cohortkv_adapter_errors_total", labels) == 1
    (line,) = [rec.getMessage() for rec in caplog.records if "adapter gam" in rec.getMessage()]
    assert "RuntimeError" in line and "boom" not in line
