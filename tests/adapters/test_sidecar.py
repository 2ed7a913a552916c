"""The sidecar with the two new platforms, as the docs show them: a Prebid Server upstream
(`platform = "openrtb"`, POST) and a generic VAST ad server (`platform = "query"`, GET)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from plugin.config import Config, ServeConfig, UpstreamConfig
from tests.fake_adserver import running
from tests.fakes import API_KEY, FakePermutive

BID = {
    "id": "r1",
    "imp": [{"id": "1", "video": {"mimes": ["video/mp4"], "w": 1920, "h": 1080}}],
    "app": {"bundle": "com.example.tv", "content": {"id": "ep-12", "series": "Show"}},
    "device": {"ifa": "a3b1c2d4-0000-4000-8000-123456789abc", "ext": {"ifa_type": "rida"}},
    "regs": {"gdpr": 0, "coppa": 0},
}


class Recorder:
    """A stand-in ad server (Prebid Server, a VAST server) that keeps what it was sent."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, bytes, dict[str, str]]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append((request.method, request.raw_path, body, dict(request.headers)))
        return web.json_response({"id": "r1", "seatbid": []})


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Recorder, str]]:
    recorder = Recorder()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recorder.handle)
    server = TestServer(app)
    await server.start_server()
    try:
        yield recorder, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


def config(fake: FakePermutive, url: str, **adapters: Any) -> Config:
    return Config(
        api_key=API_KEY,
        ccs_url=fake.url,
        ctx_url=fake.url,
        adapters=adapters,
        serve=ServeConfig(
            upstreams={
                "pbs": UpstreamConfig(url=url, platform="openrtb"),
                "vast": UpstreamConfig(url=url, platform="query"),
            }
        ),
    )


async def test_prebid_server_gets_the_enriched_bid_request(
    fake: FakePermutive, upstream: tuple[Recorder, str]
) -> None:
    recorder, url = upstream
    cfg = config(fake, url, openrtb={"activation_platforms": ["dfp"]})
    async with running(cfg) as side:
        resp = await side.client.post(
            "/proxy/pbs/openrtb2/auction",
            data=msgspec.json.encode(BID),
            headers={"Content-Type": "application/json", "X-Cohortkv-Consent": "granted"},
        )
        assert resp.status == 200
        assert await resp.json() == {"id": "r1", "seatbid": []}
    method, target, body, headers = recorder.seen[-1]
    assert (method, target) == ("POST", "/openrtb2/auction")
    assert int(headers["Content-Length"]) == len(body)
    sent = msgspec.json.decode(body)
    # merged: behavioral (regs.gdpr=0: GDPR does not apply) then contextual, to the user
    ids = ["12345", "67890", "99999"]
    assert sent["user"] == {
        "data": [{"name": "permutive", "segment": [{"id": i} for i in ids]}],
        "ext": {"data": {"permutive": ids}},
    }
    assert fake.bodies["ccs"][0]["body"]["alias"] == {
        "tag": "rida",
        "id": "a3b1c2d4-0000-4000-8000-123456789abc",
    }
    assert {k: v for k, v in sent.items() if k != "user"} == BID
    assert fake.bodies["contextual"][0]["body"]["url"] == "app://com.example.tv/ep-12"


async def test_vast_server_gets_plain_query_key_values(
    fake: FakePermutive, upstream: tuple[Recorder, str]
) -> None:
    recorder, url = upstream
    cfg = config(fake, url, query={"activation_platforms": ["dfp"]})
    query = "w=1920&ifa=abc-1&ifa_type=rida&us_privacy=1YNN&content_url=https%3A%2F%2Fe.example%2Fv"
    async with running(cfg) as side:
        resp = await side.client.get(URL(f"/proxy/vast/vast/123?{query}", encoded=True))
        assert resp.status == 200
    method, target, body, _ = recorder.seen[-1]
    assert (method, body) == ("GET", b"")
    assert target == f"/vast/123?{query}&permutive=12345,67890,99999"


async def test_an_unrecognised_request_goes_out_unchanged_and_is_counted_not_enriched(
    fake: FakePermutive, upstream: tuple[Recorder, str]
) -> None:
    """An upstream named after a platform whose shape the request does not have (a VAST server
    behind a `gam` upstream): unchanged, counted as not recognised, never as an enrichment."""
    recorder, url = upstream
    cfg = Config(
        api_key=API_KEY,
        ccs_url=fake.url,
        ctx_url=fake.url,
        serve=ServeConfig(upstreams={"gam": url, "pbs": UpstreamConfig(url, "openrtb")}),
    )
    async with running(cfg) as side:
        resp = await side.client.get(URL("/proxy/gam/vast/123?ifa=x&w=1", encoded=True))
        assert resp.status == 200
        resp = await side.client.post("/proxy/pbs/openrtb2/auction", data=b"{not json")
        assert resp.status == 200
        resp = await side.client.get("/proxy/pbs/openrtb2/auction")
        assert resp.status == 200
        assert (
            side.sample(
                "cohortkv_not_recognised_total", origin="gam", platform="gam", reason="path"
            )
            == 1
        )
        assert (
            side.sample(
                "cohortkv_not_recognised_total", origin="pbs", platform="openrtb", reason="json"
            )
            == 1
        )
        assert (
            side.sample(
                "cohortkv_not_recognised_total", origin="pbs", platform="openrtb", reason="method"
            )
            == 1
        )
        assert side.total("cohortkv_enrich_seconds_count") == 0
    assert [(m, t, b) for m, t, b, _ in recorder.seen] == [
        ("GET", "/vast/123?ifa=x&w=1", b""),
        ("POST", "/openrtb2/auction", b"{not json"),
        ("GET", "/openrtb2/auction", b""),
    ]
    assert fake.calls["ccs"] == fake.calls["contextual"] == 0


async def test_other_methods_get_405_with_allow_and_bodies_are_bounded(
    fake: FakePermutive, upstream: tuple[Recorder, str]
) -> None:
    recorder, url = upstream
    cfg = config(fake, url)
    cfg = cfg.with_overrides(serve=ServeConfig(upstreams=cfg.serve.upstreams, max_body_bytes=1024))
    async with running(cfg) as side:
        for method in ("PUT", "DELETE", "PATCH"):
            resp = await side.client.request(method, "/proxy/pbs/openrtb2/auction", data=b"{}")
            assert resp.status == 405
            assert set(resp.headers["Allow"].replace(" ", "").split(",")) == {"GET", "POST"}
        resp = await side.client.post("/proxy/pbs/openrtb2/auction", data=b"x" * 4096)
        assert resp.status == 413
    assert recorder.seen == []
