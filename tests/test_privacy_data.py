"""What leaves and what comes back: attackers' requests to `cohortkv serve` that try to set the
contextual cohorts of a page for everyone, to carry an e-mail address out in a content URL, or
to feed the sidecar garbage through the shared store (Redis)."""

from __future__ import annotations

import asyncio
import json
import struct
import time
import uuid
from collections.abc import AsyncIterator
from urllib.parse import quote, unquote

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugin import Content, Context, Enricher, Identity
from plugin.cache.local import compact_key
from plugin.config import ContentConfig, load_config
from plugin.identity import Alias
from plugin.permutive.wire import Event
from plugin.signals.content_url import clean_content_url, holds_email
from plugin.signals.events import now_rfc3339
from plugin.signals.tracker import EventIds
from tests.helpers.attacks import GAM, GRANT, IDFA, PAGE, config, get, sidecar
from tests.helpers.fake_adserver import FakeAdServer, Running, running
from tests.helpers.fakes import FakePermutive
from tests.helpers.redis import SharedRedis
from tests.helpers.waiting import until


@pytest.fixture
async def proxy(fake: FakePermutive, ads: FakeAdServer) -> AsyncIterator[Running]:
    async with running(sidecar(fake, ads)) as r:
        yield r


# --- 5. contextual answers cannot be poisoned -------------------------------------------------

CASINO = {"cohorts": ["666"], "activations": {"dfp": ["666"]}}
NEWS = {"cohorts": ["111"], "activations": {"dfp": ["111"]}}
POISONED = "&cust_params=title%3Donline%2520casino%2520bonus"


async def test_a_denied_viewers_title_cannot_set_the_cohorts_of_a_page(
    proxy: Running, fake: FakePermutive, ads: FakeAdServer
) -> None:
    page = "https://pub.example/v/1"
    fake.ctx_answers[page] = CASINO  # what the API says about a page titled so
    await get(proxy, GAM + "&tfcd=1" + POISONED)
    assert "666" in ads.last.query
    sent = fake.bodies["contextual"][0]["body"]["page_properties"]
    assert sent["video"]["title"] == "online casino bonus"

    fake.ctx_answers[page] = NEWS  # and what it says about the page as it is
    for _ in range(5):
        await get(proxy, GAM)
        assert "666" not in ads.last.query and "permutive%3D111" in ads.last.query
    # the normal case is still one call per content: the five viewers shared one
    assert fake.calls["contextual"] == 2


async def test_concurrent_requests_for_one_content_share_one_contextual_call(
    fake: FakePermutive,
) -> None:
    """The normal case keeps its economy: same content, same properties, one call in flight."""
    fake.delay["contextual"] = 0.05
    tag = "https://pubads.g.doubleclick.net/gampad/ads?iu=/1&vid=v1&description_url=" + PAGE
    cfg = config(fake)
    async with Enricher(cfg) as e:
        results = await asyncio.gather(*(e.enrich(tag) for _ in range(5)))
        again = await e.enrich(tag)
    reasons = sorted(r.contextual.reason for r in results)
    assert reasons == ["live", "shared_call", "shared_call", "shared_call", "shared_call"]
    assert again.contextual.reason == "fresh_cache"
    assert fake.calls["contextual"] == 1


async def test_a_poisoned_answer_is_not_shared_through_redis_either(
    fake: FakePermutive, ads: FakeAdServer, shared_redis: SharedRedis
) -> None:
    page = f"https://pub.example/v/{uuid.uuid4()}"
    tag = f"/proxy/gam/gampad/ads?iu=/1/ctv&description_url={quote(page, safe='')}"
    cfg = sidecar(fake, ads, cache=shared_redis.cache())
    fake.ctx_answers[page] = CASINO
    async with running(cfg) as one:
        await get(one, tag + "&tfcd=1" + POISONED)
    fake.ctx_answers[page] = NEWS
    async with running(cfg) as other:  # another replica, sharing the Redis
        await get(other, tag)
        await get(other, tag)
    assert "666" not in ads.last.query and "permutive%3D111" in ads.last.query
    assert fake.calls["contextual"] == 2


