"""The enriching proxy end to end: sidecar, fake ad server and fake Permutive on loopback."""

from __future__ import annotations

import asyncio
import gzip
from typing import Any

import aiohttp
import pytest
import yarl

from tests.helpers.fake_adserver import (
    VAST,
    VAST_TYPE,
    FakeAdServer,
    Running,
    running,
    sidecar_config,
)
from tests.helpers.fakes import FakePermutive

IDFA = "6D92078A-8246-4BA4-AE5B-76104861E7DC"
USER = "2b1e6c7a-4d3f-4e8a-9b2c-1d0e9f8a7b6c"

# (upstream, query sent to the sidecar, query the ad server must receive). The FakePermutive
# answers: behavioral dfp [12345, 67890], freewheel [12345], adswizz_keyvalue [67890];
# contextual dfp [99999], freewheel [88888], adswizz_keyvalue [].
GAM_PATH = "/gampad/ads"
GAM_IN = (
    "iu=/21775744923/external/single_ad_samples&sz=640x480&cohortkv_sid=ssai-7f3a"
    "&cust_params=sample_ct%3Dlinear&ciu_szs=300x250%2C728x90&gdfp_req=1&output=vast"
    "&unviewed_position_start=1&env=vp&impl=s&correlator="
    f"&description_url=https%3A%2F%2Fexample.com%2Fv%2F1&rdid={IDFA}&idtype=idfa&is_lat=0"
    "&odd=%7e|[x]+y"
)
GAM_OUT = (
    "iu=/21775744923/external/single_ad_samples&sz=640x480"
    "&cust_params=sample_ct%3Dlinear%26permutive%3D12345%2C67890%2C99999"
    "&ciu_szs=300x250%2C728x90&gdfp_req=1&output=vast"
    "&unviewed_position_start=1&env=vp&impl=s&correlator="
    f"&description_url=https%3A%2F%2Fexample.com%2Fv%2F1&rdid={IDFA}&idtype=idfa&is_lat=0"
    "&odd=%7e|[x]+y"
)
FW_PATH = "/ad/g/1"
FW_IN = (
    "nw=96749&prof=96749:global-cocoa&csid=test_csid&caid=asset1&resp=vast4"
    f"&_fw_did=idfa:{IDFA}&cohortkv_sid=s1"
    ";_fw_content_url=https%3A%2F%2Fexample.com%2Fv%2F2&foo=bar"
    ";slid=pre&tpcl=PREROLL&ptgt=a;"
)
FW_OUT = (
    "nw=96749&prof=96749:global-cocoa&csid=test_csid&caid=asset1&resp=vast4"
    f"&_fw_did=idfa:{IDFA}"
    ";_fw_content_url=https%3A%2F%2Fexample.com%2Fv%2F2&foo=bar&permutive=12345&permutive=88888"
    ";slid=pre&tpcl=PREROLL&ptgt=a;"
)
AW_PATH = "/vast/4.0/request/alias/myzone"
AW_IN = (
    f"aw_0_1st.ifa={IDFA}&aw_0_1st.ifaType=idfa&cohortkv_consent=granted"
    "&aw_0_1st.contentUrl=https%3A%2F%2Fexample.com%2Fp%2F3&cb=123"
)
AW_OUT = (
    f"aw_0_1st.ifa={IDFA}&aw_0_1st.ifaType=idfa"
    "&aw_0_1st.contentUrl=https%3A%2F%2Fexample.com%2Fp%2F3&cb=123&aw_0_1st.permutive=67890"
)
CASES = {
    "gam": (GAM_PATH, GAM_IN, GAM_OUT),
    "freewheel": (FW_PATH, FW_IN, FW_OUT),
    "adswizz": (AW_PATH, AW_IN, AW_OUT),
}


async def get(
    r: Running, target: str, headers: dict[str, str] | None = None, **kw: Any
) -> aiohttp.ClientResponse:
    """GET exactly `target` (no client-side re-encoding) and read the body."""
    base = str(r.client.make_url("/")).rstrip("/")
    resp = await r.client.session.get(
        yarl.URL(base + target, encoded=True), headers=headers, allow_redirects=False, **kw
    )
    await resp.read()
    return resp


