"""The sandbox's APIs behind a loopback proxy that breaks one thing on the way back.

`cohortkv verify` must fail the step that checks what is broken, so each break undoes exactly
one property of a correct Direct API (the sandbox is the correct one behind it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

Edit = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]
"""(request body, answer) -> the answer as the broken API gives it."""


def _same_user(_: dict[str, Any], a: dict[str, Any]) -> dict[str, Any]:
    return {**a, "user_id": "2008c38f-dece-4570-976d-87593ed001c3"}


def _always_in_10000(_: dict[str, Any], a: dict[str, Any]) -> dict[str, Any]:
    cohorts = a.get("cohorts", [])
    return {**a, "cohorts": cohorts if "10000" in cohorts else ["10000", *cohorts]}


def _no_activations(_: dict[str, Any], a: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in a.items() if k != "activations"}


def _no_activations_for_views(body: dict[str, Any], a: dict[str, Any]) -> dict[str, Any]:
    """Only play events with a view id (the enricher's, never verify's direct calls)."""
    views = any("view_id" in e for e in body.get("events", []))
    return _no_activations(body, a) if views else a


def _cohorts_only(_: dict[str, Any], a: dict[str, Any]) -> dict[str, Any]:
    return {"cohorts": a.get("cohorts", []), "activations": {}}


def _guide_shape(_: dict[str, Any], a: dict[str, Any]) -> dict[str, Any]:
    """The guide's example Contextual answer: `{"activations": {...}}`, no `cohorts`."""
    return {"activations": a.get("activations", {})}


BREAKS: dict[str, tuple[str, Edit]] = {
    "same_user": ("ccs", _same_user),
    "membership_fixed": ("ccs", _always_in_10000),
    "no_activations": ("ccs", _no_activations),
    "ad_path_no_activations": ("ccs", _no_activations_for_views),
    "contextual_cohorts_only": ("ctx", _cohorts_only),
    "contextual_guide_shape": ("ctx", _guide_shape),
}
"""What each break does: the API it touches and how its answers change."""


class BrokenApi:
    """`async with BrokenApi(sandbox_url, "same_user") as url:` both APIs at `url`."""

    def __init__(self, upstream: str, breaks: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.api, self.edit = BREAKS[breaks]
        self.server: TestServer | None = None
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> str:
        self.session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_post("/ccs/v1/segmentation", self._forward("ccs"))
        app.router.add_post("/ctx/v1/segment", self._forward("ctx"))
        self.server = TestServer(app)
        await self.server.start_server()
        return str(self.server.make_url("")).rstrip("/")

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None and self.session is not None
        await self.server.close()
        await self.session.close()

    def _forward(self, api: str) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.Response:
            assert self.session is not None
            body = await request.json()
            async with self.session.post(
                self.upstream + request.path_qs,
                json=body,
                headers={k: v for k, v in request.headers.items() if k.lower() == "x-api-key"},
            ) as resp:
                answer = await resp.json()
                if resp.status != 200 or api != self.api:
                    return web.json_response(answer, status=resp.status)
            return web.json_response(self.edit(body, answer))

        return handle