# --- 6. content URLs carry no personal data out -----------------------------------------------

CHILD_PAGE = "https://pub.example/watch?v=1&child_email=amy%40example.com&t=30#top"


async def test_an_email_in_the_content_url_never_reaches_the_contextual_api(
    proxy: Running, fake: FakePermutive
) -> None:
    await get(
        proxy, "/proxy/gam/gampad/ads?iu=/1&tfcd=1&description_url=" + quote(CHILD_PAGE, safe="")
    )
    (call,) = fake.bodies["contextual"]
    assert call["body"]["url"] == "https://pub.example/watch?v=1&t=30#top"
    assert call["body"]["page_properties"]["client"]["url"] == call["body"]["url"]
    assert "amy" not in json.dumps(call)
    assert proxy.sample("cohortkv_content_url_redactions_total", reason="email") == 1


LEAKY_PAGE = "https://editor:s3cret@pub.example/u/amy%40example.com/watch?v=1&by=bob@example.org"
"""Credentials before the host, an address in the path and another in the query."""
LEAKY_CLEANED = "https://pub.example/u/redacted/watch?v=1"


def _leaks(sent: object) -> list[str]:
    text = unquote(unquote(json.dumps(sent)))
    return [w for w in ("amy", "bob", "editor", "s3cret") if w in text]


async def test_no_url_sent_anywhere_carries_an_address_or_credentials(
    fake: FakePermutive, ads: FakeAdServer
) -> None:
    """The Contextual request and the play event's `client.url` leave cleaned alike."""
    async with running(sidecar(fake, ads)) as side:
        await get(
            side,
            f"/proxy/gam/gampad/ads?iu=/1&rdid={IDFA}&idtype=idfa{GRANT}&description_url="
            + quote(LEAKY_PAGE, safe=""),
        )
        (ctx_call,) = fake.bodies["contextual"]
        (ccs_call,) = fake.bodies["ccs"]
        assert ctx_call["body"]["url"] == LEAKY_CLEANED
        assert ctx_call["body"]["page_properties"]["client"]["url"] == LEAKY_CLEANED
        (play,) = ccs_call["body"]["events"]
        assert play["properties"]["client"]["url"] == LEAKY_CLEANED
        assert _leaks(ctx_call) == [] and _leaks(ccs_call) == []
        assert side.sample("cohortkv_content_url_redactions_total", reason="email") == 1
        assert side.sample("cohortkv_content_url_redactions_total", reason="userinfo") == 1


async def test_a_hosts_client_section_is_cleaned_in_the_ad_requests_play_event(
    fake: FakePermutive,
) -> None:
    device = Identity(alias=Alias(tag="idfa", id=IDFA))
    client = {"referrer": LEAKY_PAGE, "url": LEAKY_PAGE}
    ctx = Context(
        identity=device,
        content=Content(url=LEAKY_PAGE, properties={"client": client}),
    )
    async with Enricher(config(fake)) as e:
        await e.enrich("https://pubads.g.doubleclick.net/gampad/ads?iu=/1&us_privacy=1YNN", ctx)
    (call,) = fake.bodies["ccs"]
    (play,) = call["body"]["events"]
    assert play["properties"]["client"]["referrer"] == LEAKY_CLEANED
    assert play["properties"]["client"]["url"] == LEAKY_CLEANED
    assert _leaks(call) == [] and _leaks(fake.bodies["contextual"]) == []


async def test_a_host_events_client_url_is_cleaned_too(fake: FakePermutive) -> None:
    device = Identity(alias=Alias(tag="idfa", id=IDFA))
    play = Event(
        name="Videoview",
        time=now_rfc3339(),
        properties={"client": {"url": LEAKY_PAGE, "referrer": LEAKY_PAGE, "title": "T"}},
    )
    async with Enricher(config(fake)) as e:
        assert await e.track([play], identity=device, consent=True) == 1
        emails = e.metrics.registry.get_sample_value(
            "cohortkv_content_url_redactions_total", {"reason": "email"}
        )
    (call,) = fake.bodies["ccs"]
    (event,) = call["body"]["events"]
    assert event["properties"]["client"] == {
        "url": LEAKY_CLEANED,
        "referrer": LEAKY_CLEANED,
        "title": "T",
    }
    assert _leaks(call) == [] and emails is not None and emails >= 1