async def raw_http(r: Running, request: bytes) -> tuple[int, bytes]:
    """One request written byte for byte on a fresh connection; (status, body)."""
    host, port = r.client.host, r.client.port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(request)
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.parametrize("upstream", sorted(CASES))
async def test_ad_request_reaches_ad_server_with_exactly_the_expected_keyvalues(
    upstream: str, side: Running, ads: FakeAdServer, fake: FakePermutive
) -> None:
    path, sent, expected = CASES[upstream]
    resp = await get(side, f"/proxy/{upstream}{path}?{sent}", {"X-Cohortkv-Consent": "granted"})

    assert [r.target for r in ads.requests] == [f"{path}?{expected}"]
    assert resp.status == 200
    assert resp.headers["Content-Type"] == VAST_TYPE
    assert await resp.read() == VAST
    assert resp.headers["X-Ad-Server"] == "fake"
    assert resp.headers["Cache-Control"] == "no-store"
    assert fake.calls["ccs"] == 1 and fake.calls["contextual"] == 1


async def test_reserved_params_identify_the_user_and_session(
    side: Running, ads: FakeAdServer, fake: FakePermutive
) -> None:
    query = (
        f"iu=/1/x&description_url=https%3A%2F%2Fexample.com%2Fv%2F9&cohortkv_uid={USER}"
        "&cohortkv_consent=granted&output=vast&cohortkv_vid=view-1"
    )
    await get(side, f"/proxy/gam/gampad/ads?{query}")

    assert ads.last.query == "iu=/1/x&description_url=https%3A%2F%2Fexample.com%2Fv%2F9" + (
        "&output=vast&cust_params=permutive%3D12345%2C67890%2C99999"
    )
    (call,) = fake.bodies["ccs"]
    assert call["body"]["user_id"] == USER
    assert "alias" not in call["body"]


async def test_headers_win_over_reserved_params(side: Running, fake: FakePermutive) -> None:
    other = "3c2d1e0f-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
    await get(
        side,
        f"/proxy/gam/gampad/ads?iu=/1/x&url=https%3A%2F%2Fe.com%2F1&cohortkv_uid={USER}"
        "&cohortkv_consent=granted",
        {"X-Cohortkv-User-Id": other, "X-Cohortkv-Consent": "granted"},
    )
    (call,) = fake.bodies["ccs"]
    assert call["body"]["user_id"] == other
    # ...except a consent override: a denial wins wherever it stands
    await get(
        side,
        f"/proxy/gam/gampad/ads?iu=/1/x&url=https%3A%2F%2Fe.com%2F2&cohortkv_uid={USER}"
        "&cohortkv_consent=denied",
        {"X-Cohortkv-User-Id": other, "X-Cohortkv-Consent": "granted"},
    )
    assert len(fake.bodies["ccs"]) == 1


async def test_invalid_reserved_values_are_ignored_and_counted(
    side: Running, ads: FakeAdServer, fake: FakePermutive
) -> None:
    resp = await get(
        side,
        "/proxy/gam/gampad/ads?iu=/1/x&url=https%3A%2F%2Fe.com%2F1&cohortkv_uid=not-a-uuid",
        {"X-Cohortkv-Consent": "maybe"},
    )
    assert resp.status == 200
    assert ads.last.query == "iu=/1/x&url=https%3A%2F%2Fe.com%2F1&cust_params=permutive%3D99999"
    assert fake.calls["ccs"] == 0
    assert side.sample("cohortkv_bad_input_total", source="proxy", kind="user_id") == 1
    assert side.sample("cohortkv_bad_input_total", source="proxy", kind="consent") == 1


async def test_client_headers_pass_through_and_forwarded_for_is_appended(
    side: Running, ads: FakeAdServer
) -> None:
    resp = await get(
        side,
        "/proxy/gam/gampad/ads?iu=/1/x",
        {
            "User-Agent": "SSAI/1.0",
            "X-Device-User-Agent": "Roku/DVP-12.0",
            "X-Forwarded-For": "203.0.113.7",
            "X-Request-Id": "req-42",
            "X-Cohortkv-Consent": "denied",
            "Cookie": "secret=1",
            "Authorization": "Bearer nope",
        },
    )
    h = ads.last.headers
    assert h["User-Agent"] == "SSAI/1.0"
    assert h["X-Device-User-Agent"] == "Roku/DVP-12.0"
    assert h["X-Forwarded-For"] == "203.0.113.7, 127.0.0.1"
    assert h["X-Request-Id"] == "req-42"
    assert h["Host"] == ads.url.removeprefix("http://")
    for private in ("X-Cohortkv-Consent", "Cookie", "Authorization"):
        assert private not in h
    assert resp.headers["X-Request-Id"] == "req-42"


