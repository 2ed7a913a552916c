"""aiohttp client middleware: cohorts on every ad request a `ClientSession` sends.

    session = ClientSession(middlewares=(cohortkv_middleware(enricher),))
    with ad_context(Context(identity=..., consent=..., content=...)):
        async with session.get(vast_tag_url) as resp: ...

A request whose URL no adapter recognises goes out as it came, minus the reserved `cohortkv_*`
parameters (`plugin.reserved`), which never leave on any path. Per-request context
travels in a `contextvars` variable (`plugin.outgoing`), shared with the httpx transport.
"""

from __future__ import annotations

from aiohttp import ClientHandlerType, ClientRequest, ClientResponse
from aiohttp.client_middlewares import ClientMiddlewareType
from aiohttp.payload import BytesPayload
from yarl import URL

from plugin.enricher import Enricher
from plugin.outgoing import Outgoing, ad_context, without_reserved
from plugin.request import AdRequest

__all__ = ["ad_context", "cohortkv_middleware"]


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

    It fails open: if enrichment itself breaks, the request goes out as it came (a failure of
    ours counted in `cohortkv_internal_errors_total{where="middleware"}`). A POST is
    read only when its body is already in memory (bytes, text, `json=`); a streamed body is
    never consumed, and goes out as it came. Reserved `cohortkv_*` parameters are removed from
    the URL whatever happens.
    """
    outgoing = Outgoing(enricher, "middleware", platform)

    async def middleware(req: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        url = str(req.url)
        bare = without_reserved(url)
        if bare != url:  # on every path: reserved parameters never reach the ad server
            req.url = URL(bare, encoded=True)
        if req.method not in methods:
            return await handler(req)
        body = b""
        if req.method != "GET":
            payload = req.body
            if isinstance(payload, BytesPayload):
                body = await payload.as_bytes()
            elif payload:
                return await handler(req)
        ad = AdRequest(url=url, method=req.method, headers=tuple(req.headers.items()), body=body)
        out = await outgoing.enriched(ad)
        sent = req.url  # already without reserved parameters
        try:
            if out.url != str(sent):
                req.url = URL(out.url, encoded=True)
            if out.body is not ad.body:
                await req.update_body(out.body)
        except Exception as e:  # ours: the request goes out as it came, minus reserved names
            outgoing.bug(e)
            req.url = sent
        return await handler(req)

    return middleware
