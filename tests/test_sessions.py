"""Sessions and views as the Direct API guide defines them, end to end through the Enricher:
what the CCS API receives (session ids, view ids, play events) as time passes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from plugin import Config, ConsentSignals, Content, Context, Enricher, Identity
from plugin.identity import Alias
from plugin.permutive.wire import Event
from plugin.signals.tracker import EventIds
from tests.helpers.fakes import API_KEY, FakePermutive
from tests.helpers.times import recent

GAM = "https://pubads.g.doubleclick.net/gampad/ads?iu=/1/x&sz=640x480&output=vast"
DEVICE = Identity(alias=Alias(tag="idfa", id="6D92078A-8246-4BA4-AE5B-76104861E7DC"))
OTHER = Identity(alias=Alias(tag="idfa", id="0F3C3A0B-1A7C-4D9E-9B6F-2C1D5E8A7B90"))
GRANTED = ConsentSignals(override=True)
MIN = 60.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, minutes: float) -> None:
        self.now += minutes * MIN


@pytest.fixture
async def fake() -> AsyncIterator[FakePermutive]:
    async with FakePermutive() as f:
        yield f


@pytest.fixture
def clock() -> Clock:
    return Clock()


def enricher(fake: FakePermutive, clock: Clock, **cfg: Any) -> Enricher:
    config = Config(api_key=API_KEY, ccs_url=fake.url, ctx_url=fake.url, **cfg)
    return Enricher(config, clock=clock)


def ctx(content: str, identity: Identity = DEVICE, **kw: Any) -> Context:
    props = kw.pop("properties", {"video_id": content.rsplit("/", 1)[-1]})
    return Context(
        identity=identity,
        consent=GRANTED,
        content=Content(url=content, properties=props),
        **kw,
    )


def play_events(fake: FakePermutive) -> list[dict[str, Any]]:
    """Every event the CCS API received, in order."""
    return [ev for call in fake.bodies["ccs"] for ev in call["body"]["events"]]


def is_uuid4(value: Any) -> bool:
    return isinstance(value, str) and uuid.UUID(value).version == 4


async def test_a_view_is_one_engagement_and_a_session_spans_views(
    fake: FakePermutive, clock: Clock
) -> None:
    async with enricher(fake, clock) as e:
        first = await e.enrich(GAM, ctx("https://example.com/v/a"))  # pre-roll
        clock.advance(10)
        mid = await e.enrich(GAM, ctx("https://example.com/v/a"))  # mid-roll, same view
        clock.advance(10)
        await e.enrich(GAM, ctx("https://example.com/v/b"))  # the next video
    assert (first.behavioral.reason, mid.behavioral.reason) == ("live", "view_reuse")
    a, b = play_events(fake)  # one play event per view, none for the mid-roll
    assert a["name"] == b["name"] == "Videoview"
    assert is_uuid4(a["session_id"]) and a["session_id"] == b["session_id"]
    assert is_uuid4(a["view_id"]) and is_uuid4(b["view_id"]) and a["view_id"] != b["view_id"]


async def test_the_other_requests_of_a_break_share_the_play_events_live_answer(
    fake: FakePermutive, clock: Clock
) -> None:
    # One ad break asked of several ad servers at once: one play event, and the requests that
    # wait on its call get its answer as it comes in, live, not as a cached one.
    async with enricher(fake, clock) as e:
        first, other = await asyncio.gather(
            e.enrich(GAM, ctx("https://example.com/v/a")),
            e.enrich(GAM, ctx("https://example.com/v/a")),
        )
        clock.advance(1)
        later = await e.enrich(GAM, ctx("https://example.com/v/a"))  # the next break
    assert (first.behavioral.source, first.behavioral.reason) == ("live", "live")
    assert (other.behavioral.source, other.behavioral.reason) == ("live", "view_reuse")
    assert (later.behavioral.source, later.behavioral.reason) == ("cache", "view_reuse")
    assert other.behavioral.cohorts == later.behavioral.cohorts == first.behavioral.cohorts
    assert len(play_events(fake)) == 1


async def test_a_rewatch_after_the_session_timeout_is_a_new_session_and_a_new_view(
    fake: FakePermutive, clock: Clock
) -> None:
    async with enricher(fake, clock) as e:
        await e.enrich(GAM, ctx("https://example.com/v/a"))
        clock.advance(60)  # an hour later: past the 30-minute default of both timeouts
        again = await e.enrich(GAM, ctx("https://example.com/v/a"))
    assert again.behavioral.reason == "live"
    first, second = play_events(fake)
    assert second["session_id"] != first["session_id"]
    assert second["view_id"] != first["view_id"]


async def test_a_view_ends_when_idle_even_while_its_session_lives_on(
    fake: FakePermutive, clock: Clock
) -> None:
    async with enricher(fake, clock) as e:
        await e.enrich(GAM, ctx("https://example.com/v/a"))
        for _ in range(4):  # 40 minutes of other content keep the session alive
            clock.advance(10)
            await e.enrich(GAM, ctx("https://example.com/v/b"))
        await e.enrich(GAM, ctx("https://example.com/v/a"))  # back to a, idle for 40 min
    events = play_events(fake)
    assert len(events) == 3  # a, b, and a new view of a
    assert len({ev["session_id"] for ev in events}) == 1
    assert events[2]["view_id"] not in (events[0]["view_id"], events[1]["view_id"])


async def test_configured_timeouts_are_the_ones_applied(fake: FakePermutive, clock: Clock) -> None:
    from plugin.config import SessionsConfig, ViewsConfig

    cfg = {
        "sessions": SessionsConfig(idle_timeout_s=5 * MIN),
        "views": ViewsConfig(idle_timeout_s=2 * MIN),
    }
    async with enricher(fake, clock, **cfg) as e:
        await e.enrich(GAM, ctx("https://example.com/v/a"))
        clock.advance(1)
        await e.enrich(GAM, ctx("https://example.com/v/a"))  # same view
        clock.advance(3)
        await e.enrich(GAM, ctx("https://example.com/v/a"))  # view idle 3 > 2 min: new
        clock.advance(6)
        await e.enrich(GAM, ctx("https://example.com/v/a"))  # session idle 6 > 5 min: new
    a, b, c = play_events(fake)
    assert a["session_id"] == b["session_id"] != c["session_id"]
    assert len({a["view_id"], b["view_id"], c["view_id"]}) == 3


async def test_identities_have_their_own_sessions(fake: FakePermutive, clock: Clock) -> None:
    async with enricher(fake, clock) as e:
        await e.enrich(GAM, ctx("https://example.com/v/a"))
        await e.enrich(GAM, ctx("https://example.com/v/a", identity=OTHER))
    a, b = play_events(fake)
    assert a["session_id"] != b["session_id"] and a["view_id"] != b["view_id"]


async def test_host_and_ssai_ids_win(fake: FakePermutive, clock: Clock) -> None:
    given_session = str(uuid.uuid4())
    given_view = str(uuid.uuid4())
    async with enricher(fake, clock) as e:
        await e.enrich(
            GAM, ctx("https://example.com/v/a", session_id=given_session, view_id=given_view)
        )
        await e.enrich(GAM, ctx("https://example.com/v/b", ssai_session_id="mt-session-1"))
        await e.enrich(GAM, ctx("https://example.com/v/b", ssai_session_id="mt-session-1"))
    a, b = play_events(fake)  # the SSAI session's second break is the same view
    assert (a["session_id"], a["view_id"]) == (given_session, given_view)
    assert b["session_id"] not in (a["session_id"], None)
    assert uuid.UUID(b["session_id"]).version == 5  # derived from the SSAI session, stable


async def test_completion_events_land_in_the_view_of_the_play_event(
    fake: FakePermutive, clock: Clock
) -> None:
    completion = Event(name="VideoCompletion", time=recent(), properties={"video_id": "a"})
    async with enricher(fake, clock) as e:
        await e.enrich(GAM, ctx("https://example.com/v/a"))
        await e.enrich(GAM, ctx("https://example.com/v/b"))
        by_content = EventIds(content_url="https://example.com/v/a")
        assert await e.track([completion], identity=DEVICE, consent=True, ids=by_content) == 1
        assert await e.track([completion], identity=DEVICE, consent=True) == 1  # latest view
    play_a, play_b, done_a, done_latest = play_events(fake)
    assert (done_a["session_id"], done_a["view_id"]) == (play_a["session_id"], play_a["view_id"])
    assert done_latest["view_id"] == play_b["view_id"]
    assert done_latest["session_id"] == play_b["session_id"]


async def test_empty_properties_are_left_out_of_the_play_event_and_the_contextual_request(
    fake: FakePermutive, clock: Clock
) -> None:
    props = {
        "video_id": "v1",
        "genre": None,
        "title": "",
        "tags": [],
        "meta": {},
        "nested": {"a": None, "b": ["", None], "c": {"d": {}}, "keep": 1},
        "list": ["x", "", None],
    }
    async with enricher(fake, clock) as e:
        await e.enrich(GAM, ctx("https://example.com/v/a", properties=props))
        track = Event(name="VideoCompletion", time=recent(), properties={"x": None, "y": 2})
        await e.track([track], identity=DEVICE, consent=True)
    play, done = play_events(fake)
    expected = {"video_id": "v1", "nested": {"keep": 1}, "list": ["x"]}
    client = {"url": "https://example.com/v/a", "domain": "example.com"}
    assert play["properties"] == {**expected, "client": client}
    assert done["properties"] == {"y": 2}
    (ctx_call,) = fake.bodies["contextual"]
    assert ctx_call["body"]["page_properties"] == {"client": client, "video": expected}


async def test_two_ad_requests_of_one_new_view_at_once_send_one_play_event(
    fake: FakePermutive, clock: Clock
) -> None:
    """docs/signals.md, "Two ad requests of one new view at once": the first claims the view
    and sends its play event; the second, arriving while that call is in flight, sends none and
    waits on the same call."""
    fake.delay["ccs"] = 0.05
    async with enricher(fake, clock) as e:
        first, second = await asyncio.gather(
            e.enrich(GAM, ctx("https://example.com/v/new")),
            e.enrich(GAM.replace("sz=640x480", "sz=1x1"), ctx("https://example.com/v/new")),
        )
    assert len(play_events(fake)) == 1 and fake.calls["ccs"] == 1
    got = sorted((r.behavioral.source, r.behavioral.reason) for r in (first, second))
    assert got[1] == ("live", "view_reuse") and got[0][0] == "live"
    assert first.behavioral.cohorts == second.behavioral.cohorts
