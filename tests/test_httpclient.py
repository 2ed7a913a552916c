"""The proxy's ad-server client (`plugin.httpclient`) and its response framing
(`plugin.http1`): framing under any split of the bytes (hypothesis), and the client
against raw loopback servers that write exactly the bytes a test wants, on asyncio and uvloop,
over plain TCP and mutual TLS."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import trustme
import uvloop
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from plugin.http1 import CHUNKED, Body, ProtocolError, framing, parse_head
from plugin.httpclient import HttpClient, HttpError, Origin

# -- framing --------------------------------------------------------------------------------


def _chunked(body: bytes, sizes: list[int], trailer: bool) -> bytes:
    out, at = [], 0
    for size in sizes:
        piece = body[at : at + size]
        if not piece:
            break
        out.append(b"%x;ext=1\r\n%s\r\n" % (len(piece), piece))
        at += len(piece)
    if at < len(body):
        out.append(b"%X\r\n%s\r\n" % (len(body) - at, body[at:]))
    out.append(b"0\r\nX-Trailer: 1\r\n\r\n" if trailer else b"0\r\n\r\n")
    return b"".join(out)


def _feed(frame: int, wire: bytes, cuts: list[int]) -> tuple[bytes, Body]:
    body = Body(frame)
    got: list[bytes] = []
    at = 0
    for cut in sorted({min(c, len(wire)) for c in cuts} | {len(wire)}):
        got.extend(body.feed(wire[at:cut]))
        at = cut
    return b"".join(got), body


@settings(max_examples=300, deadline=None)
@given(
    body=st.binary(max_size=600),
    sizes=st.lists(st.integers(1, 300), max_size=6),
    trailer=st.booleans(),
    chunked=st.booleans(),
    cuts=st.lists(st.integers(0, 1500), max_size=12),
    after=st.binary(max_size=20),
)
def test_a_body_is_the_same_however_the_network_splits_it(
    body: bytes, sizes: list[int], trailer: bool, chunked: bool, cuts: list[int], after: bytes
) -> None:
    wire = _chunked(body, sizes, trailer) if chunked else body
    got, state = _feed(CHUNKED if chunked else len(body), wire + after, cuts)
    assert got == body and state.done and state.rest == after


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_in_a_head_or_a_chunked_body_is_a_protocol_error_only(raw: bytes) -> None:
    for read in (parse_head, lambda b: Body(CHUNKED).feed(b)):
        with contextlib.suppress(ProtocolError):
            read(raw)


def test_a_body_cut_short_is_an_error_and_a_close_delimited_one_ends_at_eof() -> None:
    short = Body(10)
    short.feed(b"12345")
    with pytest.raises(ProtocolError):
        short.eof()
    whole = Body(-1)
    assert whole.feed(b"abc") == [b"abc"]
    whole.eof()
    assert whole.done


def _head(lines: bytes) -> int:
    return framing(parse_head(b"HTTP/1.1 200 OK\r\n" + lines), "GET")


def test_framing_refuses_what_a_peer_could_read_two_ways() -> None:
    assert _head(b"Content-Length: 5") == 5
    assert _head(b"Content-Length: 5\r\nContent-Length: 5") == 5
    assert _head(b"Transfer-Encoding: gzip, chunked") == CHUNKED
    for bad in (
        b"Content-Length: 5\r\nContent-Length: 6",
        b"Content-Length: 5, 6",
        b"Content-Length: -1",
        b"Content-Length: 0x5",
        b"Transfer-Encoding: chunked\r\nContent-Length: 5",
    ):
        with pytest.raises(ProtocolError):
            _head(bad)
    for status_line in (b"HTTP/2 200 OK", b"HTTP/1.1 20 OK", b"ICY 200 OK", b"HTTP/1.1 200OK"):
        with pytest.raises(ProtocolError):
            parse_head(status_line)
    with pytest.raises(ProtocolError):
        parse_head(b"HTTP/1.1 200 OK\r\nBad Name: x")
    no_body = parse_head(b"HTTP/1.1 204 No Content\r\nContent-Length: 5")
    assert framing(no_body, "GET") == 0
    assert framing(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5"), "HEAD") == 0


# -- the client against raw servers -------------------------------------------------------

Script = Callable[[bytes, int], Awaitable[bytes | None]]
"""Given a request's bytes and its number on its connection: the bytes to answer with, or
None to close the connection without answering."""


@dataclass
class RawServer:
    script: Script
    close_after: bytes = b"/close-after"
    """A request whose target holds this is answered, then its connection closed."""
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    port: int = 0
    server: asyncio.Server | None = None

    async def start(self, tls: ssl.SSLContext | None = None) -> RawServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=tls)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        n = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                answer = await self.script(request, n)
                n += 1
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if self.close_after in request.split(b"\r\n", 1)[0]:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()


def ok(body: bytes = b"<VAST/>", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def get(client: HttpClient, origin: Origin, target: str = "/ads?a=1") -> tuple[int, bytes]:
    answer = await client.request(origin, "GET", target, [("User-Agent", "t")], None, 2.0)
    try:
        return answer.status, await answer.read()
    finally:
        answer.close()


async def test_keep_alive_reuses_one_connection_and_writes_the_target_as_given() -> None:
    async def script(request: bytes, n: int) -> bytes:
        return ok(b"answer %d" % n)

    srv = await RawServer(script).start()
    client = HttpClient()
    origin = Origin(f"http://127.0.0.1:{srv.port}", None)
    got = [await get(client, origin, "/a//b?x=%2F&y=") for _ in range(3)]
    assert got == [(200, b"answer 0"), (200, b"answer 1"), (200, b"answer 2")]
    assert srv.connections == 1
    assert srv.requests[0].startswith(b"GET /a//b?x=%2F&y= HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"\r\nUser-Agent: t\r\n" in srv.requests[0]
    await client.close()
    await srv.stop()


async def test_connection_close_chunked_and_interim_answers() -> None:
    answers = [
        ok(b"x", b"Connection: close\r\n"),
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
    ]

    async def script(request: bytes, n: int) -> bytes:
        return answers.pop(0)

    srv = await RawServer(script).start()
    client = HttpClient()
    origin = Origin(f"http://127.0.0.1:{srv.port}", None)
    assert await get(client, origin) == (200, b"x")
    assert await get(client, origin) == (200, b"abcde")
    assert await get(client, origin) == (204, b"")
    assert srv.connections == 2  # the first answer said close
    await client.close()
    await srv.stop()


async def test_a_get_on_a_connection_closed_while_idle_is_sent_once_more() -> None:
    async def script(request: bytes, n: int) -> bytes | None:
        return ok() if n == 0 else None  # answers once, then closes on the next request

    srv = await RawServer(script).start()
    client = HttpClient()
    origin = Origin(f"http://127.0.0.1:{srv.port}", None)
    assert (await get(client, origin))[0] == 200
    assert (await get(client, origin))[0] == 200
    assert srv.connections == 2 and len(srv.requests) == 3
    post = client.request(origin, "POST", "/bid", [], b"{}", 2.0)
    with pytest.raises(HttpError):  # never twice: the ad server may have acted on it
        await post
    await client.close()
    await srv.stop()


async def test_timeouts_truncated_bodies_and_unsolicited_bytes() -> None:
    async def script(request: bytes, n: int) -> bytes | None:
        if b"/hang" in request:
            await asyncio.sleep(5)
        if b"/short/close-after" in request:
            return b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this"
        if b"/extra" in request:
            return ok(b"x") + b"HTTP/1.1 200 OK\r\n"
        return ok()

    srv = await RawServer(script).start()
    client = HttpClient()
    origin = Origin(f"http://127.0.0.1:{srv.port}", None)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        await client.request(origin, "GET", "/hang", [], None, 0.2)
    assert loop.time() - started < 2
    answer = await client.request(origin, "GET", "/short/close-after", [], None, 2.0)
    with pytest.raises(HttpError, match="cut short"):
        await answer.read()
    answer.close()
    answer = await client.request(origin, "GET", "/extra", [], None, 2.0)
    assert await answer.read() == b"x"  # the answer goes back; its connection is closed
    answer.close()
    before = srv.connections
    assert await get(client, origin) == (200, b"<VAST/>")
    assert srv.connections == before + 1  # the broken connections were not reused
    await client.close()
    await srv.stop()


async def test_the_pool_bound_makes_requests_wait_for_a_connection() -> None:
    async def script(request: bytes, n: int) -> bytes:
        await asyncio.sleep(0.02)
        return ok()

    srv = await RawServer(script).start()
    for client in (HttpClient(limit=1), HttpClient(limit=100, per_origin=1)):
        before = srv.connections
        origin = Origin(f"http://127.0.0.1:{srv.port}", None)
        got = await asyncio.gather(*(get(client, origin) for _ in range(5)))
        assert [s for s, _ in got] == [200] * 5 and srv.connections == before + 1
        await client.close()
    await srv.stop()


async def test_a_large_body_streams_through_with_reading_paused() -> None:
    big = bytes(range(256)) * 8192  # 2 MiB: over the buffer's high-water mark

    async def script(request: bytes, n: int) -> bytes:
        return ok(big)

    srv = await RawServer(script).start()
    client = HttpClient()
    origin = Origin(f"http://127.0.0.1:{srv.port}", None)
    answer = await client.request(origin, "GET", "/big", [], None, 5.0)
    got = bytearray()
    async for piece in answer.chunks():
        got += piece
        await asyncio.sleep(0)  # a slow consumer
    answer.close()
    assert bytes(got) == big
    assert await get(client, origin) == (200, big)
    assert srv.connections == 1
    await client.close()
    await srv.stop()


async def test_mutual_tls_with_our_client_certificate() -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    ca.configure_trust(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    seen: list[object] = []

    async def script(request: bytes, n: int) -> bytes:
        return ok(b"secure")

    srv = RawServer(script)
    srv.server = await asyncio.start_server(
        lambda r, w: (seen.append(w.get_extra_info("peercert")), srv._serve(r, w))[1],
        "127.0.0.1",
        0,
        ssl=server_ctx,
    )
    srv.port = srv.server.sockets[0].getsockname()[1]
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    ca.issue_cert("cohortkv-client").configure_cert(client_ctx)
    client = HttpClient()
    origin = Origin(f"https://localhost:{srv.port}", client_ctx)
    assert origin.host_header == f"localhost:{srv.port}"
    assert await get(client, origin) == (200, b"secure")
    assert seen and seen[0]  # the server saw our certificate
    await client.close()
    untrusting = Origin(f"https://localhost:{srv.port}", None)  # the system's CAs only
    with pytest.raises(HttpError, match="connect"):
        await get(HttpClient(), untrusting)
    await srv.stop()


def test_on_uvloop_too() -> None:
    """The sidecar runs on uvloop, whose transports are not asyncio's classes."""

    async def run() -> None:
        async def script(request: bytes, n: int) -> bytes:
            return ok(b"uv %d" % n)

        srv = await RawServer(script).start()
        client = HttpClient()
        origin = Origin(f"http://127.0.0.1:{srv.port}", None)
        assert [await get(client, origin) for _ in range(2)] == [(200, b"uv 0"), (200, b"uv 1")]
        assert srv.connections == 1
        await client.close()
        await srv.stop()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run())


