"""Slow and hostile clients, over real loopback sockets against the sidecar as `cohortkv serve`
runs it (its application behind `GuardedSite`): slow request heads are cut off, idle
keep-alive connections end, connections beyond the cap are refused at once, deep JSON and
what aiohttp's parser refuses answer JSON 400s that never echo the request, and a shutdown
that loses accepted events says how many and why."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from plugin.config import Config, ConfigError, ServeConfig, load_config
from plugin.serve.app import SIDECAR, make_app
from plugin.serve.guard import GuardedSite
from plugin.serve.validate import MAX_DEPTH
from tests.helpers.fake_adserver import FakeAdServer, sidecar_config
from tests.helpers.fakes import API_KEY, FakePermutive
from tests.helpers.waiting import until

ROOT = Path(__file__).resolve().parent.parent
USER = "2b1e6c7a-4d3f-4e8a-9b2c-1d0e9f8a7b6c"
GAM = "/proxy/gam/gampad/ads?iu=/1/ctv&sz=640x480"
WAIT = 10.0
"""Generous upper bound for anything that should happen well within a second."""


@dataclass
class Served:
    port: int
    registry: CollectorRegistry

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def sample(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def closed(self, reason: str) -> float:
        return self.sample("cohortkv_http_connections_closed_total", reason=reason)


@asynccontextmanager
async def serving(config: Config) -> AsyncIterator[Served]:
    """The sidecar listening on a loopback port exactly as `cohortkv serve` starts it."""
    registry = CollectorRegistry()
    app = make_app(config, registry=registry)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = GuardedSite(runner, app[SIDECAR].connections, "127.0.0.1", 0)
    await site.start()
    try:
        yield Served(runner.addresses[0][1], registry)
    finally:
        await runner.cleanup()


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def exchange(port: int, raw: bytes) -> bytes:
    """Sends `raw` on a new connection and reads until the server closes it."""
    reader, writer = await connect(port)
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), WAIT)
    finally:
        writer.close()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 response with a Content-Length; the connection stays usable."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    status = int(head.split(b" ", 2)[1])
    m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    assert m is not None, head
    return status, await asyncio.wait_for(reader.readexactly(int(m.group(1))), WAIT)


def split(response: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return int(lines[0].split(" ", 2)[1]), headers, body


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def now_iso(minutes_ago: int = 1) -> str:
    t = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def events_body(n: int = 3) -> dict[str, Any]:
    return {
        "identity": {"user_id": USER},
        "consent": {"granted": True},
        "events": [{"name": "VideoCompletion", "time": now_iso(n - i)} for i in range(n)],
    }


GET_HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: sidecar\r\n\r\n"


# -- slow request heads --------------------------------------------------------------------


async def test_a_client_trickling_header_lines_is_closed_after_header_timeout(
    fake: FakePermutive, ads: FakeAdServer
) -> None:
    async with serving(sidecar_config(fake, ads, header_timeout_s=0.3)) as side:
        reader, writer = await connect(side.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: sidecar\r\n")
        loop = asyncio.get_running_loop()
        end = loop.time() + WAIT
        got = b""
        try:
            while not reader.at_eof() and loop.time() < end:
                writer.write(b"X-Slow: 1\r\n")  # a header line now and then, never the end
                await writer.drain()
                with suppress(TimeoutError):
                    got += await asyncio.wait_for(reader.read(100), 0.05)
        except ConnectionError:
            pass  # closed under our feet: what we wanted
        finally:
            writer.close()
        assert loop.time() < end, "the slow client was never closed"
        assert got == b""  # closed, not answered
        assert side.closed("header_timeout") == 1
        # A client that sends nothing at all is closed too.
        reader, writer = await connect(side.port)
        assert await asyncio.wait_for(reader.read(), WAIT) == b""
        writer.close()
        assert side.closed("header_timeout") == 2
        assert side.sample("cohortkv_http_connections") == 0


async def test_header_timeout_only_bounds_the_request_head(
    fake: FakePermutive, ads: FakeAdServer
) -> None:
    """Idle time between keep-alive requests, a head sent in pieces within the time, and a
    handler slower than the timeout are all fine."""
    async with serving(sidecar_config(fake, ads, header_timeout_s=0.3)) as side:
        reader, writer = await connect(side.port)
        writer.write(GET_HEALTHZ)
        assert (await read_response(reader))[0] == 200
        await asyncio.sleep(0.6)  # idle on a keep-alive connection: not a slow head
        writer.write(b"GET /healthz HTTP/1.1\r\n")
        await asyncio.sleep(0.05)
        writer.write(b"Host: sidecar\r\n\r\n")
        assert (await read_response(reader))[0] == 200
        ads.delay = 0.6  # the ad server takes longer than header_timeout_s
        writer.write(f"GET {GAM} HTTP/1.1\r\nHost: sidecar\r\n\r\n".encode())
        status, body = await read_response(reader)
        assert status == 200 and b"<VAST" in body
        writer.close()
        assert side.closed("header_timeout") == 0


async def test_an_idle_keepalive_connection_is_closed(
    fake: FakePermutive, ads: FakeAdServer
) -> None:
    cfg = sidecar_config(fake, ads, header_timeout_s=30.0, keepalive_timeout_s=0.3)
    async with serving(cfg) as side:
        reader, writer = await connect(side.port)
        writer.write(GET_HEALTHZ)
        assert (await read_response(reader))[0] == 200
        assert await asyncio.wait_for(reader.read(), WAIT) == b""  # closed by the server
        writer.close()
        await until(lambda: side.sample("cohortkv_http_connections") == 0)


# -- the connection cap --------------------------------------------------------------------


async def test_connections_beyond_the_cap_are_refused_at_once(
    fake: FakePermutive, ads: FakeAdServer
) -> None:
    cfg = sidecar_config(fake, ads, max_connections=3, header_timeout_s=30.0)
    async with serving(cfg) as side:
        assert side.sample("cohortkv_http_connections_max") == 3
        held = [await connect(side.port) for _ in range(3)]
        await until(lambda: side.sample("cohortkv_http_connections") == 3)

        refused = await exchange(side.port, b"")
        status, headers, body = split(refused)
        assert status == 503
        assert headers["content-type"] == "application/json"
        assert headers["retry-after"] == "1"
        assert json.loads(body) == {"error": "too many connections", "limit": 3}
        assert side.closed("max_connections") == 1
        assert side.sample("cohortkv_http_connections") == 3

        # The held connections still work, and a freed slot is usable again.
        reader, writer = held[0]
        writer.write(GET_HEALTHZ)
        assert (await read_response(reader))[0] == 200
        writer.close()
        await until(lambda: side.sample("cohortkv_http_connections") == 2)
        status, _, body = split(
            await exchange(side.port, GET_HEALTHZ[:-2] + b"Connection: close\r\n\r\n")
        )
        assert (status, json.loads(body)) == (200, {"status": "alive"})
        for _, w in held[1:]:
            w.close()


# -- deep JSON -----------------------------------------------------------------------------


async def test_deep_json_is_a_400_naming_the_depth(fake: FakePermutive, ads: FakeAdServer) -> None:
    too_deep = {
        "field": "body",
        "expected": f"JSON nested at most {MAX_DEPTH} levels deep",
    }
    url = "https://pubads.g.doubleclick.net/gampad/ads?iu=/1/ctv"
    enrich = '{"url": "%s", "method": "POST", "body": %s}'
    events = json.dumps(events_body(1)).replace(
        '"events": [{', '"events": [{"properties": {"p": %s}, '
    )
    async with serving(sidecar_config(fake, ads)) as side, aiohttp.ClientSession() as http:
        for path, template in (("/v1/enrich", enrich % (url, "%s")), ("/v1/events", events)):
            for depth in (1000, 100_000, MAX_DEPTH + 1):
                async with http.post(side.url + path, data=template % nested(depth)) as resp:
                    assert resp.status == 400, (path, depth, await resp.text())
                    assert resp.content_type == "application/json"
                    assert await resp.json() == {"error": "invalid request", "fields": [too_deep]}
        # Brackets inside strings are not nesting, and reasonable nesting passes.
        brackets = json.dumps("[" * 5000 + '\\"{' * 100)
        async with http.post(side.url + "/v1/enrich", data=enrich % (url, brackets)) as resp:
            assert resp.status == 200, await resp.text()
        async with http.post(side.url + "/v1/events", data=events % nested(20)) as resp:
            assert resp.status == 202, await resp.text()
        # The proxy's JSON header of event properties: counted and ignored, never a 500.
        headers = {"X-Cohortkv-Properties": f'{{"p": {nested(3000)}}}'}
        async with http.get(side.url + GAM, headers=headers) as resp:
            assert resp.status == 200
        assert side.sample("cohortkv_bad_input_total", source="proxy", kind="properties") == 1


# -- what aiohttp's parser refuses ---------------------------------------------------------

SECRET = "S3CR3T-TOKEN"
_S = SECRET.encode()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"HELLO " + _S + b"\r\n\r\n", "invalid method"),
        (b"GET /" + _S + b" HTTP/9.9\r\nHost: x\r\n\r\n", "invalid request line"),
        (b"GET /\xff\xfe" + _S + b" HTTP/1.1\r\nHost: x\r\n\r\n", "invalid request target"),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-%d: %s\r\n" % (i, _S) for i in range(200))
            + b"\r\n",
            "too many headers received",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + _S * 7000 + b"\r\n\r\n",
            "request line or header line too long",
        ),
        (
            b"GET /" + _S * 4000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            "request line or header line too long",
        ),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX " + _S + b": 1\r\n\r\n", "invalid header token"),
        (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + _S, "HTTPS traffic on an HTTP port"),
        (
            b"GET " + GAM.encode() + b" HTTP/1.1\r\nHost: x\r\nHost: " + _S + b"\r\n\r\n",
            "duplicate 'Host' header found",
        ),
        (
            b"POST /v1/enrich HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
            b"Content-Length: 2\r\nX: " + _S + b"\r\n\r\n{}",
            "duplicate Content-Length",
        ),
        (
            b"GET /proxy/gam/caf\xc3\xa9?" + _S + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            "invalid request target",
        ),
        (
            b"GET " + GAM.encode() + b"&t=\xe9" + _S + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            "invalid request target",
        ),
    ],
    ids=[
        "bad-request-line",
        "bad-version",
        "invalid-utf8-target",
        "too-many-headers",
        "header-line-too-long",
        "request-line-too-long",
        "bad-header-name",
        "tls-handshake",
        "duplicate-host",
        "duplicate-content-length",
        "non-ascii-proxy-path",
        "non-ascii-proxy-query",
    ],
)
async def test_parser_rejections_answer_json_without_echo(
    fake: FakePermutive,
    ads: FakeAdServer,
    raw: bytes,
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with serving(sidecar_config(fake, ads)) as side:
        with caplog.at_level(logging.DEBUG):
            response = await exchange(side.port, raw)
        status, headers, body = split(response)
        assert status == 400
        assert headers["content-type"] == "application/json"
        assert json.loads(body) == {"error": "malformed HTTP request", "reason": reason}
        assert SECRET.lower() not in response.decode("latin-1").lower()
        assert b"\xff" not in response and b"\\xff" not in response
        assert side.closed("malformed") == 1
        logged = "\n".join(r.getMessage() + str(r.exc_info or "") for r in caplog.records)
        assert SECRET not in logged and "Traceback" not in logged
        # The sidecar still serves.
        status, _, _ = split(
            await exchange(
                side.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
        )
        assert status == 200


# -- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "field"),
    [
        ("SERVE__HEADER_TIMEOUT_S", "0", "serve.header_timeout_s"),
        ("SERVE__KEEPALIVE_TIMEOUT_S", "-1", "serve.keepalive_timeout_s"),
        ("SERVE__MAX_CONNECTIONS", "-5", "serve.max_connections"),
        ("SERVE__MAX_CONNECTIONS", '"many"', "serve.max_connections"),
    ],
)
def test_bad_guard_settings_name_their_field(name: str, value: str, field: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"COHORTKV_{name}: {field}: expected")):
        load_config(env={f"COHORTKV_{name}": value, "COHORTKV_SANDBOX": "true"})


def test_guard_settings_load_with_defaults() -> None:
    serve = load_config(env={"COHORTKV_SERVE__MAX_CONNECTIONS": "100"}).serve
    assert (serve.header_timeout_s, serve.keepalive_timeout_s, serve.max_connections) == (
        10.0,
        75.0,
        100,
    )


# -- shutdown that loses events ------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_shutdown_with_ccs_unreachable_logs_the_lost_events(
    ads: FakeAdServer, caplog: pytest.LogCaptureFixture
) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    cfg = Config(
        api_key=API_KEY,
        ccs_url=dead,
        ctx_url=dead,
        serve=ServeConfig(upstreams={"gam": ads.url}, grace_s=1.0),
    )
    with caplog.at_level(logging.WARNING, logger="cohortkv.serve.events"):
        async with serving(cfg) as side, aiohttp.ClientSession() as http:
            async with http.post(side.url + "/v1/events", json=events_body(3)) as resp:
                assert resp.status == 202
                assert (await resp.json())["accepted"] == 3
            await until(lambda: side.sample("cohortkv_events_total", state="retried") >= 3)
    (line,) = [r.getMessage() for r in caplog.records if "shutdown:" in r.getMessage()]
    assert line.startswith("shutdown: 3 accepted events were not delivered to the CCS API: ")
    assert "ccs: connect" in line or "ccs: breaker_open" in line, line


async def test_shutdown_that_delivers_everything_says_nothing(
    fake: FakePermutive, ads: FakeAdServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="cohortkv.serve.events"):
        async with (
            serving(sidecar_config(fake, ads, grace_s=5.0)) as side,
            aiohttp.ClientSession() as http,
            http.post(side.url + "/v1/events", json=events_body(3)) as resp,
        ):
            assert resp.status == 202
    assert sum(len(call["body"]["events"]) for call in fake.bodies["ccs"]) == 3
    assert not [r for r in caplog.records if "shutdown:" in r.getMessage()]


async def test_sigterm_with_ccs_failing_fast_logs_how_many_events_were_lost(
    tmp_path: Path,
) -> None:
    """`python -m plugin serve` as a process: the CCS API answers 503 at once (and its breaker
    opens); on SIGTERM the queue cannot be flushed, and one line says how many and why."""
    async with FakePermutive() as fake:
        fake.status["ccs"] = 503
        config = tmp_path / "cohortkv.toml"
        config.write_text(
            f'api_key = "{API_KEY}"\nccs_url = "{fake.url}"\nctx_url = "{fake.url}"\n'
            '[serve]\nhost = "127.0.0.1"\nport = 0\ngrace_s = 2.0\n'
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("COHORTKV_")}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "plugin", "serve", "--config", str(config),
            cwd=ROOT, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stderr is not None
        err: list[str] = []
        port = None
        while port is None:
            line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
            assert line, "".join(err)
            err.append(line)
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            port = int(m.group(1)) if m else None
        accepted = 0
        async with aiohttp.ClientSession() as http:
            for i in range(4):
                body = events_body(3)
                body["identity"] = {"alias": {"tag": "idfa", "id": f"DEVICE-{i}"}}
                url = f"http://127.0.0.1:{port}/v1/events"
                async with http.post(url, json=body) as resp:
                    assert resp.status == 202, await resp.text()
                    accepted += (await resp.json())["accepted"]
        assert accepted == 12
        await until(lambda: fake.calls["ccs"] >= 4)  # every user's first try has failed
        proc.send_signal(signal.SIGTERM)
        _, rest = await asyncio.wait_for(proc.communicate(), 30)
        logs = "".join(err) + rest.decode()
        assert proc.returncode == 0, logs
        lines = [x for x in logs.splitlines() if "shutdown: " in x and "accepted events" in x]
        assert len(lines) == 1, logs
        assert "shutdown: 12 accepted events were not delivered to the CCS API: " in lines[0]
        assert re.search(r"ccs: (http_5xx|breaker_open)", lines[0]), lines[0]
        assert API_KEY not in logs


async def test_a_bad_content_encoding_is_a_counted_400_without_a_traceback_per_request(
    fake: FakePermutive, ads: FakeAdServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(sidecar_config(fake, ads)) as s:
        headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
        with caplog.at_level(logging.WARNING):
            async with aiohttp.ClientSession() as session:
                for path in ("/v1/enrich", "/v1/events", "/v1/enrich"):
                    async with session.post(s.url + path, data=b"notgzip", headers=headers) as r:
                        assert r.status == 400
                        assert (await r.json())["fields"] == [
                            {"field": "body", "expected": "bytes encoded as Content-Encoding says"}
                        ]
        assert s.sample("cohortkv_bad_input_total", source="body", kind="malformed_encoding") == 3
    tracebacks = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert tracebacks == []
    lines = [r for r in caplog.records if "could not be decoded" in r.getMessage()]
    assert len(lines) == 1  # rate-limited: one line, the count in the metric
