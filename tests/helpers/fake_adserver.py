"""A local ad server that records exactly what reaches it, and the sidecar wired up to it.

`FakeAdServer` answers every request with one fixed VAST document and keeps, per request, the
raw request target (path and query bytes as they came off the wire) and the headers. It runs
as a bare aiohttp `Server`, with no router that could normalise a path before we see it.
"""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import RawTestServer, TestClient, TestServer
from multidict import CIMultiDict
from prometheus_client import CollectorRegistry

from plugin.config import Config, ServeConfig
from plugin.serve.app import SIDECAR, Sidecar, make_app
from tests.helpers.fakes import API_KEY, FakePermutive

VAST = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<VAST version="4.0"><Ad id="cohortkv-test"><InLine><AdSystem>fake</AdSystem>'
    b"<AdTitle>Test \xc3\xa9 ad</AdTitle><Impression><![CDATA[https://ads.example/imp?a=1&b=2]]>"
    b"</Impression><Creatives/></InLine></Ad></VAST>\n"
)
VAST_TYPE = "application/xml; charset=utf-8"


@dataclass
class Received:
    method: str
    target: str
    """The raw request target: path and query exactly as sent."""
    headers: CIMultiDict[str]
    body: bytes = b""
    """The body exactly as it came off the wire (never decompressed)."""
    raw_headers: tuple[tuple[bytes, bytes], ...] = ()
    """Header names and values exactly as they came off the wire."""

    def raw_header(self, name: bytes) -> bytes | None:
        for key, value in self.raw_headers:
            if key.lower() == name.lower():
                return value
        return None

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]

    def plain(self) -> bytes:
        """The body decoded as its Content-Encoding says, as a strict server reads it: bytes
        that do not match their label raise."""
        data = self.body
        codings = [
            c.strip().lower()
            for c in ",".join(self.headers.getall("Content-Encoding", ())).split(",")
            if c.strip()
        ]
        for coding in reversed(codings):
            if coding == "identity":
                continue
            if coding in ("gzip", "x-gzip"):
                data = gzip.decompress(data)
            elif coding == "deflate":  # zlib, or raw deflate as some clients send
                raw = len(data) < 2 or (data[0] << 8 | data[1]) % 31 or data[0] & 0x0F != 8
                data = zlib.decompress(data, -zlib.MAX_WBITS if raw else zlib.MAX_WBITS)
            else:
                raise ValueError(f"unexpected Content-Encoding {coding!r}")
        return data


@dataclass
class FakeAdServer:
    status: int = 200
    body: bytes = VAST
    content_type: str = VAST_TYPE
    extra_headers: dict[str, str] = field(
        default_factory=lambda: {"X-Ad-Server": "fake", "Cache-Control": "no-store"}
    )
    delay: float = 0.0
    gzip: bool = False
    """Answer gzip-compressed when the client accepts it (the proxy must pass it through)."""
    chunks: int = 1
    """Send the body in this many chunks (chunked transfer encoding when > 1)."""
    requests: list[Received] = field(default_factory=list)
    server: RawTestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.port}"

    @property
    def last(self) -> Received:
        return self.requests[-1]

    async def __aenter__(self) -> FakeAdServer:
        self.server = RawTestServer(self._handle)
        await self.server.start_server(auto_decompress=False)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        await self.server.close()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        self.requests.append(
            Received(
                request.method,
                request.raw_path,
                CIMultiDict(request.headers),
                await request.read(),
                tuple(request.raw_headers),
            )
        )
        if self.delay:
            await asyncio.sleep(self.delay)
        body = self.body
        headers = {"Content-Type": self.content_type, **self.extra_headers}
        if self.gzip and "gzip" in request.headers.get("Accept-Encoding", ""):
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        if self.chunks <= 1:
            return web.Response(status=self.status, body=body, headers=headers)
        resp = web.StreamResponse(status=self.status, headers=headers)
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        step = max(1, len(body) // self.chunks)
        for i in range(0, len(body), step):
            await resp.write(body[i : i + step])
        await resp.write_eof()
        return resp


def sidecar_config(
    fake: FakePermutive, ads: FakeAdServer, *, api_key: str | None = API_KEY, **serve: Any
) -> Config:
    upstreams = serve.pop("upstreams", {"gam": ads.url, "freewheel": ads.url, "adswizz": ads.url})
    return Config(
        api_key=api_key,
        ccs_url=fake.url,
        ctx_url=fake.url,
        serve=ServeConfig(upstreams=upstreams, **serve),
    )


@dataclass
class Running:
    client: TestClient[web.Request, web.Application]
    sidecar: Sidecar
    registry: CollectorRegistry

    def sample(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def total(self, name: str) -> float:
        """The sum of sample `name` over every label set."""
        return sum(
            s.value for family in self.registry.collect() for s in family.samples if s.name == name
        )


@asynccontextmanager
async def running(config: Config) -> AsyncIterator[Running]:
    """The sidecar app for `config` on a loopback port, with a client pointed at it."""
    registry = CollectorRegistry()
    app = make_app(config, registry=registry)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield Running(client, app[SIDECAR], registry)
    finally:
        await client.close()
