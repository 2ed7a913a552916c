"""Local stand-ins for the Permutive APIs that tests can slow down, break and count."""

from __future__ import annotations

import asyncio
from collections import Counter
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

API_KEY = "test-key"


class FakePermutive:
    """Both APIs on one loopback server; answers, delays and failures are set per test."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.bodies: dict[str, list[Any]] = {"ccs": [], "contextual": []}
        self.delay = {"ccs": 0.0, "contextual": 0.0}
        self.status = {"ccs": 200, "contextual": 200}
        self.raw: dict[str, bytes | None] = {"ccs": None, "contextual": None}
        self.ccs_answer: dict[str, Any] = {
            "user_id": "2008c38f-dece-4570-976d-87593ed001c3",
            "cohorts": ["12345", "67890", "11111"],
            "activations": {
                "dfp": ["12345", "67890"],
                "freewheel": ["12345"],
                "adswizz_keyvalue": ["67890"],
            },
        }
        self.ctx_answers: dict[str, dict[str, Any]] = {}
        self.ctx_default: dict[str, Any] = {
            "cohorts": ["99999", "88888"],
            "activations": {"dfp": ["99999"], "freewheel": ["88888"], "adswizz_keyvalue": []},
        }
        self.server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    async def __aenter__(self) -> FakePermutive:
        app = web.Application()
        app.router.add_post("/ccs/v1/segmentation", self._ccs)
        app.router.add_post("/ctx/v1/segment", self._ctx)
        self.server = TestServer(app)
        await self.server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        await self.server.close()

    async def _answer(
        self, api: str, request: web.Request, received: Any, body: dict[str, Any]
    ) -> web.Response:
        self.calls[api] += 1
        status = 200 if self.raw[api] is not None else self.status[api]
        self.bodies[api].append({"query": dict(request.query), "body": received, "status": status})
        if self.delay[api]:
            await asyncio.sleep(self.delay[api])
        raw = self.raw[api]
        if raw is not None:
            return web.Response(body=raw, content_type="application/json")
        if self.status[api] != 200:
            return web.json_response(
                {
                    "request_id": "r",
                    "error": {"status": HTTPStatus(self.status[api]).phrase, "code": 2000},
                },
                status=self.status[api],
            )
        return web.json_response(body)

    async def _ccs(self, request: web.Request) -> web.Response:
        if request.headers.get("X-Api-Key") != API_KEY:
            return web.json_response({"error": {"status": 401}}, status=401)
        return await self._answer("ccs", request, await request.json(), self.ccs_answer)

    async def _ctx(self, request: web.Request) -> web.Response:
        if request.query.get("k") != API_KEY:
            return web.json_response({"error": {"status": 401}}, status=401)
        body = await request.json()
        answer = self.ctx_answers.get(body.get("url"), self.ctx_default)
        return await self._answer("contextual", request, body, answer)