async def test_no_user_agent_is_invented(side: Running, ads: FakeAdServer) -> None:
    await get(side, "/proxy/gam/gampad/ads?iu=/1/x", skip_auto_headers=("User-Agent",))
    assert "User-Agent" not in ads.last.headers
    assert ads.last.headers["X-Forwarded-For"] == "127.0.0.1"


async def test_unknown_upstream_is_refused_and_reaches_nothing(
    side: Running, ads: FakeAdServer, fake: FakePermutive
) -> None:
    resp = await get(side, "/proxy/evil/gampad/ads?iu=/1/x&url=https%3A%2F%2Fe.com%2F1")
    assert resp.status == 404
    doc = await resp.json()
    assert doc["error"] == "unknown upstream" and doc["upstream"] == "evil"
    assert ads.requests == [] and sum(fake.calls.values()) == 0


@pytest.mark.parametrize(
    "request_line",
    [
        b"GET http://evil.example/proxy/gam/gampad/ads?iu=1 HTTP/1.1",
        b"GET /proxy/gam/../freewheel/ad/g/1?nw=1 HTTP/1.1",
        b"GET /proxy/gam/gampad/../../adswizz/x HTTP/1.1",
        b"GET /proxy/gam/%2e%2e/%2E%2E/x HTTP/1.1",
        b"GET /proxy/gam/gampad/..%2f..%2fx HTTP/1.1",
        b"GET /proxy/gam/gampad/.%2E/x HTTP/1.1",
        b"GET /proxy/gam/gampad\\..\\x HTTP/1.1",
        b"GET /proxy/gam/gampad/ads?iu=1#frag HTTP/1.1",
        b"GET /proxy HTTP/1.1",
        b"GET /proxy/gam HTTP/1.1",
        b"PUT /proxy/gam/gampad/ads?iu=1 HTTP/1.1",
        b"DELETE /proxy/gam/gampad/ads?iu=1 HTTP/1.1",
    ],
)
async def test_never_an_open_proxy(request_line: bytes, side: Running, ads: FakeAdServer) -> None:
    status, _ = await raw_http(
        side, request_line + b"\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
    )
    assert 400 <= status < 500
    assert ads.requests == []
    # What the proxy itself refuses is counted (the HTTP parser's refusals count as malformed
    # connections: tests/test_serve_guard.py).
    if status == 400 and request_line.startswith(b"GET /proxy/gam/"):
        assert side.sample("cohortkv_bad_input_total", source="proxy", kind="target") == 1


async def test_the_host_header_never_picks_the_server(side: Running, ads: FakeAdServer) -> None:
    status, body = await raw_http(
        side,
        b"GET /proxy/gam//evil.example/gampad/ads?iu=1 HTTP/1.1\r\n"
        b"Host: evil.example\r\nConnection: close\r\n\r\n",
    )
    assert status == 200 and body == VAST
    assert ads.last.target == "//evil.example/gampad/ads?iu=1"
    assert ads.last.headers["Host"] == ads.url.removeprefix("http://")


async def test_ad_server_down_gives_502_json(fake: FakePermutive, ads: FakeAdServer) -> None:
    cfg = sidecar_config(fake, ads, upstreams={"gam": "http://127.0.0.1:9"})
    async with running(cfg) as side:
        resp = await get(side, "/proxy/gam/gampad/ads?iu=/1/x")
        assert resp.status == 502
        assert await resp.json() == {"error": "ad server unreachable", "upstream": "gam"}
        assert side.sample("cohortkv_proxy_requests_total", upstream="gam", outcome="error") == 1


