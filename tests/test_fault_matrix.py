"""Every fault mode x upstream x entry point: the ad request still goes out within budget.

For each cell the cache is primed with a good answer, the upstream is broken in one way, and
the next ad request must come back within the budget plus a small margin, report the right
fallback source, count the fault in the outcome metrics, and raise nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from plugin import Config, ConsentSignals, Content, Context, Enricher
from plugin.config import CacheConfig, HttpConfig, ServeConfig
from plugin.middleware import ad_context, cohortkv_middleware
from plugin.serve import make_app
from tests.fakes import API_KEY
from tests.faults import MODES, FaultyPermutive
from tests.helpers.samples import DEVICE
from tests.helpers.waiting import until

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
