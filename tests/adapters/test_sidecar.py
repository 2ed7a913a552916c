"""The sidecar with the two new platforms, as the docs show them: a Prebid Server upstream
(`platform = "openrtb"`, POST) and a generic VAST ad server (`platform = "query"`, GET)."""

from __future__ import annotations

import asyncio
import gzip
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from plugin.config import Config, ServeConfig, UpstreamConfig
from tests.helpers.cli import serve_process
from tests.helpers.fake_adserver import running
from tests.helpers.fakes import API_KEY, FakePermutive
from tests.helpers.jsonbytes import outside

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
    await server.start_server(auto_decompress=False)  # keep what the wire carried
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


# --- bid requests the sidecar receives compressed (fixtures with "gzip": true) ---

FIXTURES = Path(__file__).parent / "fixtures" / "openrtb"
CASES = {p.stem: msgspec.json.decode(p.read_bytes()) for p in sorted(FIXTURES.glob("*.json"))}
GZIPPED = sorted(name for name, case in CASES.items() if case.get("gzip"))


def test_the_corpus_has_compressed_bid_requests() -> None:
    assert len(GZIPPED) >= 2


@pytest.mark.parametrize("name", GZIPPED)
async def test_a_compressed_bid_request_is_enriched_and_sent_on_compressed(
    name: str, fake: FakePermutive, upstream: tuple[Recorder, str]
) -> None:
    """The fixture's body goes in gzip-compressed; Prebid Server must receive what the
    fixture expects, encoded as its Content-Encoding says."""
    case = CASES[name]
    recorder, url = upstream
    written = case["expected"]["written"]["permutive"]
    fake.ccs_answer = {"user_id": fake.ccs_answer["user_id"], "cohorts": [], "activations": {}}
    fake.ctx_default = {"cohorts": written, "activations": {"dfp": written}}
    cfg = config(fake, url, openrtb={"activation_platforms": ["dfp"]})
    body = case["request"]["body_text"].encode()
    headers = dict(case["request"].get("headers", []))
    headers.update({"Content-Type": "application/json", "Content-Encoding": "gzip"})
    async with running(cfg) as side:
        resp = await side.client.post(
            "/proxy/pbs/openrtb2/auction", data=gzip.compress(body), headers=headers
        )
        assert resp.status == 200
    _, _, sent, got_headers = recorder.seen[-1]
    assert got_headers.get("Content-Encoding") == "gzip"
    assert gzip.decompress(sent) == case["expected"]["request"]["body_text"].encode()


# --- a Prebid-shaped auction through `cohortkv serve` ---

PREBID_AUCTION = """{
  "id": "auction-77",
  "imp": [
    {
      "id": "div-1",
      "banner": {"format": [{"w": 300, "h": 250}]},
      "bidfloor": 1.00,
      "ext": {"prebid": {"bidder": {"appnexus": {"placementId": 13144370},
                                    "rubicon": {"accountId": 1001}, "ix": {"siteId": "3"}}}}
    }
  ],
  "app": {"bundle": "com.example.news", "content": {"url": "https://news.example/story/7"}},
  "device": {"ifa": "6d92078a-8246-4ba4-ae5b-76104861e7dc", "os": "iOS", "lmt": 0},
  "user": {
    "data": [{"name": "dmp.example", "segment": [{"id": "d1"}]}],
    "ext": {"consent": "%s"}
  },
  "regs": {"ext": {"gdpr": 1}},
  "ext": {"prebid": {"targeting": {},
                     "bidderconfig": [{"bidders": ["pubmatic"],
                                       "config": {"ortb2": {"user": {"keywords": "k"}}}}]}}
}"""
TC_GRANTED = "CP60aCAP60aCAAKACBENAwEAAP_gAAAAAAYgC0wAQC0gAAAA.IAAA"


async def test_prebid_auction_through_serve_gets_per_bidder_cohorts_only(
    fake: FakePermutive, upstream: tuple[Recorder, str], tmp_path: Path
) -> None:
    """scope = "bidders", names = "prebid": each bidder's cohorts reach Prebid Server in its own
    ext.prebid.bidderconfig entry, as Prebid.js would send them; nothing request-wide, and
    every byte outside ext is as the caller sent it."""
    recorder, url = upstream
    fake.ccs_answer = {
        "user_id": fake.ccs_answer["user_id"],
        "cohorts": ["201", "301", "901"],
        "activations": {"appnexus": ["201"], "rubicon": ["301"], "standard": ["901"]},
    }
    fake.ctx_default = {"cohorts": ["c2"], "activations": {"appnexus": ["c2"]}}
    config = tmp_path / "cohortkv.toml"
    config.write_text(
        f'api_key = "{API_KEY}"\nccs_url = "{fake.url}"\nctx_url = "{fake.url}"\n'
        "budget_ms = 2000\n"
        '[serve]\nhost = "127.0.0.1"\nport = 0\n'
        f'[serve.upstreams.pbs]\nurl = "{url}"\nplatform = "openrtb"\n'
        '[adapters.openrtb]\nscope = "bidders"\nnames = "prebid"\n'
        'standard_activation_platforms = ["standard"]\n'
        '[adapters.openrtb.bidders]\nappnexus = ["appnexus", "standard"]\n'
        'rubicon = ["rubicon"]\nix = ["ix"]\n'
    )
    body = (PREBID_AUCTION % TC_GRANTED).encode()
    proc, port = await serve_process(config)
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"http://127.0.0.1:{port}/proxy/pbs/openrtb2/auction",
                data=body,
                headers={"Content-Type": "application/json"},
            ) as resp,
        ):
            assert resp.status == 200
            assert await resp.json() == {"id": "r1", "seatbid": []}
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 60)
    method, target, sent, headers = recorder.seen[-1]
    assert (method, target, int(headers["Content-Length"])) == (
        "POST",
        "/openrtb2/auction",
        len(sent),
    )
    assert fake.bodies["ccs"][0]["body"]["alias"] == {
        "tag": "idfa",
        "id": "6d92078a-8246-4ba4-ae5b-76104861e7dc",
    }
    doc = msgspec.json.decode(sent)
    other = {"name": "dmp.example", "segment": [{"id": "d1"}]}

    def entry(code: str, data: list[Any], ext: dict[str, Any]) -> dict[str, Any]:
        return {
            "bidders": [code],
            "config": {"ortb2": {"user": {"data": data, "ext": {"data": ext}}}},
        }

    assert doc["ext"]["prebid"]["bidderconfig"] == [
        {"bidders": ["pubmatic"], "config": {"ortb2": {"user": {"keywords": "k"}}}},
        entry(
            "appnexus",
            [other, {"name": "permutive", "segment": [{"id": "201"}, {"id": "c2"}]},
             {"name": "permutive.com", "segment": [{"id": "901"}]}],
            {"permutive": ["201", "c2"], "p_standard": ["901"]},
        ),
        entry(
            "rubicon",
            [other, {"name": "permutive", "segment": [{"id": "301"}]}],
            {"permutive": ["301"]},
        ),
    ]  # fmt: skip
    # nothing request-wide: user and app as sent, and every byte outside ext too
    assert doc["user"] == {"data": [other], "ext": {"consent": TC_GRANTED}}
    assert outside(sent, ["ext"]) == outside(body, ["ext"])