async def test_slow_ad_server_gives_504_json_and_shows_degraded(
    fake: FakePermutive, ads: FakeAdServer
) -> None:
    ads.delay = 1.0
    async with running(sidecar_config(fake, ads, ad_timeout_ms=100)) as side:
        for _ in range(5):
            resp = await get(side, "/proxy/gam/gampad/ads?iu=/1/x")
            assert resp.status == 504
            assert await resp.json() == {
                "error": "ad server timed out",
                "upstream": "gam",
                "timeout_ms": 100,
            }
        ready = await side.client.get("/readyz")
        doc = await ready.json()
        assert ready.status == 200 and doc["ready"] is True
        assert doc["degraded"] == ["gam"]
        assert doc["upstreams"]["gam"] == {"requests": 5, "errors": 5, "degraded": True}
        assert doc["upstreams"]["freewheel"]["degraded"] is False


async def test_ad_server_errors_pass_through_with_their_body(
    side: Running, ads: FakeAdServer
) -> None:
    ads.status, ads.body, ads.content_type = 400, b"<VAST version='4.0'/>", "text/xml"
    resp = await get(side, "/proxy/gam/gampad/ads?iu=/1/x")
    assert resp.status == 400
    assert await resp.read() == b"<VAST version='4.0'/>"
    assert resp.headers["Content-Type"] == "text/xml"


async def test_redirects_are_passed_back_not_followed(side: Running, ads: FakeAdServer) -> None:
    ads.status, ads.body = 302, b""
    ads.extra_headers = {"Location": "http://elsewhere.example/vast"}
    resp = await get(side, "/proxy/gam/gampad/ads?iu=/1/x")
    assert resp.status == 302
    assert resp.headers["Location"] == "http://elsewhere.example/vast"
    assert len(ads.requests) == 1


async def test_compressed_and_chunked_bodies_come_back_unchanged(
    side: Running, ads: FakeAdServer
) -> None:
    ads.gzip, ads.chunks = True, 4
    resp = await get(
        side, "/proxy/gam/gampad/ads?iu=/1/x", {"Accept-Encoding": "gzip"}, auto_decompress=False
    )
    assert ads.last.headers["Accept-Encoding"] == "gzip"
    assert resp.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(await resp.read()) == VAST


async def test_hop_by_hop_headers_are_removed(side: Running, ads: FakeAdServer) -> None:
    ads.extra_headers = {"Keep-Alive": "timeout=5", "Connection": "X-Private", "X-Private": "1"}
    resp = await get(side, "/proxy/gam/gampad/ads?iu=/1/x")
    assert resp.status == 200
    assert "Keep-Alive" not in resp.headers and "X-Private" not in resp.headers
    assert await resp.read() == VAST


async def test_a_body_that_breaks_off_is_not_passed_off_as_complete(
    fake: FakePermutive, ads: FakeAdServer
) -> None:
    async def half_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: 1000\r\n\r\n<VAST"
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(half_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        cfg = sidecar_config(fake, ads, upstreams={"gam": f"http://127.0.0.1:{port}"})
        async with running(cfg) as side:
            with pytest.raises(aiohttp.ClientPayloadError):
                await get(side, "/proxy/gam/gampad/ads?iu=/1/x")
            assert (
                side.sample("cohortkv_proxy_requests_total", upstream="gam", outcome="error") == 1
            )
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/gampad//ads?iu=/1/x&output=vast", "/gampad//ads?iu=/1/x&output=vast"),
        ("//gampad///ads?iu=1", "//gampad///ads?iu=1"),
        ("/gampad/ads?", "/gampad/ads?"),
        ("/gampad//ads?", "/gampad//ads?"),
        ("/x//y/?", "/x//y/?"),
    ],
)
async def test_double_slashes_and_a_bare_question_mark_reach_the_ad_server_as_sent(
    side: Running, ads: FakeAdServer, target: str, expected: str
) -> None:
    """Nothing to add (no consent): the target the ad server reads is the one received."""
    status, _ = await raw_http(
        side,
        b"GET /proxy/gam" + target.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    assert status == 200
    assert ads.last.target == expected


@pytest.mark.parametrize("upstream", sorted(CASES))
async def test_double_slashes_survive_an_enriched_request(
    side: Running, ads: FakeAdServer, upstream: str
) -> None:
    path, sent, expected = CASES[upstream]
    doubled = path.replace("/", "//", 1)
    resp = await get(side, f"/proxy/{upstream}{doubled}?{sent}", {"X-Cohortkv-Consent": "granted"})
    assert resp.status == 200
    assert ads.last.target == f"{doubled}?{expected}"
