"""A Permutive API stand-in that misbehaves on request, one fault mode per API.

Modes: ok, slow (answers after the budget), hang (never answers), 5xx, 429 (with
Retry-After), malformed (broken JSON), wrong_shape (valid JSON, wrong types), refused
(nothing listening), reset (connection dropped mid-body), huge (a body far over any real
answer), drip (a valid body a few bytes at a time, slower than the budget).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.helpers.fakes import API_KEY

MODES = (
    "slow",
    "hang",
    "5xx",
    "429",
    "malformed",
    "wrong_shape",
    "refused",
    "reset",
    "huge",
    "drip",
)

CCS_OK = {
    "user_id": "2008c38f-dece-4570-976d-87593ed001c3",
    "cohorts": ["12345", "67890"],
    "activations": {
        "dfp": ["12345", "67890"],
        "freewheel": ["12345"],
        "adswizz_keyvalue": ["67890"],
    },
}
CTX_OK = {
    "cohorts": ["99999"],
    "activations": {"dfp": ["99999"], "freewheel": ["99999"], "adswizz_keyvalue": ["99999"]},
}


class FaultyPermutive:
    """Each API on its own loopback server, so that one can stop listening (`refused`)."""

    def __init__(self, slow_s: float = 0.6) -> None:
        self.mode = {"ccs": "ok", "contextual": "ok"}
        self.calls: Counter[str] = Counter()
        self.slow_s = slow_s
        self.servers: dict[str, TestServer] = {}
        self._hanging: list[asyncio.Future[None]] = []

    def url(self, api: str) -> str:
        return str(self.servers[api].make_url("")).rstrip("/")

    async def set_mode(self, api: str, mode: str) -> None:
        self.mode[api] = mode
        if mode == "refused":
            await self.servers[api].close()  # the port now refuses connections

    async def __aenter__(self) -> FaultyPermutive:
        for api, path, handler in (
            ("ccs", "/ccs/v1/segmentation", self._ccs),
            ("contextual", "/ctx/v1/segment", self._ctx),
        ):
            app = web.Application()
            app.router.add_post(path, handler)
            self.servers[api] = TestServer(app)
            await self.servers[api].start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for f in self._hanging:
            if not f.done():
                f.set_result(None)
        for server in self.servers.values():
            await server.close()

    async def _ccs(self, request: web.Request) -> web.StreamResponse:
        return await self._serve("ccs", request, CCS_OK)

    async def _ctx(self, request: web.Request) -> web.StreamResponse:
        return await self._serve("contextual", request, CTX_OK)

    async def _serve(self, api: str, request: web.Request, ok: Any) -> web.StreamResponse:
        self.calls[api] += 1
        if request.headers.get("X-Api-Key") != API_KEY and request.query.get("k") != API_KEY:
            return web.json_response({"error": {"status": 401}}, status=401)
        await request.read()
        mode = self.mode[api]
        body = json.dumps(ok).encode()
        if mode == "slow":
            await asyncio.sleep(self.slow_s)
        elif mode == "hang":
            f: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._hanging.append(f)
            await f
        elif mode == "5xx":
            return web.json_response(
                {"request_id": "r", "error": {"status": "Service Unavailable", "code": 2503}},
                status=503,
            )
        elif mode == "429":
            return web.json_response(
                {"error": {"status": "Too Many Requests", "code": 2429}},
                status=429,
                headers={"Retry-After": "30"},
            )
        elif mode == "malformed":
            body = body[: len(body) // 2]
        elif mode == "wrong_shape":
            body = json.dumps({"user_id": 7, "cohorts": {"a": 1}, "activations": []}).encode()
        elif mode == "reset":
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            resp.content_length = len(body) * 4
            await resp.prepare(request)
            await resp.write(body[:10])
            assert request.transport is not None
            request.transport.abort()
            return resp
        elif mode == "huge":
            huge = b'{"cohorts": [' + b'"1",' * 2_000_000 + b'"1"], "activations": {}}'
            return web.Response(body=huge, content_type="application/json")
        elif mode == "drip":
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            resp.content_length = len(body)
            await resp.prepare(request)
            for i in range(0, len(body), 8):
                await resp.write(body[i : i + 8])
                await asyncio.sleep(0.1)
            return resp
        return web.Response(body=body, content_type="application/json")
