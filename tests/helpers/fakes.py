"""Local stand-ins for the Permutive APIs that tests can slow down, break, script and count.

`FakePermutive` records every request it received (`bodies`, `events()`), so a test can assert
what went over the wire. Answers are the defaults below unless a test scripts them: one reply
per call in `replies` (a status, an answer, a dropped connection, a hang), or an answer computed
from the request (`ccs_reply`).
"""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from plugin.config import Config

API_KEY = "test-key"

Reply = int | dict[str, Any] | str | tuple[str, float]
"""A scripted reply: an HTTP status (an error body for >= 400), an answer body, "drop" (the
connection is closed once the request has been read: the API may have processed it), or
("hang", seconds) before the default answer."""


class FakePermutive:
    """Both APIs on one loopback server; answers, delays and failures are set per test."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.bodies: dict[str, list[Any]] = {"ccs": [], "contextual": []}
        self.delay = {"ccs": 0.0, "contextual": 0.0}
        self.status = {"ccs": 200, "contextual": 200}
        self.raw: dict[str, bytes | None] = {"ccs": None, "contextual": None}
        self.replies: dict[str, list[Reply]] = {"ccs": [], "contextual": []}
        """Scripted replies, taken one per call before the defaults apply."""
        self.headers: dict[str, dict[str, str]] = {"ccs": {}, "contextual": {}}
        """Extra response headers (e.g. `Retry-After`) for error replies."""
        self.ccs_reply: Callable[[dict[str, Any]], dict[str, Any]] | None = None
        """The CCS answer computed from the request body, instead of `ccs_answer`."""
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

    # -- what was received ------------------------------------------------------------------

    def events(self) -> list[dict[str, Any]]:
        """Every event the CCS API received, in the order received."""
        return [e for call in self.bodies["ccs"] for e in call["body"]["events"]]

    def contextual_bodies(self) -> list[dict[str, Any]]:
        return [call["body"] for call in self.bodies["contextual"]]

    # -- answering --------------------------------------------------------------------------

    async def _answer(
        self, api: str, request: web.Request, received: Any, answer: Callable[[], Any]
    ) -> web.StreamResponse:
        self.calls[api] += 1
        reply: Reply | None = self.replies[api].pop(0) if self.replies[api] else None
        raw = self.raw[api] if reply is None or isinstance(reply, tuple) else None
        if reply == "drop":
            status: int | None = None  # the connection is dropped
        elif isinstance(reply, int):
            status = reply
        else:
            status = 200 if raw is not None else self.status[api]
        self.bodies[api].append({"query": dict(request.query), "body": received, "status": status})
        if self.delay[api]:
            await asyncio.sleep(self.delay[api])
        if isinstance(reply, tuple):
            await asyncio.sleep(reply[1])
        if status is None:
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=204)
        if raw is not None:
            return web.Response(body=raw, content_type="application/json")
        if status != 200:
            return web.json_response(
                {"request_id": "r", "error": {"status": HTTPStatus(status).phrase, "code": 2000}},
                status=status,
                headers=self.headers[api],
            )
        return web.json_response(reply if isinstance(reply, dict) else answer())

    async def _ccs(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("X-Api-Key") != API_KEY:
            return web.json_response({"error": {"status": 401}}, status=401)
        received = await request.json()
        compute = self.ccs_reply
        return await self._answer(
            "ccs",
            request,
            received,
            (lambda: compute(received)) if compute is not None else (lambda: self.ccs_answer),
        )

    async def _ctx(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("k") != API_KEY:
            return web.json_response({"error": {"status": 401}}, status=401)
        body = await request.json()
        answer = self.ctx_answers.get(body.get("url"), self.ctx_default)
        return await self._answer("contextual", request, body, lambda: answer)


def config(fake: FakePermutive, **kw: Any) -> Config:
    """A config with both Permutive APIs on `fake`; `kw` sets any other `Config` field."""
    return Config(api_key=API_KEY, ccs_url=fake.url, ctx_url=fake.url, **kw)


def closed_port() -> int:
    """A loopback port nothing listens on: connecting to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