async def test_drop_query_sends_content_urls_without_query_or_fragment(
    fake: FakePermutive, ads: FakeAdServer
) -> None:
    cfg = sidecar(fake, ads, content=ContentConfig(drop_query=True))
    async with running(cfg) as side:
        await get(side, "/proxy/gam/gampad/ads?iu=/1&description_url=" + quote(CHILD_PAGE))
    assert fake.bodies["contextual"][0]["body"]["url"] == "https://pub.example/watch"
    async with running(cfg) as side:  # the path and the authority are cleaned as well
        await get(side, "/proxy/gam/gampad/ads?iu=/1&description_url=" + quote(LEAKY_PAGE))
    assert fake.bodies["contextual"][1]["body"]["url"] == "https://pub.example/u/redacted/watch"


async def test_the_dry_run_shows_the_content_url_as_it_would_leave(fake: FakePermutive) -> None:
    from plugin.dryrun import DryRun

    tag = "https://pubads.g.doubleclick.net/gampad/ads?iu=/1&description_url="
    async with Enricher(config(fake)) as e:
        x = await DryRun(e).explain(tag + quote(CHILD_PAGE, safe=""))
        leaky = await DryRun(e).explain(tag + quote(LEAKY_PAGE, safe=""))
        counted = e.metrics.registry.get_sample_value(
            "cohortkv_content_url_redactions_total", {"reason": "email"}
        )
    assert x.read is not None and x.read.content["url"] == "https://pub.example/watch?v=1&t=30#top"
    assert leaky.read is not None and leaky.read.content["url"] == LEAKY_CLEANED
    assert counted == 0  # a dry run counts nothing in the ad path's metrics


def test_drop_query_is_read_from_the_environment_and_checked() -> None:
    assert load_config(env={"COHORTKV_CONTENT__DROP_QUERY": "true"}).content.drop_query
    assert not load_config(env={}).content.drop_query
    with pytest.raises(ValueError, match="COHORTKV_CONTENT__DROP_QUERY"):
        load_config(env={"COHORTKV_CONTENT__DROP_QUERY": "maybe"})


async def test_an_event_finds_the_view_of_its_ad_request_through_the_same_cleaning(
    fake: FakePermutive,
) -> None:
    """Views are keyed by the cleaned URL: a host's completion event naming the content URL
    as the player has it (e-mail and all) still lands in the play event's view."""
    cfg = config(fake)
    device = Identity(alias=Alias(tag="idfa", id=IDFA))
    async with Enricher(cfg) as e:
        ctx = Context(identity=device, content=Content(url=CHILD_PAGE))
        await e.enrich("https://pubads.g.doubleclick.net/gampad/ads?iu=/1&us_privacy=1YNN", ctx)
        done = Event(name="VideoCompletion", time=now_rfc3339(), properties={})
        sent = await e.track(
            [done], identity=device, consent=True, ids=EventIds(content_url=CHILD_PAGE)
        )
    assert sent == 1
    play, completion = (call["body"]["events"][0] for call in fake.bodies["ccs"])
    assert completion["view_id"] == play["view_id"]


_LOCAL = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._+-", min_size=1, max_size=12)
_HOST = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=10)
_FIELD = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-.", min_size=1, max_size=8)