def test_default_ports_are_left_out_of_host() -> None:
    assert Origin("https://ads.example.com", None).host_header == "ads.example.com"
    assert Origin("http://[::1]:8080/vast", None).host_header == "[::1]:8080"
    assert CIMultiDict(parse_head(b"HTTP/1.1 200 OK\r\nA: b").headers)["a"] == "b"


# -- the Permutive clients through it ------------------------------------------------------


async def test_the_ccs_client_through_the_lean_client_fails_as_through_aiohttp() -> None:
    """Compressed answers (unasked) are decoded within the size bound; a bomb, an unknown
    coding, a redirect and a refused connection are the same errors as through aiohttp."""
    import gzip

    from plugin.config import HttpConfig
    from plugin.observe.metrics import Metrics
    from plugin.permutive.clients import CcsClient, UpstreamError
    from plugin.permutive.wire import CcsRequest

    doc = b'{"user_id": "u1", "cohorts": ["1", "2"], "activations": {}}'
    answers = {
        b"a": ok(gzip.compress(doc), b"Content-Encoding: gzip\r\n"),
        b"b": ok(gzip.compress(b" " * 3_000_000), b"Content-Encoding: gzip\r\n"),
        b"c": ok(doc, b"Content-Encoding: br\r\n"),
        b"d": b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n",
    }
    sent: list[bytes] = []

    async def script(request: bytes, n: int) -> bytes:
        sent.append(request)
        body = request.split(b"\r\n\r\n", 1)[1]
        return answers[body.split(b'"user_id":"', 1)[1][:1]]

    srv = await RawServer(script).start()
    client = HttpClient()
    http = HttpConfig(breaker_failures=1000)
    ccs = CcsClient(client, f"http://127.0.0.1:{srv.port}", "secret-key", Metrics(), http)

    async def call(which: str) -> object:
        return await ccs.segment(CcsRequest(events=[], user_id=which))

    answer = await call("a")
    assert answer.user_id == "u1"  # type: ignore[attr-defined]
    head = sent[0].split(b"\r\n\r\n")[0]
    assert head.startswith(b"POST /ccs/v1/segmentation?activations=true HTTP/1.1\r\n")
    assert b"\r\nX-Api-Key: secret-key\r\n" in head and b"Accept-Encoding" not in head
    for which, kind in (("b", "too_large"), ("c", "decode"), ("d", "redirect")):
        with pytest.raises(UpstreamError) as e:
            await call(which)
        assert e.value.kind == kind
    await client.close()
    await srv.stop()
    refused = CcsClient(HttpClient(), f"http://127.0.0.1:{srv.port}", "k", Metrics(), http)
    with pytest.raises(UpstreamError) as e:
        await refused.segment(CcsRequest(events=[], user_id="x"))
    assert e.value.kind == "connect" and e.value.unsent
    assert "secret-key" not in str(e.value) and "127.0.0.1" not in str(e.value)


