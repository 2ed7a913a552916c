"""Size limits answer in JSON; too many enrichments in flight means forwarding unenriched."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from tests.helpers.fake_adserver import FakeAdServer, Running, running, sidecar_config
from tests.helpers.fakes import FakePermutive
from tests.helpers.times import recent

USER = "2b1e6c7a-4d3f-4e8a-9b2c-1d0e9f8a7b6c"


@pytest.fixture
async def side(fake: FakePermutive, ads: FakeAdServer) -> AsyncIterator[Running]:
    cfg = sidecar_config(fake, ads, max_url_length=512, max_header_bytes=1024, max_body_bytes=2048)
    async with running(cfg) as r:
        yield r


async def test_long_url_gets_414_json(side: Running, ads: FakeAdServer) -> None:
    ok = await side.client.get("/proxy/gam/gampad/ads?iu=" + "a" * 400)
    assert ok.status == 200
    resp = await side.client.get("/proxy/gam/gampad/ads?iu=" + "a" * 600)
    assert resp.status == 414
    assert await resp.json() == {"error": "URL too long", "limit_bytes": 512, "field": "url"}
    assert len(ads.requests) == 1
    assert side.sample("cohortkv_http_rejected_total", limit="url") == 1


async def test_large_headers_get_413_json(side: Running, ads: FakeAdServer) -> None:
    resp = await side.client.get("/proxy/gam/gampad/ads?iu=1", headers={"X-Big": "b" * 1500})
    assert resp.status == 413
    assert await resp.json() == {"error": "request headers too large", "limit_bytes": 1024}
    assert ads.requests == []


async def test_large_body_gets_413_json_with_or_without_content_length(
    side: Running, fake: FakePermutive
) -> None:
    body = {
        "identity": {"user_id": USER},
        "consent": {"granted": True},
        "events": [{"name": "x", "time": recent(0), "properties": {"p": "v" * 3000}}],
    }
    data = json.dumps(body).encode()
    resp = await side.client.post("/v1/events", data=data)
    assert resp.status == 413
    assert await resp.json() == {"error": "request body too large", "limit_bytes": 2048}

    async def chunked() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 512):
            yield data[i : i + 512]

    resp = await side.client.post("/v1/enrich", data=chunked())
    assert resp.status == 413
    assert await resp.json() == {"error": "request body too large", "limit_bytes": 2048}
    assert side.sample("cohortkv_http_rejected_total", limit="body") == 2
    assert fake.calls["ccs"] == 0


async def test_unknown_routes_and_methods_answer_json(side: Running) -> None:
    resp = await side.client.get("/nope")
    assert resp.status == 404 and (await resp.json())["error"] == "not found"
    resp = await side.client.get("/v1/enrich")
    assert resp.status == 405 and (await resp.json())["error"] == "method not allowed"
    assert resp.headers["Allow"] == "POST"


async def test_beyond_max_inflight_the_proxy_forwards_unenriched(
    fake: FakePermutive, ads: FakeAdServer
) -> None:
    fake.delay["contextual"] = 1.0
    cfg = sidecar_config(fake, ads, max_inflight_enrichments=1).with_overrides(budget_ms=5000)
    async with running(cfg) as side:
        first = asyncio.create_task(
            side.client.get("/proxy/gam/gampad/ads?iu=/1/a&url=https://e.com/a")
        )
        for _ in range(1000):  # until the first request's enrichment is under way
            if fake.calls["contextual"]:
                break
            await asyncio.sleep(0.005)
        shed = await side.client.get("/proxy/gam/gampad/ads?iu=/1/b&url=https://e.com/b")
        assert shed.status == 200
        assert ads.last.target == "/gampad/ads?iu=/1/b&url=https://e.com/b"
        api = await side.client.post(
            "/v1/enrich", data=json.dumps({"url": "https://pubads.g.doubleclick.net/gampad/ads"})
        )
        assert api.status == 503
        assert await api.json() == {"error": "too many enrichments in flight"}
        assert api.headers["Retry-After"] == "1"

        assert (await first).status == 200
        assert ads.last.target == (
            "/gampad/ads?iu=/1/a&url=https://e.com/a&cust_params=permutive%3D99999"
        )
        assert fake.calls["contextual"] == 1
        assert side.sample("cohortkv_shed_total", reason="inflight") == 1
        assert side.sample("cohortkv_shed_total", reason="enrich_api") == 1
        assert side.sidecar.gate.inflight == 0