@given(
    st.lists(st.tuples(_FIELD, _FIELD), max_size=4),
    st.tuples(_FIELD, _LOCAL, _HOST, st.sampled_from(["com", "co.uk", "de"])),
    st.integers(min_value=0, max_value=3),
    st.integers(min_value=0, max_value=4),
)
def test_an_email_field_is_removed_however_it_was_encoded(
    fields: list[tuple[str, str]],
    email: tuple[str, str, str, str],
    times: int,
    at: int,
) -> None:
    name, local, host, tld = email
    value = f"{local}@{host}.{tld}"
    for _ in range(times):
        value = quote(value, safe="")
    plain = [f"{k}={v}" for k, v in fields]
    query = [*plain]
    query.insert(min(at, len(query)), f"{name}={value}")
    url = "https://pub.example/v/1?" + "&".join(query)
    cleaned, removed, userinfo = clean_content_url(url)
    assert removed == 1 and not userinfo and "@" not in cleaned and "%40" not in cleaned.upper()
    assert cleaned == "https://pub.example/v/1" + ("?" + "&".join(plain) if plain else "")
    # a URL without an address is left exactly as it was
    assert clean_content_url(cleaned) == (cleaned, 0, False)
    # and an address in the path goes as well, the path keeping its shape
    in_path = clean_content_url(f"https://pub.example/{value}/v?{'&'.join(plain)}")
    assert in_path.emails == 1 and in_path.url.startswith("https://pub.example/redacted/v")


@given(
    st.sampled_from(["https", "http", "myapp"]),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789:%.@-_~", min_size=1, max_size=16),
    st.sampled_from(["", "/", "/v/1", "/v/1?x=1", "?x=1#t", "#t"]),
    st.booleans(),
)
def test_userinfo_is_stripped_before_anything_leaves(
    scheme: str, userinfo: str, rest: str, drop_query: bool
) -> None:
    cleaned = clean_content_url(f"{scheme}://{userinfo}@pub.example:8443{rest}", drop_query)
    assert cleaned.userinfo
    assert cleaned.url.startswith(f"{scheme}://pub.example:8443")
    kept = rest.split("?")[0].split("#")[0] if drop_query else rest
    assert cleaned.url == f"{scheme}://pub.example:8443{kept}"


@pytest.mark.parametrize(
    "url",
    [
        "https://www.youtube.com/@channel/videos",
        "https://pub.example/v/1?by=@amy",
        "myapp://podcast/1",
        "https://pub.example/a%20b/c",
    ],
)
def test_urls_without_an_address_or_userinfo_stay_as_they_are(url: str) -> None:
    assert clean_content_url(url) == (url, 0, False)


@pytest.mark.parametrize(
    "field", ["by=@amy", "q=a%40b", "x=user@localhost", "tag=%23news", "v=1", "a@b"]
)
def test_fields_that_hold_no_email_address_stay(field: str) -> None:
    assert not holds_email(field)


# --- 7. what comes back from Redis is checked -------------------------------------------------


# A viewer is one Redis hash (`plugin.cache.shared`): field `s` its session, as
# [4-byte expiry][1-byte length][session id][view id]; field `a` a reference to its answer's
# cohort set, stored apart under `{prefix}:p:<digest>`. Garbage can sit in either.
GARBAGE = {
    "injected_session_and_cohort": (
        (b"not-a-uuid\r\nINJECT: 1", b"x"),
        msgspec.msgpack.encode([{"cohorts": ["1\r\nINJECT: 1"]}, time.time()]),
        ("session", "not_uuid"),
        ("answer", "bad_cohorts"),
    ),
    "huge_session_and_answer": (
        (b"a" * 255, b"b" * 100_000),
        b"\x92" + b"A" * 2_000_000,
        ("session", "not_uuid"),
        ("answer", "too_large"),
    ),
    "answer_from_the_future": (
        None,
        msgspec.msgpack.encode([{"cohorts": ["1"]}, time.time() + 86400]),
        None,
        ("answer", "bad_time"),
    ),
}
PROFILE = bytes(range(16))
"""The cohort-set digest the planted answer reference names."""


def viewer_key(prefix: str, identity: Identity) -> bytes:
    return f"{prefix}:u:".encode() + compact_key(identity.cache_key())


def session_value(session: bytes, view: bytes) -> bytes:
    """A session field as the store writes it, valid for ten minutes (the server's clock is
    this machine's)."""
    return struct.pack(">I", int(time.time()) + 600) + bytes([len(session)]) + session + view