async def test_a_header_value_with_a_line_break_is_never_written() -> None:
    async def script(request: bytes, n: int) -> bytes:
        return ok()

    srv = await RawServer(script).start()
    client = HttpClient()
    origin = Origin(f"http://127.0.0.1:{srv.port}", None)
    for bad in ("a\r\nX-Injected: 1", "a\nb", "a\rb"):
        with pytest.raises(HttpError) as e:
            await client.request(origin, "GET", "/", [("User-Agent", bad)], None, 1.0)
        assert e.value.unsent
    assert srv.requests == []
    await client.close()
    await srv.stop()


# -- the pool under pressure (found in review) ----------------------------------------------


def _delayed(seconds: float, body: bytes = b"x", extra: bytes = b"") -> Script:
    async def script(request: bytes, n: int) -> bytes:
        await asyncio.sleep(seconds)
        return ok(body, extra)

    return script


async def test_a_freed_connection_wakes_a_waiter_that_can_use_it() -> None:
    """Two origins, one connection each at most, two in all: B's second request is not stuck
    behind A's, which is queued first but cannot go on until A's first answers."""
    a = await RawServer(_delayed(0.8)).start()
    b = await RawServer(_delayed(0.1)).start()
    client = HttpClient(limit=2, per_origin=1)
    oa = Origin(f"http://127.0.0.1:{a.port}", None)
    ob = Origin(f"http://127.0.0.1:{b.port}", None)
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def timed(origin: Origin) -> float:
        await get(client, origin)
        return loop.time() - started

    a1 = asyncio.create_task(timed(oa))
    b1 = asyncio.create_task(timed(ob))
    await asyncio.sleep(0.02)
    a2 = asyncio.create_task(timed(oa))  # queued first: A is at its bound
    b2 = asyncio.create_task(timed(ob))
    assert await b2 < 0.6  # right after B's first answer, not after A's
    await asyncio.gather(a1, b1, a2)
    await client.close()
    await a.stop()
    await b.stop()


