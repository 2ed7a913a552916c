"""What goes over the wire, held against the Direct API guide, with a recording fake of both APIs.

Each test drives cohortkv the way a host does (the library, the sidecar's proxy and
`/v1/events`) and asserts on exactly what the fake CCS and Contextual APIs received.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from plugin import Config, ConsentSignals, Content, Context, Enricher, Identity
from plugin.config import EventsConfig, HttpConfig, KeysConfig, ServeConfig, UpstreamConfig
from plugin.identity import Alias
from plugin.observe.metrics import Metrics
from plugin.permutive.clients import CcsClient, UpstreamError, make_session
from plugin.permutive.delivery import delivery
from plugin.permutive.wire import CcsRequest, Event
from plugin.request import AdRequest
from plugin.signals.tracker import EventIds
from tests.helpers.fake_adserver import FakeAdServer, running, sidecar_config
from tests.helpers.fakes import API_KEY, FakePermutive, closed_port, config
from tests.helpers.times import recent
from tests.helpers.waiting import until

GRANTED = ConsentSignals(override=True)
DEVICE = Identity(alias=Alias(tag="tifa", id="a1b2c3d4-e5f6-7890-abcd-ef1234567890"))
GAM = "https://pubads.g.doubleclick.net/gampad/ads?iu=/1/ctv&output=vast"
AW = "https://demo.deliveryengine.adswizz.com/vast/4.0/request/alias/morning-show"
GUIDE_VIEW = "a2b3c4d5-e6f7-8901-2345-6789abcdef01"
GUIDE_SESSION = "f47ac10b-58cc-4372-a567-0e02b2c3d479"
USER = "2b1e6c7a-4d3f-4e8a-9b2c-1d0e9f8a7b6c"
_NS = uuid.UUID(Config().events.view_namespace)


def granted(**kw: Any) -> Context:
    return Context(identity=DEVICE, consent=GRANTED, **kw)


def answer(*codes: str) -> dict[str, Any]:
    return {"user_id": USER, "cohorts": list(codes), "activations": {"dfp": list(codes)}}


# -- 1. the play event describes the content; the Contextual request mirrors it ----------------


async def test_the_play_event_carries_client_and_the_contextual_request_mirrors_it(
    fake: FakePermutive,
) -> None:
    url = GAM + "&description_url=https%3A%2F%2Fexample.com%2Fsport%2Fpl-week-20&vid=vid_456"
    content = Content(
        title="Highlights: Premier League Week 20",
        properties={"categories": ["sports", "football"], "duration_seconds": 600},
        client_type="ctv",
    )
    async with Enricher(config(fake)) as e:
        await e.enrich(url, granted(content=content))
    (play,) = fake.events()
    client = {
        "url": "https://example.com/sport/pl-week-20",
        "domain": "example.com",
        "title": "Highlights: Premier League Week 20",
        "type": "ctv",
    }
    video = {
        "video_id": "vid_456",
        "categories": ["sports", "football"],
        "duration_seconds": 600,
        "title": "Highlights: Premier League Week 20",
    }
    assert play["name"] == "Videoview"
    assert play["properties"] == {**video, "client": client}
    (ctx_body,) = fake.contextual_bodies()
    assert ctx_body == {
        "url": "https://example.com/sport/pl-week-20",
        "page_properties": {"client": client, "video": video},
    }
    assert DEVICE.alias.id not in str(ctx_body)


async def test_events_client_false_leaves_client_out_of_the_play_event_only(
    fake: FakePermutive,
) -> None:
    cfg = config(fake, events=EventsConfig(client=False))
    async with Enricher(cfg) as e:
        await e.enrich(GAM + "&description_url=https%3A%2F%2Fexample.com%2Fv%2F1&vid=v1", granted())
    (play,) = fake.events()
    assert play["properties"] == {"video_id": "v1"}
    (ctx_body,) = fake.contextual_bodies()
    assert ctx_body["page_properties"]["client"] == {
        "url": "https://example.com/v/1",
        "domain": "example.com",
    }


# -- 2. a view is one piece of content, even without a URL -------------------------------------


async def test_adswizz_episodes_of_one_zone_are_three_views(fake: FakePermutive) -> None:
    async with Enricher(config(fake)) as e:
        for ep in ("ep1", "ep2", "ep3", "ep1"):
            await e.enrich(f"{AW}?aw_0_1st.episode_id={ep}", granted())
        zone_only = await e.enrich(AW, granted())
    plays = fake.events()
    assert [p["name"] for p in plays] == ["AudioPlay"] * 3
    assert [p["properties"]["episode_id"] for p in plays] == ["ep1", "ep2", "ep3"]
    assert len({p["view_id"] for p in plays}) == 3
    assert [b["url"] for b in fake.contextual_bodies()] == [
        "adswizz://episode/ep1",
        "adswizz://episode/ep2",
        "adswizz://episode/ep3",
    ]
    assert all(p["properties"]["client"]["url"].startswith("adswizz://episode/") for p in plays)
    # A zone is an ad placement, never content: nothing to send a play event about.
    assert (zone_only.behavioral.reason, zone_only.contextual.reason) == ("no_content",) * 2


async def test_gam_videos_without_a_url_are_views_of_their_ids(fake: FakePermutive) -> None:
    async with Enricher(config(fake)) as e:
        for vid in ("v1", "v2", "v3"):
            await e.enrich(f"{GAM}&cmsid=2553&vid={vid}", granted())
        await e.enrich(f"{GAM}&vid=v9", granted())
        again = await e.enrich(f"{GAM}&cmsid=2553&vid=v2", granted())
    plays = fake.events()
    assert [p["properties"]["video_id"] for p in plays] == ["v1", "v2", "v3", "v9"]
    assert len({p["view_id"] for p in plays}) == 4
    assert [b["url"] for b in fake.contextual_bodies()] == [
        "gam://2553/v1",
        "gam://2553/v2",
        "gam://2553/v3",
        "gam://video/v9",
    ]
    assert again.behavioral.reason == "view_reuse"


@pytest.mark.parametrize(
    ("platform", "request_", "key"),
    [
        ("freewheel", "https://x.v.fwmrm.net/ad/g/1?nw=381747&caid=ep%2F7;;", None),
        ("query", "https://vast.example.com/ads?content_id=c-42", "query://content/c-42"),
        ("gam", GAM + "&cmsid=2553", None),
    ],
)
async def test_content_ids_per_platform(
    fake: FakePermutive, platform: str, request_: str, key: str | None
) -> None:
    async with Enricher(config(fake)) as e:
        r = await e.enrich(request_, granted(), platform=platform)
    urls = [b["url"] for b in fake.contextual_bodies()]
    if platform == "freewheel":
        assert urls == ["freewheel://381747/asset/ep%2F7"]
    elif key is None:  # a CMS id alone names no video
        assert (urls, r.behavioral.reason) == ([], "no_content")
    else:
        assert urls == [key]


async def test_openrtb_content_id_alone_is_content(fake: FakePermutive) -> None:
    body = {"id": "a", "imp": [{"id": "1"}], "site": {"content": {"id": "match-77"}}}
    ad = AdRequest(
        "https://pbs.example.com/openrtb2/auction",
        method="POST",
        headers=(("Content-Type", "application/json"),),
        body=json.dumps(body).encode(),
    )
    async with Enricher(config(fake)) as e:
        await e.enrich(ad, granted())
    assert [b["url"] for b in fake.contextual_bodies()] == ["openrtb://content/match-77"]


async def test_a_mapped_id_property_from_the_host_names_the_content(
    fake: FakePermutive, ads: FakeAdServer
) -> None:
    upstreams = {"vast": UpstreamConfig(url=ads.url, platform="query")}
    async with running(sidecar_config(fake, ads, upstreams=upstreams)) as side:
        target = (
            f"/proxy/vast/ads?pod=1&cohortkv_uid={USER}&cohortkv_consent=granted"
            "&cohortkv_p.video_id=show-9"
        )
        assert (await side.client.get(target)).status == 200
    assert [b["url"] for b in fake.contextual_bodies()] == ["query://content/show-9"]
    (play,) = fake.events()
    assert play["properties"]["video_id"] == "show-9"


# -- 3. the host's own play event -----------------------------------------------------------------


async def test_a_host_play_event_opens_the_view_and_its_ad_requests_send_none(
    fake: FakePermutive,
) -> None:
    content = "https://example.com/v/7"
    fake.replies["ccs"] = [answer("play-1"), answer("other")]
    play = Event(name="Videoview", time=recent(), properties={"video_id": "v7"})
    async with Enricher(config(fake)) as e:
        assert await e.track(
            [play], identity=DEVICE, consent=True, ids=EventIds(content_url=content)
        )
        first = await e.enrich(
            GAM + "&description_url=https%3A%2F%2Fexample.com%2Fv%2F7", granted()
        )
        other = await e.enrich(
            GAM + "&description_url=https%3A%2F%2Fexample.com%2Fv%2F8", granted()
        )
    played, other_play = fake.events()
    assert played["name"] == "Videoview" and played["properties"] == {"video_id": "v7"}
    # The view's ad request sent nothing: the host's play event's answer served it.
    assert (first.behavioral.source, first.behavioral.reason) == ("cache", "view_reuse")
    assert first.behavioral.cohorts == ["play-1"]
    assert other.behavioral.reason == "live"  # another content: its own view and play event
    assert played["view_id"] != other_play["view_id"]


async def test_a_host_play_event_after_the_ad_request_is_not_sent_again(
    fake: FakePermutive, ads: FakeAdServer
) -> None:
    async with running(sidecar_config(fake, ads)) as side:
        target = (
            "/proxy/gam/gampad/ads?iu=/1/x&description_url=https%3A%2F%2Fexample.com%2Fv%2F5"
            f"&cohortkv_uid={USER}&cohortkv_consent=granted"
        )
        assert (await side.client.get(target)).status == 200
        body = {
            "identity": {"user_id": USER},
            "consent": {"granted": True},
            "content_url": "https://example.com/v/5",
            "events": [
                {"name": "Videoview", "time": recent(1), "properties": {"video_id": "v5"}},
                {"name": "VideoCompletion", "time": recent(9), "properties": {"video_id": "v5"}},
            ],
        }
        resp = await side.client.post("/v1/events", json=body)
        assert resp.status == 202
        assert await resp.json() == {
            "accepted": 1,
            "reason": "override_granted",
            "duplicate_play_events": 1,
        }
        await until(lambda: side.sample("cohortkv_events_total", state="sent") == 1)
        assert side.sample("cohortkv_host_play_events_total", outcome="duplicate") == 1
    play, completion = fake.events()
    assert [play["name"], completion["name"]] == ["Videoview", "VideoCompletion"]
    assert completion["view_id"] == play["view_id"]


@pytest.mark.parametrize("ad_request_first", [False, True])
async def test_a_host_play_event_the_queue_refused_is_sent_when_the_host_retries(
    fake: FakePermutive, ads: FakeAdServer, ad_request_first: bool
) -> None:
    """A 503 takes none of the events: the view the refused play event opened is let go (or,
    when the view's own play event had been refused, left as it was), so the host's retry
    sends it (it is not a duplicate) and the view's ad request sends none."""
    target = (
        "/proxy/gam/gampad/ads?iu=/1/x&description_url=https%3A%2F%2Fexample.com%2Fv%2F6"
        f"&cohortkv_uid={USER}&cohortkv_consent=granted"
    )
    # The filler's call holds the queue's only place; first, maybe, a refused play event.
    fake.replies["ccs"] = [400, ("slow", 1.0)] if ad_request_first else [("slow", 1.0)]
    cfg = sidecar_config(fake, ads, events_queue_max=1, events_workers=1)
    async with running(cfg) as side:
        if ad_request_first:
            assert (await side.client.get(target)).status == 200
            await until(lambda: fake.calls["ccs"] == 1)
        filler = {
            "identity": {"user_id": str(uuid.uuid4())},
            "consent": {"granted": True},
            "events": [{"name": "VideoCompletion", "time": recent(0), "properties": {}}],
        }
        assert (await side.client.post("/v1/events", json=filler)).status == 202
        body = {
            "identity": {"user_id": USER},
            "consent": {"granted": True},
            "content_url": "https://example.com/v/6",
            "events": [{"name": "Videoview", "time": recent(1), "properties": {"video_id": "v6"}}],
        }
        refused = await side.client.post("/v1/events", json=body)
        assert refused.status == 503
        await until(lambda: side.sample("cohortkv_events_queue_depth") == 0)
        again = await side.client.post("/v1/events", json=body)
        assert (again.status, await again.json()) == (
            202,
            {"accepted": 1, "reason": "override_granted"},
        )
        await until(lambda: side.sample("cohortkv_events_total", state="sent") == 2)
        assert (await side.client.get(target)).status == 200
        assert side.sample("cohortkv_host_play_events_total", outcome="duplicate") == 0
    names = [e["name"] for e in fake.events()]
    played = ["VideoCompletion", "Videoview"]  # the view's ad requests sent no more
    assert names == (["Videoview", *played] if ad_request_first else played)


# -- 4. the host's ids are kept ---------------------------------------------------------------


async def test_host_uuids_of_any_version_are_used_as_given(fake: FakePermutive) -> None:
    url = GAM + "&description_url=https%3A%2F%2Fexample.com%2Fv%2F1"
    ns = uuid.UUID(Config().events.view_namespace)
    async with Enricher(config(fake)) as e:
        await e.enrich(url, granted(view_id=GUIDE_VIEW, session_id=GUIDE_SESSION))
        completion = Event(
            name="VideoCompletion",
            time=recent(),
            properties={"percentage_watched": 0.75},
            view_id=GUIDE_VIEW,
            session_id=GUIDE_SESSION,
        )
        await e.track([completion], identity=DEVICE, consent=True)
        await e.enrich(url, granted(view_id="player-view-7", session_id="player-session-7"))
    play, done, mapped = fake.events()
    assert (play["view_id"], play["session_id"]) == (GUIDE_VIEW, GUIDE_SESSION)
    assert (done["view_id"], done["session_id"]) == (GUIDE_VIEW, GUIDE_SESSION)
    assert mapped["view_id"] == str(uuid.uuid5(ns, "view:player-view-7"))
    assert mapped["session_id"] == str(uuid.uuid5(ns, "session:player-session-7"))


# -- 5. the freshest answer wins ------------------------------------------------------------------


async def test_a_post_roll_after_the_completion_gets_the_completions_answer(
    fake: FakePermutive,
) -> None:
    url = GAM + "&description_url=https%3A%2F%2Fexample.com%2Fv%2F1"
    fake.replies["ccs"] = [answer("10000"), answer("10000", "10003")]
    done = Event(name="VideoCompletion", time=recent(), properties={"percentage_watched": 0.6})
    async with Enricher(config(fake)) as e:
        pre = await e.enrich(url, granted())
        await e.track(
            [done],
            identity=DEVICE,
            consent=True,
            ids=EventIds(content_url="https://example.com/v/1"),
        )
        post = await e.enrich(url, granted())
    assert pre.behavioral.cohorts == ["10000"]
    assert (post.behavioral.reason, post.behavioral.cohorts) == ("view_reuse", ["10000", "10003"])
    assert fake.calls["ccs"] == 2


async def test_a_late_play_answer_never_undoes_a_newer_one(fake: FakePermutive) -> None:
    url = GAM + "&description_url=https%3A%2F%2Fexample.com%2Fv%2F1"
    # The play event's answer comes after the budget; the completion's, sent later, before it.
    fake.replies["ccs"] = [("hang", 0.6), answer("newer")]
    fake.ccs_answer = answer("older")
    done = Event(name="VideoCompletion", time=recent(), properties={"percentage_watched": 0.6})
    async with Enricher(config(fake, budget_ms=100)) as e:
        pre = await e.enrich(url, granted())
        assert pre.behavioral.reason == "cache_fallback_timeout"
        await e.track([done], identity=DEVICE, consent=True)
        late = {"api": "ccs"}
        await until(
            lambda: e.metrics.registry.get_sample_value("cohortkv_late_answers_total", late) == 1
        )
        post = await e.enrich(url, granted())
    assert post.behavioral.cohorts == ["newer"]


# -- 6. events are never duplicated by our retries ----------------------------------------------


async def test_a_batch_that_timed_out_after_sending_is_not_sent_again(
    fake: FakePermutive, ads: FakeAdServer
) -> None:
    fake.replies["ccs"] = [("hang", 0.5)]
    cfg = sidecar_config(fake, ads, events_backoff_ms=1)
    cfg = cfg.with_overrides(http=HttpConfig(request_timeout_s=0.2))
    done = {"name": "VideoCompletion", "time": recent(), "properties": {"video_id": "v1"}}
    body = {"identity": {"user_id": USER}, "consent": {"granted": True}, "events": [done]}
    async with running(cfg) as side:
        assert (await side.client.post("/v1/events", json=body)).status == 202
        await until(lambda: side.sample("cohortkv_events_total", state="uncertain") == 1)
        assert side.sample("cohortkv_events_total", state="retried") == 0
    assert [e["name"] for e in fake.events()] == ["VideoCompletion"]


@pytest.mark.parametrize("reply", [503, 429, "drop", 500])
async def test_only_what_provably_was_not_processed_is_sent_again(
    fake: FakePermutive, ads: FakeAdServer, reply: Any
) -> None:
    fake.replies["ccs"] = [reply]
    if reply == 503:
        fake.headers["ccs"] = {"Retry-After": "0"}
    done = {"name": "VideoCompletion", "time": recent(), "properties": {"video_id": "v1"}}
    body = {"identity": {"user_id": USER}, "consent": {"granted": True}, "events": [done]}
    async with running(sidecar_config(fake, ads, events_backoff_ms=1)) as side:
        assert (await side.client.post("/v1/events", json=body)).status == 202
        settled = ("sent", "uncertain")
        await until(lambda: sum(side.sample("cohortkv_events_total", state=s) for s in settled))
        if reply in (503, 429):
            assert fake.calls["ccs"] == 2 and side.sample("cohortkv_events_total", state="sent")
        else:  # the API may have processed it: never twice
            assert fake.calls["ccs"] == 1
            assert side.sample("cohortkv_events_total", state="uncertain") == 1


async def test_retry_always_trades_duplicates_for_no_loss(
    fake: FakePermutive, ads: FakeAdServer
) -> None:
    fake.replies["ccs"] = [500]
    cfg = sidecar_config(fake, ads, events_backoff_ms=1)
    cfg = cfg.with_overrides(events=EventsConfig(retry="always"))
    done = {"name": "VideoCompletion", "time": recent(), "properties": {"video_id": "v1"}}
    body = {"identity": {"user_id": USER}, "consent": {"granted": True}, "events": [done]}
    async with running(cfg) as side:
        assert (await side.client.post("/v1/events", json=body)).status == 202
        await until(lambda: side.sample("cohortkv_events_total", state="sent") == 1)
    assert fake.calls["ccs"] == 2


async def test_what_a_failed_call_says_about_its_events(fake: FakePermutive) -> None:
    """Refused connections never reached the API; a dropped connection after the request may
    have: the client tells them apart."""
    cfg = config(fake)
    request = CcsRequest(events=[Event(name="e", time=recent(), properties={})], user_id=USER)
    async with make_session(4, 4, 1.0) as session:
        metrics = Metrics(CollectorRegistry())
        refused = CcsClient(
            session, f"http://127.0.0.1:{closed_port()}", API_KEY, metrics, cfg.http
        )
        dropped = CcsClient(session, fake.url, API_KEY, metrics, cfg.http)
        fake.replies["ccs"] = ["drop"]
        with pytest.raises(UpstreamError) as no_connection:
            await refused.segment(request)
        with pytest.raises(UpstreamError) as lost:
            await dropped.segment(request)
    assert (no_connection.value.kind, delivery(no_connection.value)) == ("connect", "unsent")
    assert delivery(lost.value) == "uncertain"


# -- 7. a failed play event is not re-sent by every break ----------------------------------------


@pytest.mark.parametrize(
    ("reply", "calls", "reasons"),
    [
        (400, 1, ["cache_fallback_error", "play_rejected", "play_rejected"]),
        (500, 2, ["cache_fallback_error", "live", "view_reuse"]),
        (503, 2, ["cache_fallback_error", "live", "view_reuse"]),
    ],
)
async def test_a_failed_play_event_and_the_views_later_breaks(
    fake: FakePermutive, reply: int, calls: int, reasons: list[str]
) -> None:
    url = GAM + "&description_url=https%3A%2F%2Fexample.com%2Fv%2F1"
    fake.replies["ccs"] = [reply]
    async with Enricher(config(fake)) as e:
        breaks = [await e.enrich(url, granted(view_id="v-1")) for _ in range(3)]
    assert fake.calls["ccs"] == calls
    assert [b.behavioral.reason for b in breaks] == reasons
    assert {ev["view_id"] for ev in fake.events()} == {str(uuid.uuid5(_NS, "view:v-1"))}


async def test_a_play_event_that_fails_twice_uncertainly_is_not_sent_a_third_time(
    fake: FakePermutive,
) -> None:
    url = GAM + "&description_url=https%3A%2F%2Fexample.com%2Fv%2F1"
    fake.replies["ccs"] = [502, 500]
    async with Enricher(config(fake)) as e:
        breaks = [await e.enrich(url, granted()) for _ in range(4)]
    assert fake.calls["ccs"] == 2
    assert [b.behavioral.reason for b in breaks][2:] == ["play_failed", "play_failed"]
    first, second = fake.events()
    assert first["view_id"] == second["view_id"]  # the retry is the same view's play event


# -- 8. an answer without user_id is still used -----------------------------------------------


async def test_a_ccs_answer_without_user_id_is_used(fake: FakePermutive) -> None:
    fake.ccs_answer = {"cohorts": ["12345"], "activations": {"dfp": ["12345"]}}
    async with Enricher(config(fake)) as e:
        r = await e.enrich(GAM + "&description_url=https%3A%2F%2Fexample.com%2Fv%2F1", granted())
    assert (r.behavioral.source, r.behavioral.cohorts) == ("live", ["12345"])


# -- the sandbox evaluates cohorts on client.url / client.title --------------------------------


async def test_sandbox_cohorts_on_client_url_and_title_are_entered_through_the_proxy(
    ads: FakeAdServer,
) -> None:
    """The shipped workspace's 10011 (`client.url` contains /sport/) and 10012 (`client.title`
    contains Highlights), activated for FreeWheel: a proxied ad request's play event enters
    them, and a viewer of a news page without that title enters neither."""
    cfg = Config(
        sandbox=True,
        keys=KeysConfig(mode="split"),
        serve=ServeConfig(upstreams={"freewheel": ads.url}),
    )

    async def behavioral(content: str, user: str, extra: str = "") -> set[str]:
        target = (
            f"/proxy/freewheel/ad/g/1?nw=1&caid={content}"
            f";_fw_content_url=https%3A%2F%2Fexample.com%2F{content}{extra}"
            f"&cohortkv_uid={user}&cohortkv_consent=granted;slid=pre"
        )
        assert (await side.client.get(target)).status == 200
        kv = ads.last.query.split(";")[1]
        return {v for k, _, v in (p.partition("=") for p in kv.split("&")) if k == "permutive"}

    async with running(cfg) as side:
        sport = await behavioral("sport%2Fcup-final", USER, "&cohortkv_p.title=Cup%20Highlights")
        news = await behavioral("news%2Fbudget", "3f0c9a4e-8b1d-4c7a-9e2f-5d6b7a8c9d0e")
    assert {"10011", "10012"} <= sport
    assert not {"10011", "10012"} & news
    assert "10000" in news  # its play event did count: any Videoview


async def test_a_host_play_event_stands_in_for_an_ad_requests_play_event_that_did_not_land(
    fake: FakePermutive,
) -> None:
    url = GAM + "&description_url=https%3A%2F%2Fexample.com%2Fv%2F1"
    fake.replies["ccs"] = [400]  # the ad request's play event is refused
    play = Event(name="Videoview", time=recent(), properties={"video_id": "v1"})
    ids = EventIds(content_url="https://example.com/v/1")
    async with Enricher(config(fake)) as e:
        await e.enrich(url, granted())
        assert await e.track([play], identity=DEVICE, consent=True, ids=ids) == 1
        later = await e.enrich(url, granted())
    refused, host = fake.events()
    assert host["view_id"] == refused["view_id"]
    assert (later.behavioral.reason, later.behavioral.source) == ("view_reuse", "cache")
