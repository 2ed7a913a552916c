"""Reserved `cohortkv_*` parameters never leave through the client hooks (the aiohttp middleware,
the httpx transport), on any path: enriched or not, denied, a request no platform recognises, a
broken enrichment, a streamed body, another method. Each request goes through a real client to a
loopback ad server that records the bytes that arrived."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import httpx
import pytest
import yarl

from plugin import Config, ConsentSignals, Context, Enricher, Identity
from plugin.httpx import CohortkvTransport
from plugin.middleware import ad_context, cohortkv_middleware
from tests.helpers.fake_adserver import FakeAdServer
from tests.helpers.fakes import API_KEY, FakePermutive
from tests.test_reserved_names import reserved_fields

USER = "2b1e6c7a-4d3f-4e8a-9b2c-1d0e9f8a7b6c"
SECRETS = f"cohortkv_uid={USER}&cohortkv_consent=granted&COHORTKV%5Fsid=s1"
GAM = "/gampad/ads?iu=/1/x&sz=640x480"
BAD_IDENTITY = Context(
    identity=Identity(user_id="not-a-uuid"), consent=ConsentSignals(override=True)
)

Send = Callable[[str, str, Any], Awaitable[None]]
"""Sends (method, url, body) through one client hook; a body of None means none, an async
iterator a streamed one."""


def config(fake: FakePermutive) -> Config:
    return Config(
        api_key=API_KEY,
        ccs_url=fake.url,
        ctx_url=fake.url,
        adapters={"openrtb": {"activation_platforms": ["dfp"]}},
    )


async def chunks() -> AsyncIterator[bytes]:
    yield b'{"id":"a","imp":[{"id":"1"}]'
    yield b"}"


CASES = [
    pytest.param(
        "GET",
        f"/api/v1/items?a=1&{SECRETS}&b=2",
        None,
        None,
        "/api/v1/items?a=1&b=2",
        id="unrecognised",
    ),
    pytest.param(
        "GET",
        f"{GAM}&cohortkv_consent=denied&cohortkv_uid={USER}",
        None,
        None,
        GAM,
        id="denied",
    ),
    pytest.param("GET", f"{GAM}&{SECRETS}", None, BAD_IDENTITY, GAM, id="broken"),
    pytest.param(
        "POST", f"/openrtb2/auction?{SECRETS}", chunks, None, "/openrtb2/auction", id="streamed"
    ),
    pytest.param("DELETE", f"{GAM}&{SECRETS}", None, None, GAM, id="other_method"),
]


async def aiohttp_hook(enricher: Enricher) -> AsyncIterator[Send]:
    async with aiohttp.ClientSession(middlewares=(cohortkv_middleware(enricher),)) as session:

        async def send(method: str, url: str, body: Any) -> None:
            data = body() if body is not None else None
            target = yarl.URL(url, encoded=True)
            async with session.request(method, target, data=data) as resp:
                await resp.read()

        yield send


async def httpx_hook(enricher: Enricher) -> AsyncIterator[Send]:
    async with httpx.AsyncClient(transport=CohortkvTransport(enricher)) as client:

        async def send(method: str, url: str, body: Any) -> None:
            content = body() if body is not None else None
            await client.request(method, url, content=content)

        yield send


@pytest.mark.parametrize("hook", [aiohttp_hook, httpx_hook], ids=["aiohttp", "httpx"])
@pytest.mark.parametrize(("method", "path", "body", "context", "arrived"), CASES)
async def test_reserved_parameters_never_reach_the_ad_server(
    fake: FakePermutive,
    ads: FakeAdServer,
    hook: Callable[[Enricher], AsyncIterator[Send]],
    method: str,
    path: str,
    body: Any,
    context: Context | None,
    arrived: str,
) -> None:
    async with Enricher(config(fake)) as enricher:
        sends = hook(enricher)
        send = await anext(sends)
        with ad_context(context):
            await send(method, ads.url + path, body)
        await sends.aclose()
    got = ads.last
    assert (got.method, got.target) == (method, arrived)
    assert reserved_fields(got.query) == [] and USER not in got.target
    if body is not None:  # the streamed body went out untouched
        assert json.loads(got.body) == {"id": "a", "imp": [{"id": "1"}]}