async def test_a_wake_up_is_passed_on_when_its_waiter_is_gone() -> None:
    srv = await RawServer(_delayed(0.0, b"x", b"Connection: close\r\n")).start()
    client = HttpClient(limit=1)
    origin = Origin(f"http://127.0.0.1:{srv.port}", None)
    first = await client.request(origin, "GET", "/", [], None, 2.0)
    w1 = asyncio.create_task(get(client, origin))
    w2 = asyncio.create_task(get(client, origin))
    await asyncio.sleep(0.05)  # both wait for the one connection
    assert await first.read() == b"x"
    first.close()  # frees the slot and wakes w1 ...
    w1.cancel()  # ... which goes away before it runs
    assert await asyncio.wait_for(w2, 1.0) == (200, b"x")
    with pytest.raises(asyncio.CancelledError):
        await w1
    await client.close()
    await srv.stop()


async def test_closing_an_answer_twice_pools_its_connection_once() -> None:
    srv = await RawServer(_delayed(0.0)).start()
    client = HttpClient()
    origin = Origin(f"http://127.0.0.1:{srv.port}", None)
    answer = await client.request(origin, "GET", "/", [], None, 2.0)
    await answer.read()
    answer.close()
    answer.close()
    both = asyncio.gather(get(client, origin), get(client, origin))
    got = await asyncio.wait_for(both, 3.0)  # one connection shared by two would hang
    assert got == [(200, b"x"), (200, b"x")] and srv.connections == 2
    await client.close()
    assert client._open == 0
    await srv.stop()


