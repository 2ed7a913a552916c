"""The aiohttp client middleware through a real ClientSession against a local ad server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from plugin import Config, ConsentSignals, Content, Context, Enricher
from plugin.errors import CohortkvError
from plugin.middleware import ad_context, cohortkv_middleware
from tests.helpers.fakes import API_KEY, FakePermutive
from tests.helpers.samples import DEVICE

VAST = b'<?xml version="1.0"?><VAST version="4.0"><Ad id="1"/></VAST>'


class AdServer:
    def __init__(self) -> None:
        self.seen: list[str] = []
        self.server: TestServer | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(request.raw_path)
        return web.Response(body=VAST, content_type="application/xml")

    @property
    def base(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")


@pytest.fixture
async def adserver() -> AsyncIterator[AdServer]:
    a = AdServer()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", a.handle)
    a.server = TestServer(app)
    await a.server.start_server()
    yield a
    await a.server.close()


PLATFORMS = [
    (
        "/gampad/ads?iu=/123/ctv&sz=640x480&cust_params=sect%3Dsport&output=vast&correlator=1",
        "/gampad/ads?iu=/123/ctv&sz=640x480&cust_params=sect%3Dsport%26permutive%3D12345%2C67890"
        "%2C99999&output=vast&correlator=1",
    ),
    (
        "/ad/g/1?nw=1&resp=vast4&caid=a;existing=1;slid=pre&tpcl=PREROLL",
        "/ad/g/1?nw=1&resp=vast4&caid=a;existing=1&permutive=12345&permutive=88888;slid=pre"
        "&tpcl=PREROLL",
    ),
    (
        "/vast/4.0/request/alias/zone1?listenerId=abc&aw_0_1st.genre=sports",
        "/vast/4.0/request/alias/zone1?listenerId=abc&aw_0_1st.genre=sports"
        "&aw_0_1st.permutive=67890",
    ),
]


@pytest.mark.parametrize(("path", "expected"), PLATFORMS)
async def test_ad_requests_are_enriched_other_requests_pass_untouched(
    fake: FakePermutive, adserver: AdServer, path: str, expected: str
) -> None:
    cfg = Config(api_key=API_KEY, ccs_url=fake.url, ctx_url=fake.url)
    context = Context(
        identity=DEVICE,
        consent=ConsentSignals(override=True),
        content=Content(url="https://example.com/v/1"),
    )
    async with (
        Enricher(cfg) as enricher,
        aiohttp.ClientSession(middlewares=(cohortkv_middleware(enricher),)) as session,
    ):
        with ad_context(context):
            async with session.get(adserver.base + path) as resp:
                assert resp.status == 200
                assert await resp.read() == VAST
        odd = "/api/v1/items?b=2&a=%2f&c=%7E;x"
        async with session.get(aiohttp.client.URL(adserver.base + odd, encoded=True)) as resp:
            await resp.read()
    assert adserver.seen == [expected, odd]
    assert fake.calls["ccs"] == 1


async def test_without_context_the_url_itself_is_read(
    fake: FakePermutive, adserver: AdServer
) -> None:
    cfg = Config(api_key=API_KEY, ccs_url=fake.url, ctx_url=fake.url)
    path = "/gampad/ads?iu=/1/x&gdpr=1&url=https%3A%2F%2Fexample.com%2Fv%2F2&rdid=X&idtype=idfa"
    async with (
        Enricher(cfg) as enricher,
        aiohttp.ClientSession(middlewares=(cohortkv_middleware(enricher),)) as session,
        session.get(aiohttp.client.URL(adserver.base + path, encoded=True)) as resp,
    ):
        await resp.read()
    # gdpr=1 with no TC string: no consent, so contextual only
    assert adserver.seen == [path + "&cust_params=permutive%3D99999"]
    assert fake.calls["ccs"] == 0


async def test_a_named_platform_reads_requests_nothing_auto_detects(
    fake: FakePermutive, adserver: AdServer
) -> None:
    """A VAST server that takes plain key-values (`query`) and a bid request POSTed to a path
    of its own: neither is picked by looking at it, so the host names the platform."""
    cfg = Config(
        api_key=API_KEY,
        ccs_url=fake.url,
        ctx_url=fake.url,
        adapters={"query": {"activation_platforms": ["dfp"]}},
    )
    path = "/vast/123?content_url=https%3A%2F%2Fexample.com%2Fv%2F3&us_privacy=1YNN"
    async with Enricher(cfg) as enricher:
        for platform, wanted in ((None, path), ("query", path + "&permutive=99999")):
            middleware = cohortkv_middleware(enricher, platform=platform)
            async with (
                aiohttp.ClientSession(middlewares=(middleware,)) as session,
                session.get(aiohttp.client.URL(adserver.base + path, encoded=True)) as resp,
            ):
                await resp.read()
            assert adserver.seen[-1] == wanted
        with pytest.raises(CohortkvError, match="platform"):
            cohortkv_middleware(enricher, platform="nope")


async def test_a_failure_of_ours_is_an_internal_error_not_bad_input(
    fake: FakePermutive, adserver: AdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = CollectorRegistry()
    path, _ = PLATFORMS[0]
    async with Enricher(
        Config(api_key=API_KEY, ccs_url=fake.url, ctx_url=fake.url), registry=registry
    ) as enricher:

        async def broken(*args: object, **kw: object) -> None:
            raise RuntimeError("a bug")

        monkeypatch.setattr(enricher, "enrich_reading", broken)
        session = aiohttp.ClientSession(middlewares=(cohortkv_middleware(enricher),))
        async with session, session.get(adserver.base + path) as resp:
            assert resp.status == 200
    assert adserver.seen == [path], "the request went out as it came"
    where = {"where": "middleware"}
    assert registry.get_sample_value("cohortkv_internal_errors_total", where) == 1
    bad = {"source": "middleware", "kind": "RuntimeError"}
    assert registry.get_sample_value("cohortkv_bad_input_total", bad) is None
