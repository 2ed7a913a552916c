"""Every fault mode x upstream x entry point: the ad request still goes out within budget.

For each cell the cache is primed with a good answer, the upstream is broken in one way, and
the next ad request must come back within the budget plus a small margin, report the right
fallback source, count the fault in the outcome metrics, and raise nothing.

The client's side too: every body fault (compressed, a decompression bomb, an unsupported or
broken coding, slow, cut off, `Expect` over the limit) x every route that takes a body.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from plugin import Config, ConsentSignals, Content, Context, Enricher
from plugin.config import CacheConfig, HttpConfig, ServeConfig
from plugin.middleware import ad_context, cohortkv_middleware
from plugin.serve.app import make_app
from tests.helpers.fake_adserver import FakeAdServer
from tests.helpers.fakes import API_KEY, FakePermutive
from tests.helpers.faults import MODES, FaultyPermutive
from tests.helpers.samples import DEVICE
from tests.helpers.times import recent
from tests.helpers.waiting import until
from tests.test_serve_edges import BID, BOMB, pbs_config
from tests.test_serve_guard import connect, serving, split

BUDGET_S = 0.3
MARGIN_S = 0.2
"""A bound, not a measurement: every fault lasts at least `FaultyPermutive.slow_s` (0.6 s) or
forever, so a result inside budget + margin (0.5 s) can only mean the budget was kept."""
GAM = "/gampad/ads?iu=/1/ctv&sz=640x480&output=vast&correlator=1"
EXPECTED_KIND = {
    "hang": "timeout",
    "5xx": "http_5xx",
    "429": "http_429",
    "malformed": "decode",
    "wrong_shape": "decode",
    "refused": "connect",
    "reset": ("connect", "other"),
    "huge": "too_large",
    "drip": "timeout",
}


def _ctx(view: int) -> Context:
    return Context(
        identity=DEVICE,
        consent=ConsentSignals(override=True),
        content=Content(url="https://example.com/v/1"),
        view_id=f"view-{view}",
    )


class AdServer:
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(request.raw_path)
        return web.Response(text="<VAST/>", content_type="application/xml")


# An entry point takes (enricher, ad URL, context) and returns the URL that went out.
Entry = Callable[[Enricher, str, Context], Awaitable[str]]


async def via_library(enricher: Enricher, url: str, ctx: Context) -> str:
    return (await enricher.enrich(url, ctx)).url


async def via_middleware(enricher: Enricher, url: str, ctx: Context) -> str:
    ads = AdServer()
    app = web.Application()
    app.router.add_get("/{tail:.*}", ads.handle)
    server = TestServer(app)
    await server.start_server()
    try:
        async with aiohttp.ClientSession(middlewares=(cohortkv_middleware(enricher),)) as s:
            with ad_context(ctx):
                target = str(server.make_url("")).rstrip("/") + url[url.index("/gampad") :]
                async with s.get(aiohttp.client.URL(target, encoded=True)) as resp:
                    assert resp.status == 200
        return ads.seen[-1]
    finally:
        await server.close()


async def via_sidecar(enricher: Enricher, url: str, ctx: Context) -> str:
    """`GET /proxy/gam/...` through the sidecar app, identity and consent in its headers."""
    ads = AdServer()
    ad_app = web.Application()
    ad_app.router.add_get("/{tail:.*}", ads.handle)
    ad_server = TestServer(ad_app)
    await ad_server.start_server()
    upstream = str(ad_server.make_url("")).rstrip("/")
    cfg = enricher.config.with_overrides(serve=ServeConfig(upstreams={"gam": upstream}))
    sidecar = TestServer(make_app(cfg, enricher=enricher))
    await sidecar.start_server()
    assert ctx.identity is not None and ctx.identity.alias is not None
    headers = {
        "X-Cohortkv-Alias": f"{ctx.identity.alias.tag}:{ctx.identity.alias.id}",
        "X-Cohortkv-Consent": "granted",
        "X-Cohortkv-Content-Url": ctx.content.url or "",
        "X-Cohortkv-View-Id": ctx.view_id or "",
    }
    try:
        async with aiohttp.ClientSession() as s:
            target = (
                str(sidecar.make_url("")).rstrip("/") + "/proxy/gam" + url[url.index("/gampad") :]
            )
            async with s.get(aiohttp.client.URL(target, encoded=True), headers=headers) as resp:
                assert resp.status == 200
                assert await resp.text() == "<VAST/>"
        return ads.seen[-1]
    finally:
        await sidecar.close()
        await ad_server.close()


@pytest.fixture
async def faulty() -> AsyncIterator[FaultyPermutive]:
    async with FaultyPermutive() as f:
        yield f


def _errors(registry: CollectorRegistry, api: str, kind: str) -> float:
    v = registry.get_sample_value("cohortkv_upstream_errors_total", {"api": api, "kind": kind})
    return v or 0.0


@pytest.mark.parametrize(
    "entry", [via_library, via_middleware, via_sidecar], ids=["library", "middleware", "sidecar"]
)
@pytest.mark.parametrize("api", ["ccs", "contextual"])
@pytest.mark.parametrize("mode", MODES)
async def test_fault(faulty: FaultyPermutive, mode: str, api: str, entry: Entry) -> None:
    registry = CollectorRegistry()
    cfg = Config(
        api_key=API_KEY,
        ccs_url=faulty.url("ccs"),
        ctx_url=faulty.url("contextual"),
        budget_ms=int(BUDGET_S * 1000),
        http=HttpConfig(request_timeout_s=0.8),
        cache=CacheConfig(contextual_ttl_s=0.01),
    )
    url = "https://pubads.g.doubleclick.net" + GAM
    async with Enricher(cfg, registry=registry) as e:
        primed = await e.enrich(url, _ctx(0))
        assert (primed.behavioral.source, primed.contextual.source) == ("live", "live")
        # contextual_ttl_s is 0.01 s: past it the answer is no longer fresh (real time passing
        # is the point here, and 20 ms is twice the TTL)
        await asyncio.sleep(0.02)
        await faulty.set_mode(api, mode)

        started = time.perf_counter()
        out = await entry(e, url, _ctx(1))
        took = time.perf_counter() - started

        assert took < BUDGET_S + MARGIN_S, f"{mode}/{api}: {took:.3f}s"
        # the fallback cohorts are in the URL that went out, the other signal is live
        assert "permutive%3D12345%2C67890%2C99999" in out, out
        if mode == "slow":
            late = {"api": api}
            await until(
                lambda: registry.get_sample_value("cohortkv_late_answers_total", late) == 1,
                what=f"{mode}/{api}: the late answer is counted",
            )
        else:
            kinds = EXPECTED_KIND[mode]
            kinds = kinds if isinstance(kinds, tuple) else (kinds,)
            await until(
                lambda: sum(_errors(registry, api, k) for k in kinds) >= 1,
                what=f"{mode}/{api}: the failure is counted",
            )


# -- the client's side: bodies that are compressed, bombs, slow, or cut off ---------------------
#
# Each fault x each route that takes a body, against the sidecar as `cohortkv serve` runs it: the
# answer is the one promised, the ad request still goes out where it can (unchanged, or enriched
# and encoded again), nothing goes out where it cannot, and the fault is counted.

BODY_ROUTES = {
    "proxy": "/proxy/pbs/openrtb2/auction",
    "enrich": "/v1/enrich",
    "events": "/v1/events",
}
PROXIED = "proxied"
"""The upstream got the bid request, enriched, in bytes that match its Content-Encoding."""
AS_SENT = "as_sent"
"""The upstream got exactly the bytes and the label the client sent (unenriched)."""
# fault -> (how the body goes out, status per route (None: no answer), what reached the upstream
# from the proxy, the counter that counts it)
BODY_FAULTS: dict[
    str, tuple[str, dict[str, int | None], str | None, tuple[str, dict[str, str]]]
] = {
    "gzip": ("gzip", {"proxy": 200, "enrich": 200, "events": 202}, PROXIED, ("", {})),
    "deflate": ("deflate", {"proxy": 200, "enrich": 200, "events": 202}, PROXIED, ("", {})),
    "bomb": (
        "bomb",
        {"proxy": 413, "enrich": 413, "events": 413},
        None,
        ("cohortkv_http_rejected_total", {"limit": "body"}),
    ),
    "unsupported": (
        "br",
        {"proxy": 200, "enrich": 415, "events": 415},
        AS_SENT,
        ("cohortkv_bad_input_total", {"source": "body", "kind": "unsupported_encoding"}),
    ),
    "malformed": (
        "bad-gzip",
        {"proxy": 200, "enrich": 400, "events": 400},
        AS_SENT,
        ("cohortkv_bad_input_total", {"source": "body", "kind": "malformed_encoding"}),
    ),
    "slow": (
        "slow",
        {"proxy": 408, "enrich": 408, "events": 408},
        None,
        ("cohortkv_http_connections_closed_total", {"reason": "body_timeout"}),
    ),
    "gone": (
        "gone",
        {"proxy": None, "enrich": None, "events": None},
        None,
        ("cohortkv_http_connections_closed_total", {"reason": "client_disconnect"}),
    ),
    "expect_too_big": (
        "expect",
        {"proxy": 413, "enrich": 413, "events": 413},
        None,
        ("cohortkv_http_rejected_total", {"limit": "body"}),
    ),
}


def _json_body(route: str) -> bytes:
    doc: dict[str, object] = {
        "proxy": BID,
        "enrich": {"url": "https://pbs.example/openrtb2/auction", "method": "POST", "body": BID},
        "events": {
            "identity": {"user_id": "2b1e6c7a-4d3f-4e8a-9b2c-1d0e9f8a7b6c"},
            "consent": {"granted": True},
            "events": [{"name": "Videoview", "time": recent()}],
        },
    }[route]
    return json.dumps(doc).encode()


def _request(route: str, how: str) -> tuple[bytes, bytes, str | None]:
    """The request head, the body bytes that follow it, and the Content-Encoding."""
    plain = _json_body(route)
    body, coding = {
        "gzip": (gzip.compress(plain), "gzip"),
        "deflate": (zlib.compress(plain), "deflate"),
        "bomb": (BOMB, "gzip"),
        "br": (b"\x8b\x03\x80" + plain + b"\x03", "br"),
        "bad-gzip": (b"\x1f\x8b" + plain, "gzip"),
    }.get(how, (plain, None))
    length = len(body) if how != "expect" else 2_000_000
    head = (
        f"POST {BODY_ROUTES[route]} HTTP/1.1\r\nHost: sidecar\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\nConnection: close\r\n"
    )
    if coding is not None:
        head += f"Content-Encoding: {coding}\r\n"
    if how == "expect":
        head += "Expect: 100-continue\r\n"
    return (head + "\r\n").encode(), body, coding


@pytest.mark.parametrize("route", list(BODY_ROUTES))
@pytest.mark.parametrize("fault", list(BODY_FAULTS))
async def test_body_fault(fault: str, route: str) -> None:
    how, statuses, upstream, (metric, labels) = BODY_FAULTS[fault]
    head, body, coding = _request(route, how)
    async with FakePermutive() as fake, FakeAdServer() as ads:
        cfg = pbs_config(fake, ads, header_timeout_s=30.0, body_timeout_s=0.3)
        async with serving(cfg) as side:
            reader, writer = await connect(side.port)
            writer.write(head + {"slow": body[:1], "gone": body[:10], "expect": b""}.get(how, body))
            await writer.drain()
            if how == "gone":
                await until(lambda: side.sample("cohortkv_http_connections") == 1)
                writer.close()
                answer = None
            else:
                answer = await asyncio.wait_for(reader.read(), 10)  # answered, then closed
                writer.close()
            if metric:
                await until(lambda: side.sample(metric, **labels) == 1)
            assert side.sample("cohortkv_serve_errors_total", route="unhandled") == 0
    expected = statuses[route]
    if expected is None:
        assert answer is None
    else:
        assert answer is not None and split(answer)[0] == expected, answer
        assert not answer.startswith(b"HTTP/1.1 100"), "told to send a body it then refused"
    if route != "proxy" or upstream is None:
        assert ads.requests == []
    elif upstream == AS_SENT:
        assert ads.last.body == body and ads.last.headers["Content-Encoding"] == coding
    else:
        assert ads.last.headers["Content-Encoding"] == coding
        sent = json.loads(ads.last.plain())  # the bytes match their label
        assert sent["user"]["data"] == [{"name": "permutive", "segment": [{"id": "99999"}]}]