async def test_idle_connections_close_after_idle_s_and_http_1_0_is_not_kept() -> None:
    srv = await RawServer(_delayed(0.0)).start()
    client = HttpClient(idle_s=0.2)
    origin = Origin(f"http://127.0.0.1:{srv.port}", None)
    await get(client, origin)
    assert client._open == 1
    await asyncio.sleep(0.6)
    assert client._open == 0  # closed by the pool, not at the next use

    async def old(request: bytes, n: int) -> bytes:
        return b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx"

    srv10 = await RawServer(old).start()
    origin10 = Origin(f"http://127.0.0.1:{srv10.port}", None)
    await get(client, origin10)
    await get(client, origin10)
    assert srv10.connections == 2
    await client.close()
    await srv.stop()
    await srv10.stop()


def test_framing_edges_found_in_review() -> None:
    with pytest.raises(ProtocolError):
        parse_head(b"HTTP/1.1 000 Zero")
    assert _head(b"Transfer-Encoding: chunked, ") == CHUNKED  # empty list elements ignored
    with pytest.raises(ProtocolError):
        _head(b"Transfer-Encoding: chunked, chunked")
    trailers = Body(CHUNKED)
    with pytest.raises(ProtocolError):
        trailers.feed(b"0\r\n" + b"X-T: 1\r\n" * 100 + b"\r\n")


async def test_a_flood_of_interim_answers_is_a_protocol_error() -> None:
    async def script(request: bytes, n: int) -> bytes:
        return b"HTTP/1.1 100 Continue\r\n\r\n" * 3000 + ok()

    srv = await RawServer(script).start()
    client = HttpClient()
    origin = Origin(f"http://127.0.0.1:{srv.port}", None)
    with pytest.raises(HttpError, match="interim"):
        await get(client, origin)
    await client.close()
    await srv.stop()


async def test_compressed_api_answers_raw_deflate_and_cut_short() -> None:
    import gzip
    import zlib

    from plugin.config import HttpConfig
    from plugin.observe.metrics import Metrics
    from plugin.permutive.clients import CcsClient, UpstreamError
    from plugin.permutive.wire import CcsRequest

    doc = b'{"user_id": "u1", "cohorts": ["1"], "activations": {}}'
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    answers = {
        b"a": ok(raw.compress(doc) + raw.flush(), b"Content-Encoding: deflate\r\n"),
        b"b": ok(zlib.compress(doc), b"Content-Encoding: deflate\r\n"),
        b"c": ok(gzip.compress(doc)[:-12], b"Content-Encoding: gzip\r\n"),
    }

    async def script(request: bytes, n: int) -> bytes:
        body = request.split(b"\r\n\r\n", 1)[1]
        return answers[body.split(b'"user_id":"', 1)[1][:1]]

    srv = await RawServer(script).start()
    client = HttpClient()
    ccs = CcsClient(client, f"http://127.0.0.1:{srv.port}", "k", Metrics(), HttpConfig())
    for which in ("a", "b"):
        answer = await ccs.segment(CcsRequest(events=[], user_id=which))
        assert answer.user_id == "u1"  # type: ignore[attr-defined]
    with pytest.raises(UpstreamError) as e:
        await ccs.segment(CcsRequest(events=[], user_id="c"))
    assert e.value.kind == "decode"
    await client.close()
    await srv.stop()


async def test_an_answers_length_is_the_one_its_framing_used() -> None:
    """Not a second reading of Content-Length: a 204's (even a non-ASCII digit that int()
    refuses) says nothing about its body, and repeated equal lengths are one length."""
    answers = [
        "HTTP/1.1 204 No Content\r\nContent-Length: \u00b2\r\n\r\n".encode(),
        b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    ]

    async def script(request: bytes, n: int) -> bytes:
        return answers[n]

    srv = await RawServer(script).start()
    client = HttpClient()
    origin = Origin(f"http://127.0.0.1:{srv.port}", None)
    got = []
    for _ in answers:
        answer = await client.request(origin, "GET", "/", [], None, 2.0)
        got.append((answer.content_length, await answer.read()))
        answer.close()
    assert got == [(0, b""), (5, b"hello"), (None, b"ok")]
    await client.close()
    await srv.stop()
