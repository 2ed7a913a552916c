"""A plain aiohttp proxy: `GET /proxy/{upstream}/{path}?{query}` to the same ad server, as is.

The floor the sidecar is measured against: same URL shape, same server library, same ad server,
one keep-alive client session, and no enrichment at all. `naive_proxy` adds the naive
integration in front of the forward.

    python -m benchmarks.baselines.passthrough --upstream gam=http://127.0.0.1:9000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from benchmarks.upstreams import new_loop

Transform = Callable[[str], Awaitable[str]]
_NOT_COPIED = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "upgrade", "te"}
)


def make_app(
    upstreams: dict[str, str], session_box: list[aiohttp.ClientSession], transform: Transform | None
) -> web.Application:
    async def forward(request: web.Request) -> web.Response:
        name = request.match_info["upstream"]
        base = upstreams.get(name)
        if base is None:
            return web.json_response({"error": f"upstream: unknown {name!r}"}, status=404)
        raw = request.raw_path
        rest = raw[len("/proxy/") + len(name) :]
        url = base + rest
        if transform is not None:
            url = await transform(url)
        session = session_box[0]
        try:
            async with session.get(URL(url, encoded=True), allow_redirects=False) as resp:
                body = await resp.read()
                headers = CIMultiDict(
                    (k, v) for k, v in resp.headers.items() if k.lower() not in _NOT_COPIED
                )
                return web.Response(body=body, status=resp.status, headers=headers)
        except (aiohttp.ClientError, TimeoutError):
            return web.Response(status=502, text="bad gateway")

    app = web.Application()
    app.router.add_get("/proxy/{upstream}/{path:.*}", forward)
    return app


def parse_upstreams(values: list[str]) -> dict[str, str]:
    out = {}
    for v in values:
        name, _, url = v.partition("=")
        out[name] = url.rstrip("/")
    return out


async def serve(
    upstreams: dict[str, str],
    port: int,
    make_transform: Callable[[aiohttp.ClientSession], Transform] | None = None,
) -> None:
    loop = asyncio.get_running_loop()
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=1024, ttl_dns_cache=300),
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=2.0),
    )
    transform = make_transform(session) if make_transform else None
    app = make_app(upstreams, [session], transform)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=4096)
    await site.start()
    bound = runner.addresses[0][1]
    print(json.dumps({"port": bound}), flush=True)
    stop = asyncio.Event()

    def wait_stdin() -> None:
        try:
            sys.stdin.buffer.read()
        finally:
            loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=wait_stdin, daemon=True).start()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await session.close()


def cli(
    prog: str,
    argv: list[str] | None,
    make_transform: Callable[[argparse.Namespace], Callable[[aiohttp.ClientSession], Transform]]
    | None = None,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> int:
    p = argparse.ArgumentParser(prog=prog)
    p.add_argument("--upstream", action="append", default=[], metavar="NAME=URL")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    if extra:
        extra(p)
    a = p.parse_args(argv)
    upstreams = parse_upstreams(a.upstream)
    factory = make_transform(a) if make_transform else None
    with asyncio.Runner(loop_factory=lambda: new_loop(a.loop)) as runner:
        runner.run(serve(upstreams, a.port, factory))
    return 0


if __name__ == "__main__":
    sys.exit(cli("python -m benchmarks.baselines.passthrough", None))
