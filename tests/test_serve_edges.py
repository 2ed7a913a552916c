"""The sidecar's edges, each test an attacker's request against `cohortkv serve` with loopback
fakes of the Permutive APIs and the ad server: compressed bodies (and decompression bombs), slow
bodies, `Expect: 100-continue`, clients that leave mid-body, and header bytes that are not UTF-8
(raw sockets where the exact bytes matter)."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from plugin.config import Config, ConfigError, UpstreamConfig, load_config
from tests.helpers.fake_adserver import FakeAdServer, Running, running, sidecar_config
from tests.helpers.fakes import FakePermutive
from tests.helpers.times import recent
from tests.test_reserved_names import AD_HOST, TAIL, USER
from tests.test_serve_guard import WAIT, connect, read_response, serving, split, until

# -- compressed bodies -----------------------------------------------------------------------

BID = {
    "id": "req-1",
    "imp": [{"id": "1", "video": {"mimes": ["video/mp4"], "w": 1920, "h": 1080}}],
    "site": {"page": "https://news.example/a/1"},
    "regs": {"us_privacy": "1YNN"},
}
"""A bid request the openrtb adapter enriches: its page has contextual cohorts (99999)."""


def _raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


CODINGS = [
    pytest.param("gzip", gzip.compress, id="gzip"),
    pytest.param("x-gzip", gzip.compress, id="x-gzip"),
    pytest.param("deflate", zlib.compress, id="deflate"),
    pytest.param("deflate", _raw_deflate, id="raw-deflate"),  # as some clients send it
    pytest.param("gzip, gzip", lambda b: gzip.compress(gzip.compress(b)), id="stacked"),
    pytest.param("identity, gzip", gzip.compress, id="identity-gzip"),
]


def pbs_config(fake: FakePermutive, ads: FakeAdServer, **serve: Any) -> Config:
    upstreams = {"pbs": UpstreamConfig(url=ads.url, platform="openrtb"), "gam": ads.url}
    cfg = sidecar_config(fake, ads, upstreams=upstreams, **serve)
    return cfg.with_overrides(adapters={"openrtb": {"activation_platforms": ["dfp"]}})


@asynccontextmanager
async def pbs(fake: FakePermutive, ads: FakeAdServer, **serve: Any) -> AsyncIterator[Running]:
    async with running(pbs_config(fake, ads, **serve)) as side:
        yield side


@pytest.mark.parametrize(("coding", "compress"), CODINGS)
async def test_a_compressed_bid_request_is_enriched_and_encoded_again(
    fake: FakePermutive, ads: FakeAdServer, coding: str, compress: Callable[[bytes], bytes]
) -> None:
    raw = compress(json.dumps(BID).encode())
    headers = {"Content-Type": "application/json", "Content-Encoding": coding}
    async with pbs(fake, ads) as side:
        resp = await side.client.post("/proxy/pbs/openrtb2/auction", data=raw, headers=headers)
        assert resp.status == 200
    got = ads.last
    assert got.headers["Content-Encoding"] == coding
    assert int(got.headers["Content-Length"]) == len(got.body)
    sent = json.loads(got.plain())  # the bytes are what their label says
    assert sent["user"]["data"] == [{"name": "permutive", "segment": [{"id": "99999"}]}]
    assert {k: v for k, v in sent.items() if k != "user"} == BID


async def test_a_compressed_body_nothing_is_written_into_goes_out_as_it_came(
    fake: FakePermutive, ads: FakeAdServer
) -> None:
    raw = gzip.compress(json.dumps({**BID, "site": {}}).encode(), mtime=0)  # no content: no cohorts
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    async with pbs(fake, ads) as side:
        resp = await side.client.post("/proxy/pbs/openrtb2/auction", data=raw, headers=headers)
        assert resp.status == 200
        # A GAM POST: its URL is enriched, its body is not the adapter's, and stays as sent.
        resp = await side.client.post(f"/proxy/gam{TAIL}", data=raw, headers=headers)
        assert resp.status == 200
    for got in ads.requests:
        assert got.body == raw and got.headers["Content-Encoding"] == "gzip"


@pytest.mark.parametrize(
    ("path", "accepted"), [("/v1/enrich", 200), ("/v1/events", 202)], ids=["enrich", "events"]
)
async def test_the_json_api_takes_gzip_bodies(side: Running, path: str, accepted: int) -> None:
    docs = {
        "/v1/enrich": {"url": f"{AD_HOST}{TAIL}"},
        "/v1/events": {
            "identity": {"user_id": USER},
            "consent": {"granted": True},
            "events": [{"name": "Videoview", "time": recent()}],
        },
    }
    raw = gzip.compress(json.dumps(docs[path]).encode())
    resp = await side.client.post(path, data=raw, headers={"Content-Encoding": "gzip"})
    assert resp.status == accepted, await resp.text()


BOMB = gzip.compress(b" " * (64 << 20))
"""64 MiB of spaces in about 64 KiB: 64 times `max_body_bytes`."""


@pytest.mark.parametrize("path", ["/proxy/pbs/openrtb2/auction", "/v1/enrich", "/v1/events"])
async def test_a_decompression_bomb_is_a_413(
    fake: FakePermutive, ads: FakeAdServer, path: str
) -> None:
    async with pbs(fake, ads) as side:
        resp = await side.client.post(path, data=BOMB, headers={"Content-Encoding": "gzip"})
        assert resp.status == 413
        assert await resp.json() == {
            "error": "request body too large",
            "limit_bytes": 1_048_576,
            "decoded": True,
        }
        assert side.sample("cohortkv_http_rejected_total", limit="body") == 1
    assert ads.requests == []


@pytest.mark.parametrize("coding", ["br", "zstd", "compress", "gzip, br", "gzip, " * 5 + "gzip"])
async def test_an_unsupported_coding_is_a_415_in_the_json_api(side: Running, coding: str) -> None:
    resp = await side.client.post(
        "/v1/enrich", data=b"\x00\x01", headers={"Content-Encoding": coding}
    )
    assert resp.status == 415
    assert await resp.json() == {
        "error": "unsupported content encoding",
        "field": "Content-Encoding",
        "expected": "gzip or deflate or identity",
    }
    assert side.sample("cohortkv_bad_input_total", source="body", kind="unsupported_encoding") == 1


@pytest.mark.parametrize(
    ("coding", "raw"),
    [("br", b"\x8b\x03\x80hello\x03"), ("gzip", b"not gzip at all")],
    ids=["unsupported", "malformed"],
)
async def test_the_proxy_forwards_a_body_it_cannot_decode_as_it_came(
    fake: FakePermutive, ads: FakeAdServer, coding: str, raw: bytes
) -> None:
    """The ad request still goes out (fail open): unenriched, the bytes and label untouched,
    counted."""
    headers = {"Content-Type": "application/json", "Content-Encoding": coding}
    async with pbs(fake, ads) as side:
        resp = await side.client.post("/proxy/pbs/openrtb2/auction", data=raw, headers=headers)
        assert resp.status == 200
        counted = side.total("cohortkv_bad_input_total")
        not_recognised = side.sample(
            "cohortkv_not_recognised_total", origin="pbs", platform="openrtb", reason="encoding"
        )
    assert ads.last.body == raw and ads.last.headers["Content-Encoding"] == coding
    assert counted == 1 and not_recognised == 1


# -- slow bodies ----------------------------------------------------------------------------


def slow_head(path: str, length: int = 1000) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: sidecar\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n{{"
    ).encode()


async def test_slow_bodies_are_cut_off_and_cannot_hold_the_connection_cap(
    fake: FakePermutive, ads: FakeAdServer
) -> None:
    cfg = pbs_config(fake, ads, max_connections=3, header_timeout_s=30.0, body_timeout_s=0.3)
    paths = ["/v1/events", "/v1/enrich", "/proxy/pbs/openrtb2/auction"]
    async with serving(cfg) as side:
        held = [await connect(side.port) for _ in paths]
        for (_, writer), path in zip(held, paths, strict=True):
            writer.write(slow_head(path))  # the head, one byte of a 1000-byte body, then nothing
        for reader, writer in held:
            answer = await asyncio.wait_for(reader.read(), WAIT)  # answered, then closed
            writer.close()
            status, headers, body = split(answer)
            assert status == 408
            assert headers["connection"] == "close"
            assert json.loads(body) == {"error": "request body timed out", "timeout_s": 0.3}
        assert side.closed("body_timeout") == 3
        await until(lambda: side.sample("cohortkv_http_connections") == 0)
        # The cap is free again: a request is served.
        reader, writer = await connect(side.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: sidecar\r\n\r\n")
        assert (await read_response(reader))[0] == 200
        writer.close()
    assert ads.requests == []


async def test_a_body_the_route_does_not_read_is_not_waited_for_beyond_the_body_timeout(
    fake: FakePermutive, ads: FakeAdServer
) -> None:
    cfg = sidecar_config(fake, ads, header_timeout_s=30.0, body_timeout_s=0.3)
    async with serving(cfg) as side:
        reader, writer = await connect(side.port)
        writer.write(slow_head("/healthz").replace(b"POST", b"GET"))
        answer = await asyncio.wait_for(reader.read(), WAIT)  # the server closes it
        writer.close()
        assert split(answer)[0] == 200
        await until(lambda: side.sample("cohortkv_http_connections") == 0)


async def test_a_body_that_arrives_in_pieces_within_the_timeout_is_read(
    fake: FakePermutive, ads: FakeAdServer
) -> None:
    body = json.dumps({"url": f"{AD_HOST}{TAIL}"}).encode()
    cfg = sidecar_config(fake, ads, body_timeout_s=5.0)
    async with serving(cfg) as side:
        reader, writer = await connect(side.port)
        writer.write(
            b"POST /v1/enrich HTTP/1.1\r\nHost: sidecar\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        for i in range(0, len(body), 16):
            writer.write(body[i : i + 16])
            await writer.drain()
            await asyncio.sleep(0.01)
        status, answer = await read_response(reader)
        writer.close()
        assert status == 200, answer
        assert side.closed("body_timeout") == 0


# -- Expect: 100-continue ---------------------------------------------------------------------

ROUTES = [
    "POST /v1/enrich",
    "POST /v1/events",
    "POST /proxy/gam/gampad/ads?iu=/1",
    "POST /proxy/unknown/x",
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "GET /openapi.json",
]


@pytest.mark.parametrize("route", ROUTES)
async def test_expect_100_continue_over_the_limit_is_a_413_without_100_continue(
    fake: FakePermutive, ads: FakeAdServer, route: str
) -> None:
    async with serving(sidecar_config(fake, ads, max_body_bytes=1000)) as side:
        reader, writer = await connect(side.port)
        writer.write(
            f"{route} HTTP/1.1\r\nHost: sidecar\r\nContent-Length: 1001\r\n"
            "Expect: 100-continue\r\n\r\n".encode()
        )
        answer = await asyncio.wait_for(reader.read(), WAIT)  # answered, then closed
        writer.close()
        status, headers, body = split(answer)
        assert status == 413, answer
        assert json.loads(body) == {"error": "request body too large", "limit_bytes": 1000}
        assert headers["x-request-id"]
        assert side.sample("cohortkv_http_rejected_total", limit="body") == 1


async def test_expect_100_continue_within_the_limit_still_continues(
    fake: FakePermutive, ads: FakeAdServer
) -> None:
    body = json.dumps({"url": f"{AD_HOST}{TAIL}"}).encode()
    async with serving(sidecar_config(fake, ads)) as side:
        reader, writer = await connect(side.port)
        writer.write(
            b"POST /v1/enrich HTTP/1.1\r\nHost: sidecar\r\nContent-Length: %d\r\n"
            b"Expect: 100-continue\r\n\r\n" % len(body)
        )
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(body)
        status, answer = await read_response(reader)
        writer.close()
        assert status == 200, answer
        # Any other expectation is refused in JSON.
        reader, writer = await connect(side.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: sidecar\r\nExpect: 200-ok\r\n\r\n")
        status, answer = await read_response(reader)
        writer.close()
        assert status == 417
        assert json.loads(answer) == {
            "error": "expectation failed",
            "field": "Expect",
            "expected": "100-continue",
        }


# -- clients that leave mid-body ----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/events", "/v1/enrich", "/proxy/pbs/openrtb2/auction"])
async def test_a_client_that_leaves_mid_body_is_counted_not_a_traceback(
    fake: FakePermutive, ads: FakeAdServer, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    async with serving(pbs_config(fake, ads)) as side:
        with caplog.at_level(logging.DEBUG):
            for _ in range(3):
                _, writer = await connect(side.port)
                writer.write(slow_head(path) + b'"a": ')
                await writer.drain()
                await until(lambda: side.sample("cohortkv_http_connections") == 1)
                writer.close()
                await until(lambda: side.sample("cohortkv_http_connections") == 0)
            await until(lambda: side.closed("client_disconnect") == 3)
        assert side.sample("cohortkv_serve_errors_total", route="unhandled") == 0
    assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []
    lines = [r for r in caplog.records if "went away" in r.getMessage()]
    assert len(lines) == 1  # rate-limited; the count is in the metric
    assert ads.requests == []


# -- header bytes that are not UTF-8 -----------------------------------------------------------


async def test_header_values_that_are_not_utf8_are_not_silently_cut(
    fake: FakePermutive, ads: FakeAdServer
) -> None:
    """`caf\\xe9\\xff` used to reach the ad server as `caf`. aiohttp's client writes header
    values as UTF-8 text, so the bytes are read as ISO-8859-1 (HTTP's historic charset): every
    character reaches the ad server, and the rewrite is counted."""
    async with serving(sidecar_config(fake, ads)) as side:
        reader, writer = await connect(side.port)
        writer.write(
            b"GET /proxy/gam/gampad/ads?iu=/1 HTTP/1.1\r\nHost: sidecar\r\n"
            b"User-Agent: Player caf\xe9\xff/1.0\r\nX-Device-User-Agent: plain/1.0\r\n"
            b"X-Forwarded-For: 10.0.0.\xb9\r\n\r\n"
        )
        assert (await read_response(reader))[0] == 200
        writer.close()
        counted = side.sample("cohortkv_bad_input_total", source="proxy", kind="header_encoding")
    got = ads.last
    assert got.raw_header(b"User-Agent") == "Player caf\xe9\xff/1.0".encode()
    assert got.raw_header(b"X-Device-User-Agent") == b"plain/1.0"
    assert got.raw_header(b"X-Forwarded-For") == "10.0.0.\xb9, 127.0.0.1".encode()
    assert counted == 2


# -- configuration ---------------------------------------------------------------------------


def test_body_timeout_is_a_setting_with_a_default_and_an_environment_variable() -> None:
    assert load_config(env={"COHORTKV_SANDBOX": "true"}).serve.body_timeout_s == 10.0
    env = {"COHORTKV_SANDBOX": "true", "COHORTKV_SERVE__BODY_TIMEOUT_S": "2.5"}
    assert load_config(env=env).serve.body_timeout_s == 2.5
    env["COHORTKV_SERVE__BODY_TIMEOUT_S"] = "0"
    with pytest.raises(ConfigError, match=r"COHORTKV_SERVE__BODY_TIMEOUT_S: serve\.body_timeout_s"):
        load_config(env=env)
