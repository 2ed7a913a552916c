"""httpx transport: cohorts on every ad request an `httpx.AsyncClient` sends (`cohortkv[httpx]`).

    client = httpx.AsyncClient(transport=CohortkvTransport(enricher))
    with ad_context(Context(identity=..., consent=..., content=...)):
        resp = await client.get(vast_tag_url)

The same rules as the aiohttp middleware (`plugin.middleware`): a request no platform
recognises goes out as it came, minus the reserved `cohortkv_*` parameters, which never leave
on any path; a POST body is read only when it is already in memory
(`content=`, `json=`), a streamed one is never consumed; if enrichment breaks, the request
goes out as it came (counted: `cohortkv_bad_input_total{source="httpx"}` for the host's mistake,
`cohortkv_internal_errors_total{where="httpx"}` for ours).
"""

from __future__ import annotations

try:
    import httpx
except ModuleNotFoundError as e:  # a person's situation: one line saying what to install
    raise ModuleNotFoundError(
        "plugin.httpx needs httpx: pip install 'cohortkv[httpx]'", name=e.name
    ) from None

from plugin.enricher import Enricher
from plugin.outgoing import Outgoing, ad_context, without_reserved
from plugin.request import AdRequest

__all__ = ["CohortkvTransport", "ad_context"]

_LENGTH_HEADERS = frozenset({"content-length", "transfer-encoding"})


class CohortkvTransport(httpx.AsyncBaseTransport):
    """Enriches ad requests, then hands every request to `wrapped` (by default a new
    `httpx.AsyncHTTPTransport()`; pass your own for its pool, retries, proxies or HTTP/2).

    `platform` names the adapter that reads every request sent through this transport (a
    client used only for one ad server, e.g. `"query"` for a generic VAST tag); None: the
    platform that recognises each request, and any other request passes untouched."""

    def __init__(
        self,
        enricher: Enricher,
        platform: str | None = None,
        wrapped: httpx.AsyncBaseTransport | None = None,
        *,
        methods: frozenset[str] = frozenset({"GET", "POST"}),
    ) -> None:
        self._outgoing = Outgoing(enricher, "httpx", platform)
        self._wrapped = wrapped if wrapped is not None else httpx.AsyncHTTPTransport()
        self._methods = methods

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        ad = _as_ad_request(request, self._methods)
        if ad is not None:
            out = await self._outgoing.enriched(ad)
            if out is not ad:
                try:
                    request = _rewritten(request, ad, out)
                except Exception as e:  # ours: the request goes out as it came
                    self._outgoing.bug(e)
                    _strip_reserved(request)
        else:  # not read, but reserved parameters never reach the ad server on any path
            _strip_reserved(request)
        return await self._wrapped.handle_async_request(request)

    async def aclose(self) -> None:
        await self._wrapped.aclose()


def _as_ad_request(request: httpx.Request, methods: frozenset[str]) -> AdRequest | None:
    """The request as an adapter reads it; None when it is not ours to read (another method,
    or a body that is still a stream)."""
    if request.method not in methods:
        return None
    body = b""
    if request.method != "GET":
        try:
            body = request.content
        except httpx.RequestNotRead:
            return None
    return AdRequest(
        url=str(request.url),
        method=request.method,
        headers=tuple(request.headers.multi_items()),
        body=body,
    )


def _strip_reserved(request: httpx.Request) -> None:
    url = str(request.url)
    bare = without_reserved(url)
    if bare != url:
        request.url = httpx.URL(bare)


def _rewritten(request: httpx.Request, ad: AdRequest, out: AdRequest) -> httpx.Request:
    url = request.url if out.url == ad.url else httpx.URL(out.url)
    if out.body is ad.body:
        request.url = url
        return request
    headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() not in _LENGTH_HEADERS]
    return httpx.Request(
        request.method, url, headers=headers, content=out.body, extensions=request.extensions
    )