def answer_reference(stored_at: float) -> bytes:
    return PROFILE + struct.pack(">I", int(stored_at))


def session_is_clean(stored: bytes | None) -> bool:
    """Gone, or a session id a replica wrote (a UUID, packed to 16 bytes)."""
    return stored is None or stored[4] == 16


@pytest.mark.parametrize("case", sorted(GARBAGE))
async def test_garbage_in_the_shared_store_never_reaches_the_ccs_event(
    fake: FakePermutive, ads: FakeAdServer, shared_redis: SharedRedis, case: str
) -> None:
    import redis.asyncio as redis

    session_value_parts, answer_value, session_reason, answer_reason = GARBAGE[case]
    device = f"{uuid.uuid4()}".upper()
    vkey = viewer_key(shared_redis.prefix, Identity(alias=Alias(tag="idfa", id=device)))
    profile_key = f"{shared_redis.prefix}:p:{PROFILE.hex()}"
    client = redis.Redis.from_url(shared_redis.url)
    try:
        if session_value_parts is not None:
            await client.hset(vkey, b"s", session_value(*session_value_parts))
        await client.hset(vkey, b"a", answer_reference(time.time()))
        await client.expire(vkey, 60)
        await client.set(profile_key, answer_value, ex=60)
        # A timeout long enough for the 2 MB value to arrive whole, however loaded the machine.
        cache = shared_redis.cache(redis_timeout_ms=10_000)
        cfg = sidecar(fake, ads, cache=cache)
        # The CCS API fails, so the user's answer can only come from the store (and the
        # failed call writes no fresh one over it).
        fake.status["ccs"] = 503
        async with running(cfg) as side:
            await get(side, GAM + f"&rdid={device}&idtype=idfa" + GRANT)
            (call,) = fake.bodies["ccs"]
            (event,) = call["body"]["events"]
            assert uuid.UUID(event["session_id"]).version == 4
            assert "INJECT" not in json.dumps(call)
            assert "INJECT" not in unquote(unquote(ads.last.query))

            def invalid(value: str, reason: str) -> float:
                return side.sample(
                    "cohortkv_shared_store_invalid_total", value=value, reason=reason
                )

            await until(lambda: invalid(*answer_reason) == 1, what="the answer counted")
            if session_reason is not None:
                assert invalid(*session_reason) == 1

                # the bad value is gone, so the fleet starts that user's session afresh
                async def clean() -> bool:
                    return session_is_clean(await client.hget(vkey, b"s"))

                await until(clean, what="the invalid session deleted")
    finally:
        await client.delete(vkey, profile_key)
        await client.aclose()


async def test_garbage_in_the_shared_session_never_reaches_a_completion_event(
    fake: FakePermutive, shared_redis: SharedRedis
) -> None:
    import redis.asyncio as redis

    device = Identity(alias=Alias(tag="idfa", id=f"{uuid.uuid4()}".upper()))
    vkey = viewer_key(shared_redis.prefix, device)
    client = redis.Redis.from_url(shared_redis.url)
    try:
        await client.hset(vkey, b"s", session_value(b"not-a-uuid\r\nINJECT: 1", b"also-not"))
        await client.expire(vkey, 60)
        cache = shared_redis.cache(redis_timeout_ms=10_000)
        async with Enricher(config(fake, cache=cache)) as e:
            done = Event(name="VideoCompletion", time=now_rfc3339(), properties={})
            assert await e.track([done], identity=device, consent=True) == 1
            invalid = e.metrics.registry.get_sample_value(
                "cohortkv_shared_store_invalid_total", {"value": "session", "reason": "not_uuid"}
            )
        (call,) = fake.bodies["ccs"]
        (event,) = call["body"]["events"]
        assert uuid.UUID(event["session_id"]).version == 4 and "view_id" not in event
        assert "INJECT" not in json.dumps(call)
        assert invalid == 1
    finally:
        await client.delete(vkey)
        await client.aclose()
