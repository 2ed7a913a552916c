"""The httpx transport through a real `httpx.AsyncClient` and `AsyncHTTPTransport` against a
loopback ad server: the same rules as the aiohttp middleware (tests/test_middleware.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from plugin import Config, ConsentSignals, Content, Context, Enricher, Identity
from plugin.httpx import CohortkvTransport, ad_context
from tests.fakes import API_KEY, FakePermutive
from tests.helpers.samples import DEVICE
from tests.test_middleware import PLATFORMS, VAST

GRANTED = Context(
    identity=DEVICE,
    consent=ConsentSignals(override=True),
    content=Content(url="https://example.com/v/1"),
)


class AdServer:
    """Records the raw path, headers and body of every request it answers."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []
        self.server: TestServer | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append((request.method, request.raw_path, dict(request.headers), body))
        return web.Response(body=VAST, content_type="application/xml")

    @property
    def base(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    @property
    def paths(self) -> list[str]:
        return [path for _, path, _, _ in self.seen]


@pytest.fixture
async def adserver() -> AsyncIterator[AdServer]:
    a = AdServer()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", a.handle)
    a.server = TestServer(app)
    await a.server.start_server()
    yield a
    await a.server.close()


def config(fake: FakePermutive, **changes: Any) -> Config:
    return Config(api_key=API_KEY, ccs_url=fake.url, ctx_url=fake.url, **changes)


@pytest.mark.parametrize(("path", "expected"), PLATFORMS)
async def test_ad_requests_are_enriched_other_requests_pass_untouched(
    fake: FakePermutive, adserver: AdServer, path: str, expected: str
) -> None:
    async with (
        Enricher(config(fake)) as enricher,
        httpx.AsyncClient(transport=CohortkvTransport(enricher)) as client,
    ):
        with ad_context(GRANTED):
            resp = await client.get(adserver.base + path)
            assert resp.status_code == 200 and resp.content == VAST
        odd = "/api/v1/items?b=2&a=%2f&c=%7E;x"
        await client.get(adserver.base + odd)
    assert adserver.paths == [expected, odd]
    assert fake.calls["ccs"] == 1


async def test_without_context_the_url_itself_is_read(
    fake: FakePermutive, adserver: AdServer
) -> None:
    path = "/gampad/ads?iu=/1/x&gdpr=1&url=https%3A%2F%2Fexample.com%2Fv%2F2&rdid=X&idtype=idfa"
    async with (
        Enricher(config(fake)) as enricher,
        httpx.AsyncClient(transport=CohortkvTransport(enricher)) as client,
    ):
        await client.get(adserver.base + path)
    # gdpr=1 with no TC string: no consent, so contextual only
    assert adserver.paths == [path + "&cust_params=permutive%3D99999"]
    assert fake.calls["ccs"] == 0


BID_REQUEST = {
    "id": "auction-1",
    "imp": [{"id": "1", "video": {"mimes": ["video/mp4"]}}],
    "site": {"page": "https://example.com/v/1"},
    "device": {"ifa": "6D92078A-8246-4BA4-AE5B-76104861E7DC", "os": "iOS"},
    "regs": {"coppa": 0},
}


async def test_a_post_bid_request_gets_its_cohorts_and_a_right_length(
    fake: FakePermutive, adserver: AdServer
) -> None:
    cfg = config(fake, adapters={"openrtb": {"activation_platforms": ["dfp"]}})
    async with (
        Enricher(cfg) as enricher,
        httpx.AsyncClient(transport=CohortkvTransport(enricher)) as client,
    ):
        with ad_context(Context(identity=DEVICE, consent=ConsentSignals(override=True))):
            resp = await client.post(adserver.base + "/openrtb2/auction", json=BID_REQUEST)
        assert resp.status_code == 200
    method, path, headers, body = adserver.seen[0]
    assert (method, path) == ("POST", "/openrtb2/auction")
    assert int(headers["Content-Length"]) == len(body)
    sent = json.loads(body)
    assert sent["user"]["data"] == [
        {"name": "permutive", "segment": [{"id": "12345"}, {"id": "67890"}, {"id": "99999"}]}
    ]
    assert sent["imp"] == BID_REQUEST["imp"] and sent["device"] == BID_REQUEST["device"]


async def test_a_streamed_body_is_never_consumed(fake: FakePermutive, adserver: AdServer) -> None:
    chunks = [json.dumps(BID_REQUEST).encode()[:10], json.dumps(BID_REQUEST).encode()[10:]]

    async def stream() -> AsyncIterator[bytes]:
        for c in chunks:
            yield c

    async with (
        Enricher(config(fake)) as enricher,
        httpx.AsyncClient(transport=CohortkvTransport(enricher, platform="openrtb")) as client,
    ):
        await client.post(adserver.base + "/openrtb2/auction", content=stream())
    assert adserver.seen[0][3] == b"".join(chunks)
    assert fake.calls == {}


async def test_a_broken_enrichment_sends_the_request_as_it_came(
    fake: FakePermutive, adserver: AdServer
) -> None:
    registry = CollectorRegistry()
    path = "/gampad/ads?iu=/1/x&sz=640x480"
    bad = Context(identity=Identity(user_id="not-a-uuid"), consent=ConsentSignals(override=True))
    async with (
        Enricher(config(fake), registry=registry) as enricher,
        httpx.AsyncClient(transport=CohortkvTransport(enricher)) as client,
    ):
        with ad_context(bad):
            resp = await client.get(adserver.base + path)
    assert resp.status_code == 200
    assert adserver.paths == [path]
    labels = {"source": "httpx", "kind": "IdentityError"}
    assert registry.get_sample_value("cohortkv_bad_input_total", labels) == 1


async def test_a_named_platform_reads_every_request(
    fake: FakePermutive, adserver: AdServer
) -> None:
    cfg = config(fake, adapters={"query": {"activation_platforms": ["dfp"]}})
    async with (
        Enricher(cfg) as enricher,
        httpx.AsyncClient(transport=CohortkvTransport(enricher, platform="query")) as client,
    ):
        await client.get(adserver.base + "/vast/123?content_url=https%3A%2F%2Fexample.com%2Fa")
    assert adserver.paths == ["/vast/123?content_url=https%3A%2F%2Fexample.com%2Fa&permutive=99999"]


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
