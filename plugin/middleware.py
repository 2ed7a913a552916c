"""aiohttp client middleware: cohorts on every ad request a `ClientSession` sends.

    session = ClientSession(middlewares=(cohortkv_middleware(enricher),))
    with ad_context(Context(identity=..., consent=..., content=...)):
        async with session.get(vast_tag_url) as resp: ...

A request whose URL no adapter recognises goes out exactly as it came. Per-request context
travels in a `contextvars` variable, so it follows the task that makes the request (and the
tasks it spawns) without touching the call sites in between.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import ClientHandlerType, ClientRequest, ClientResponse
from aiohttp.client_middlewares import ClientMiddlewareType
from aiohttp.payload import BytesPayload
from yarl import URL

from adapters.registry import adapter_by_name, find_adapter
from plugin.context import Context
from plugin.enricher import Enricher
from plugin.observe.metrics import RateLimitedLog
from plugin.request import AdRequest

log = logging.getLogger("cohortkv.middleware")

_current: contextvars.ContextVar[Context | None] = contextvars.ContextVar(
    "cohortkv_ad_context", default=None
)


@contextmanager
def ad_context(context: Context | None) -> Iterator[None]:
    """Identity, consent and content for the ad requests made inside the block."""
    token = _current.set(context)
    try:
        yield
    finally:
        _current.reset(token)


def current_ad_context() -> Context | None:
    return _current.get()


def cohortkv_middleware(
    enricher: Enricher,
    *,
    methods: frozenset[str] = frozenset({"GET", "POST"}),
    platform: str | None = None,
) -> ClientMiddlewareType:
    """A client middleware that enriches ad requests and passes everything else through.

    `platform` names the adapter for a session whose ad server is not told apart by looking
    at its requests (`query`, or `openrtb` for a bid request on a path of its own): every
    request of `methods` the session sends is read as that platform's (one it does not
    recognise goes out as it came, counted). None: the adapter that recognises each request.
    An unknown name is a `CohortkvError` here, not on the first request.

    It fails open: if enrichment itself breaks, the request goes out as it came. A POST is
    read only when its body is already in memory (bytes, text, `json=`); a streamed body is
    never consumed, and goes out as it came.
    """
    warn = RateLimitedLog(log)
    named = None if platform in (None, "auto") else adapter_by_name(enricher.adapters, platform)

    async def middleware(req: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        if req.method not in methods:
            return await handler(req)
        body = b""
        if req.method != "GET":
            payload = req.body
            if isinstance(payload, BytesPayload):
                body = await payload.as_bytes()
            elif payload:
                return await handler(req)
        ad = AdRequest(
            url=str(req.url), method=req.method, headers=tuple(req.headers.items()), body=body
        )
        adapter = named or find_adapter(enricher.adapters, ad)
        if adapter is None:
            return await handler(req)
        try:
            result = await enricher.enrich(
                ad, _current.get(), platform=adapter.name, origin="middleware"
            )
        except Exception as e:  # the host's request matters more than our key-values
            enricher.metrics.bad_input.labels("middleware", type(e).__name__).inc()
            warn.warning("middleware", "enrichment skipped: %s", type(e).__name__)
            return await handler(req)
        out = result.request
        if out is not None:
            if out.url != ad.url:
                req.url = URL(out.url, encoded=True)
            if out.body is not ad.body:
                await req.update_body(out.body)
        return await handler(req)

    return middleware
