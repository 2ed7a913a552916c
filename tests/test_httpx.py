"""The httpx transport through a real `httpx.AsyncClient` and `AsyncHTTPTransport` against a
loopback ad server: the same rules as the aiohttp middleware (tests/test_middleware.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client import CollectorRegistry

from plugin import ConsentSignals, Content, Context, Enricher, Identity
from plugin.httpx import CohortkvTransport, ad_context
from tests.helpers.fake_adserver import VAST as ADSERVER_VAST
from tests.helpers.fake_adserver import FakeAdServer
from tests.helpers.fakes import FakePermutive, config
from tests.helpers.samples import DEVICE
from tests.test_middleware import PLATFORMS, VAST

GRANTED = Context(
    identity=DEVICE,
    consent=ConsentSignals(override=True),
    content=Content(url="https://example.com/v/1"),
)


@pytest.mark.parametrize(("path", "expected"), PLATFORMS)
async def test_ad_requests_are_enriched_other_requests_pass_untouched(
    fake: FakePermutive, ads: FakeAdServer, path: str, expected: str
) -> None:
    async with (
        Enricher(config(fake)) as enricher,
        httpx.AsyncClient(transport=CohortkvTransport(enricher)) as client,
    ):
        with ad_context(GRANTED):
            resp = await client.get(ads.url + path)
            assert resp.status_code == 200 and resp.content == ADSERVER_VAST
        odd = "/api/v1/items?b=2&a=%2f&c=%7E;x"
        await client.get(ads.url + odd)
    assert [r.target for r in ads.requests] == [expected, odd]
    assert fake.calls["ccs"] == 1


async def test_without_context_the_url_itself_is_read(
    fake: FakePermutive, ads: FakeAdServer
) -> None:
    path = "/gampad/ads?iu=/1/x&gdpr=1&url=https%3A%2F%2Fexample.com%2Fv%2F2&rdid=X&idtype=idfa"
    async with (
        Enricher(config(fake)) as enricher,
        httpx.AsyncClient(transport=CohortkvTransport(enricher)) as client,
    ):
        await client.get(ads.url + path)
    # gdpr=1 with no TC string: no consent, so contextual only
    assert [r.target for r in ads.requests] == [path + "&cust_params=permutive%3D99999"]
    assert fake.calls["ccs"] == 0


BID_REQUEST = {
    "id": "auction-1",
    "imp": [{"id": "1", "video": {"mimes": ["video/mp4"]}}],
    "site": {"page": "https://example.com/v/1"},
    "device": {"ifa": "6D92078A-8246-4BA4-AE5B-76104861E7DC", "os": "iOS"},
    "regs": {"coppa": 0},
}


async def test_a_post_bid_request_gets_its_cohorts_and_a_right_length(
    fake: FakePermutive, ads: FakeAdServer
) -> None:
    cfg = config(fake, adapters={"openrtb": {"activation_platforms": ["dfp"]}})
    async with (
        Enricher(cfg) as enricher,
        httpx.AsyncClient(transport=CohortkvTransport(enricher)) as client,
    ):
        with ad_context(Context(identity=DEVICE, consent=ConsentSignals(override=True))):
            resp = await client.post(ads.url + "/openrtb2/auction", json=BID_REQUEST)
        assert resp.status_code == 200
    got = ads.last
    assert (got.method, got.target) == ("POST", "/openrtb2/auction")
    assert int(got.headers["Content-Length"]) == len(got.body)
    sent = json.loads(got.body)
    assert sent["user"]["data"] == [
        {"name": "permutive", "segment": [{"id": "12345"}, {"id": "67890"}, {"id": "99999"}]}
    ]
    assert sent["imp"] == BID_REQUEST["imp"] and sent["device"] == BID_REQUEST["device"]


async def test_a_streamed_body_is_never_consumed(fake: FakePermutive, ads: FakeAdServer) -> None:
    chunks = [json.dumps(BID_REQUEST).encode()[:10], json.dumps(BID_REQUEST).encode()[10:]]

    async def stream() -> AsyncIterator[bytes]:
        for c in chunks:
            yield c

    async with (
        Enricher(config(fake)) as enricher,
        httpx.AsyncClient(transport=CohortkvTransport(enricher, platform="openrtb")) as client,
    ):
        await client.post(ads.url + "/openrtb2/auction", content=stream())
    assert ads.last.body == b"".join(chunks)
    assert fake.calls == {}


async def test_a_broken_enrichment_sends_the_request_as_it_came(
    fake: FakePermutive, ads: FakeAdServer
) -> None:
    registry = CollectorRegistry()
    path = "/gampad/ads?iu=/1/x&sz=640x480"
    bad = Context(identity=Identity(user_id="not-a-uuid"), consent=ConsentSignals(override=True))
    async with (
        Enricher(config(fake), registry=registry) as enricher,
        httpx.AsyncClient(transport=CohortkvTransport(enricher)) as client,
    ):
        with ad_context(bad):
            resp = await client.get(ads.url + path)
    assert resp.status_code == 200
    assert [r.target for r in ads.requests] == [path]
    labels = {"source": "httpx", "kind": "IdentityError"}
    assert registry.get_sample_value("cohortkv_bad_input_total", labels) == 1


async def test_a_named_platform_reads_every_request(fake: FakePermutive, ads: FakeAdServer) -> None:
    cfg = config(fake, adapters={"query": {"activation_platforms": ["dfp"]}})
    async with (
        Enricher(cfg) as enricher,
        httpx.AsyncClient(transport=CohortkvTransport(enricher, platform="query")) as client,
    ):
        await client.get(ads.url + "/vast/123?content_url=https%3A%2F%2Fexample.com%2Fa")
    expected = "/vast/123?content_url=https%3A%2F%2Fexample.com%2Fa&permutive=99999"
    assert ads.last.target == expected


async def test_the_wrapped_transport_gets_the_enriched_request(fake: FakePermutive) -> None:
    got: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        got.append(request)
        return httpx.Response(200, content=VAST)

    wrapped = httpx.MockTransport(answer)
    async with (
        Enricher(config(fake)) as enricher,
        httpx.AsyncClient(transport=CohortkvTransport(enricher, wrapped=wrapped)) as client,
    ):
        with ad_context(GRANTED):
            await client.get("https://pubads.g.doubleclick.net/gampad/ads?iu=/1/x")
        await client.delete("https://pubads.g.doubleclick.net/gampad/ads?iu=/1/x")
    assert [r.method for r in got] == ["GET", "DELETE"]
    assert "cust_params=permutive%3D12345%2C67890%2C99999" in str(got[0].url)
    assert str(got[1].url) == "https://pubads.g.doubleclick.net/gampad/ads?iu=/1/x"


async def test_a_failure_of_ours_is_an_internal_error_not_bad_input(
    fake: FakePermutive, ads: FakeAdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = CollectorRegistry()
    path = "/gampad/ads?iu=/1/x&sz=640x480"
    async with (
        Enricher(config(fake), registry=registry) as enricher,
        httpx.AsyncClient(transport=CohortkvTransport(enricher)) as client,
    ):

        async def broken(*args: object, **kw: object) -> None:
            raise RuntimeError("a bug")

        monkeypatch.setattr(enricher, "enrich_reading", broken)
        resp = await client.get(ads.url + path)
    assert resp.status_code == 200
    assert [r.target for r in ads.requests] == [path]
    where = {"where": "httpx"}
    assert registry.get_sample_value("cohortkv_internal_errors_total", where) == 1
    bad = {"source": "httpx", "kind": "RuntimeError"}
    assert registry.get_sample_value("cohortkv_bad_input_total", bad) is None
