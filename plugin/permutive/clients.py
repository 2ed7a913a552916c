"""HTTP clients of the CCS API and the Contextual API, sharing one session: the lean client
of `plugin.httpclient` (the default: a call costs a seventh of aiohttp's CPU), or an
`aiohttp.ClientSession` when tracing is on (its standard instrumentation adds the HTTP spans).

A call either returns a decoded answer or raises `UpstreamError` with a small, bounded `kind`
(it becomes a metric label). Messages never contain the request URL: the Contextual API takes
its key in the query string, and a URL in a log line would leak it. Redirects are never
followed (a 3xx is the `redirect` error): following one would send the key to another host.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable
from typing import Literal, TypeVar

import aiohttp
import msgspec
import yarl
from multidict import CIMultiDict

from plugin.config import HttpConfig
from plugin.httpclient import Answer as HttpAnswer
from plugin.httpclient import HttpClient, HttpError, Origin
from plugin.observe.metrics import Metrics, RateLimitedLog
from plugin.observe.tracing import Tracer
from plugin.permutive.answer import Answer
from plugin.permutive.breaker import Breaker
from plugin.permutive.wire import (
    CCS_PATH,
    CONTEXTUAL_PATH,
    CcsRequest,
    ContextualRequest,
    ccs_response_decoder,
    ctx_response_decoder,
    json_encoder,
    parse_error,
)
from plugin.version import __version__

log = logging.getLogger("cohortkv.sources")
T = TypeVar("T")

Api = Literal["ccs", "contextual"]
ErrorKind = Literal[
    "timeout",
    "connect",
    "http_4xx",
    "http_429",
    "http_5xx",
    "auth",
    "decode",
    "other",
    "breaker_open",
    "shed",
    "too_large",
    "redirect",
]
# Failures that say the upstream is unwell (not that our request was wrong): they trip the breaker.
_TRIPS = frozenset(
    {"timeout", "connect", "http_429", "http_5xx", "decode", "other", "too_large", "redirect"}
)

_LEAN_HEADERS = (
    ("User-Agent", f"cohortkv/{__version__}"),
    ("Accept", "application/json"),
    ("Content-Type", "application/json"),
)
"""What the lean client sends on every call (no Accept-Encoding: answers come as they are)."""


class UpstreamError(Exception):
    def __init__(
        self,
        api: Api,
        kind: ErrorKind,
        detail: str = "",
        retry_after_s: float | None = None,
        *,
        code: int | None = None,
        message: str | None = None,
        status: int | None = None,
        unsent: bool = False,
    ) -> None:
        super().__init__(f"{api}: {kind}{': ' + detail if detail else ''}")
        self.api = api
        self.kind = kind
        self.detail = detail
        self.retry_after_s = retry_after_s
        self.status = status
        """The HTTP status of the API's answer, when it answered."""
        self.unsent = unsent
        """The request provably never reached the API whole: the connection could not be
        opened, or it failed while the request was being written (`plugin.permutive.delivery`)."""
        self.code = code
        """Permutive's numeric error code from the error body, when it gave one."""
        self.message = message
        """The error body's message: for a person reading `cohortkv verify`, never logged (it
        is the upstream's text)."""


def make_session(
    pool_limit: int,
    pool_limit_per_host: int,
    keepalive_timeout_s: float,
    trace_configs: list[aiohttp.TraceConfig] | None = None,
) -> aiohttp.ClientSession:
    """The one session an enricher uses for both APIs: keep-alive pool, no cookies, raw JSON."""
    connector = aiohttp.TCPConnector(
        limit=pool_limit,
        limit_per_host=pool_limit_per_host,
        keepalive_timeout=keepalive_timeout_s,
        ttl_dns_cache=300,
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=True,
        raise_for_status=False,
        trace_configs=trace_configs or None,
    )


Session = aiohttp.ClientSession | HttpClient
"""What the clients call through: the lean client, or aiohttp's (with tracing)."""


def lean_session(http: HttpConfig) -> HttpClient:
    """The lean client for both APIs, with the `[http]` pool settings."""
    return HttpClient(http.pool_limit, http.pool_limit_per_host, http.keepalive_timeout_s)


class _Client:
    api: Api

    def __init__(
        self,
        session: Session,
        url: str,
        metrics: Metrics,
        http: HttpConfig,
        query: dict[str, str] | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self._session = session
        self.last_error: UpstreamError | None = None
        """This client's latest failure: what a command tells a person about (`cohortkv
        enrich` exits 4 with it)."""
        # The whole target, query included, built once: a `params=` dict is merged into a
        # new URL on every call, a measurable share of the call's CPU.
        self._url = yarl.URL(url).with_query(query) if query else yarl.URL(url)
        self._origin = Origin(f"{self._url.scheme}://{self._url.raw_authority}", None)
        self._target = self._url.raw_path_qs
        self._lean_headers = [*_LEAN_HEADERS, *headers]
        # As aiohttp keeps headers, built once: a plain dict is converted on every call.
        self._headers = CIMultiDict([("Content-Type", "application/json"), *headers])
        self._timeout_s = http.request_timeout_s
        self._metrics = metrics
        self._timeout = aiohttp.ClientTimeout(total=http.request_timeout_s)
        self._warn = RateLimitedLog(log)
        self._observe = {
            outcome: metrics.upstream_seconds.labels(self.api, outcome)
            for outcome in ("ok", "error", "timeout")
        }
        self.breaker = Breaker(
            http.breaker_failures,
            http.breaker_open_s,
            http.breaker_max_open_s,
            gauge=metrics.breaker_state.labels(self.api),
        )
        self._max_inflight = http.max_inflight_per_api
        self._max_bytes = http.max_response_bytes
        self.inflight = 0
        metrics.inflight.labels(self.api).set_function(lambda: self.inflight)  # read when scraped
        self.tracer: Tracer | None = None
        """An OpenTelemetry tracer when tracing is on (`plugin.observe.tracing`); None is free."""

    async def _send(self, body: bytes) -> bytes:
        if self.tracer is None:
            return await self._post(body)
        return await self._traced(self.tracer, body)

    async def _traced(self, tracer: Tracer, body: bytes) -> bytes:
        """`_post` inside a `permutive.<api>` span: the failure kind, never the payload."""
        from opentelemetry.trace import SpanKind, StatusCode

        with tracer.start_as_current_span(f"permutive.{self.api}", kind=SpanKind.CLIENT) as span:
            try:
                return await self._post(body)
            except UpstreamError as e:
                span.set_attribute("cohortkv.error", e.kind)
                span.set_status(StatusCode.ERROR, e.kind)
                raise

    async def _post(self, body: bytes) -> bytes:
        """One call through the breaker and the in-flight bound; failures are counted once."""
        if self.inflight >= self._max_inflight:
            raise self._fail(UpstreamError(self.api, "shed"))
        if not self.breaker.allow():
            wait = self.breaker.remaining_s()
            raise self._fail(UpstreamError(self.api, "breaker_open", retry_after_s=wait))
        self.inflight += 1
        try:
            payload = await self._call(body)
        except UpstreamError as e:
            if e.kind in _TRIPS:
                self.breaker.failure(e.retry_after_s)
            else:
                self.breaker.success()  # it answered; our request was the problem
            raise
        finally:
            self.inflight -= 1
        self.breaker.success()
        return payload

    def _decoded(self, payload: bytes, decode: Callable[[bytes], T]) -> T:
        try:
            return decode(payload)
        except msgspec.DecodeError as e:
            self.breaker.failure()
            raise self._fail(UpstreamError(self.api, "decode", type(e).__name__)) from None

    async def _call(self, body: bytes) -> bytes:
        """One call through whichever client this is on; a failure is an `UpstreamError`,
        counted once, and every call's time is observed by outcome."""
        started = time.perf_counter()
        outcome = "error"
        try:
            if isinstance(self._session, HttpClient):
                payload = await self._via_lean(self._session, body)
            else:
                payload = await self._via_aiohttp(self._session, body)
            outcome = "ok"
            return payload
        except UpstreamError as e:
            self._fail(e)
            raise
        except TimeoutError:
            outcome = "timeout"
            raise self._fail(UpstreamError(self.api, "timeout")) from None
        finally:
            self._observe[outcome].observe(time.perf_counter() - started)

    async def _via_lean(self, client: HttpClient, body: bytes) -> bytes:
        """The call through the lean client: the same outcomes and errors as through aiohttp."""
        try:
            answer = await client.request(
                self._origin, "POST", self._target, self._lean_headers, body, self._timeout_s
            )
        except HttpError as e:
            kind: ErrorKind = "connect" if e.unsent or e.kind.startswith("closed") else "other"
            raise UpstreamError(self.api, kind, e.kind, unsent=e.unsent) from None
        try:
            status = answer.status
            if 300 <= status < 400:  # never followed: it would re-send the API key elsewhere
                raise UpstreamError(self.api, "redirect", f"HTTP {status}")
            payload = await self._read_lean(answer)
        except HttpError as e:
            raise UpstreamError(self.api, "other", e.kind) from None
        finally:
            answer.close()
        if status >= 400:
            raise self._http_error(status, payload, answer.headers.get("Retry-After"))
        return payload

    async def _read_lean(self, answer: HttpAnswer) -> bytes:
        """The body (decoded if the API compressed it unasked), unless it is larger than any
        real answer: then the call has failed."""
        limit = self._max_bytes
        length = answer.content_length
        if length is not None and length > limit:
            raise UpstreamError(self.api, "too_large", f"{length} bytes")
        payload = answer.whole()
        if payload is None:
            chunks: list[bytes] = []
            size = 0
            async for chunk in answer.chunks():
                size += len(chunk)
                if size > limit:
                    raise UpstreamError(self.api, "too_large", f"over {limit} bytes")
                chunks.append(chunk)
            payload = b"".join(chunks)
        elif len(payload) > limit:
            raise UpstreamError(self.api, "too_large", f"over {limit} bytes")
        coding = answer.headers.get("Content-Encoding", "").strip().lower()
        if coding in ("", "identity"):
            return payload
        return self._inflate(payload, coding, limit)

    def _inflate(self, payload: bytes, coding: str, limit: int) -> bytes:
        if coding not in ("gzip", "x-gzip", "deflate"):
            raise UpstreamError(self.api, "decode", f"Content-Encoding {coding[:20]}")
        # gzip; deflate as zlib data, else raw (both are sent as "deflate", as aiohttp reads)
        tries = (16 + zlib.MAX_WBITS,) if coding != "deflate" else (zlib.MAX_WBITS, -zlib.MAX_WBITS)
        for wbits in tries:
            inflater = zlib.decompressobj(wbits)
            try:
                out = inflater.decompress(payload, limit + 1)
            except zlib.error:
                continue
            if len(out) > limit or inflater.unconsumed_tail:
                raise UpstreamError(self.api, "too_large", f"over {limit} bytes")
            if not inflater.eof:  # cut short: what came is not the whole answer
                break
            return out
        raise UpstreamError(self.api, "decode", "Content-Encoding")

    async def _via_aiohttp(self, session: aiohttp.ClientSession, body: bytes) -> bytes:
        try:
            # Never follow a redirect: it would re-send the API key to wherever it points.
            async with session.post(
                self._url,
                data=body,
                headers=self._headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                if 300 <= resp.status < 400:
                    raise UpstreamError(self.api, "redirect", f"HTTP {resp.status}")
                payload = await self._read_bounded(resp)
                if resp.status >= 400:
                    raise self._http_error(resp.status, payload, resp.headers.get("Retry-After"))
            return payload
        except aiohttp.ClientConnectionError as e:
            raise UpstreamError(self.api, "connect", type(e).__name__, unsent=_unsent(e)) from None
        except aiohttp.ClientError as e:
            raise UpstreamError(self.api, "other", type(e).__name__) from None

    async def _read_bounded(self, resp: aiohttp.ClientResponse) -> bytes:
        """The body, unless it is larger than any real answer: then the call has failed."""
        limit = self._max_bytes
        length = resp.content_length
        if length is not None and length > limit:
            raise UpstreamError(self.api, "too_large", f"{length} bytes")
        if length is not None and "Content-Encoding" not in resp.headers:
            return await resp.read()  # exactly `length` bytes: one await, no chunk loop
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_any():
            size += len(chunk)
            if size > limit:
                raise UpstreamError(self.api, "too_large", f"over {limit} bytes")
            chunks.append(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _http_error(self, status: int, payload: bytes, retry_after: str | None) -> UpstreamError:
        detail = parse_error(payload)
        code = f"code {detail.code}" if detail is not None and detail.code is not None else ""
        kind: ErrorKind
        if status in (401, 403):
            kind = "auth"
        elif status == 429:
            kind = "http_429"
        else:
            kind = "http_4xx" if status < 500 else "http_5xx"
        return UpstreamError(
            self.api,
            kind,
            f"HTTP {status} {code}".strip(),
            _retry_after_s(retry_after),
            code=detail.code if detail is not None else None,
            message=detail.message if detail is not None else None,
            status=status,
        )

    def _fail(self, e: UpstreamError) -> UpstreamError:
        self.last_error = e
        self._metrics.upstream_errors.labels(self.api, e.kind).inc()
        self._warn.warning(f"{self.api}:{e.kind}", "%s", e)
        return e


_WRITE_FAILED = "Can not write request body"
"""How aiohttp words a connection that failed while the request was being written (a
`ClientOSError` without an errno): the API cannot have read a whole request."""


def _unsent(e: aiohttp.ClientConnectionError) -> bool:
    """Whether this connection failure happened before the request was sent whole: the
    connection could not be opened (refused, DNS, TLS handshake), or writing it failed. A
    connection lost while waiting for the answer is not: the API may have processed it."""
    if isinstance(e, aiohttp.ClientConnectorError):
        return True
    return (
        isinstance(e, aiohttp.ClientOSError)
        and e.errno is None
        and str(e).startswith(_WRITE_FAILED)
    )


def _retry_after_s(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds form; dates are ignored)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class CcsClient(_Client):
    """`POST {ccs_url}/ccs/v1/segmentation?activations=true`, key in `X-Api-Key`."""

    api: Api = "ccs"

    def __init__(
        self,
        session: Session,
        base_url: str,
        api_key: str,
        metrics: Metrics,
        http: HttpConfig,
        *,
        synchronous_validation: bool = False,
    ) -> None:
        query = {"activations": "true"}
        if synchronous_validation:
            query["synchronous-validation"] = "true"
        url = base_url.rstrip("/") + CCS_PATH
        super().__init__(session, url, metrics, http, query, (("X-Api-Key", api_key),))

    async def segment(self, request: CcsRequest) -> Answer:
        payload = await self._send(json_encoder.encode(request))
        r = self._decoded(payload, ccs_response_decoder.decode)
        return Answer.from_wire(r.cohorts, r.activations, r.user_id)


class ContextualClient(_Client):
    """`POST {ctx_url}/ctx/v1/segment?k=KEY`: content only, no user data."""

    api: Api = "contextual"

    def __init__(
        self,
        session: Session,
        base_url: str,
        api_key: str,
        metrics: Metrics,
        http: HttpConfig,
    ) -> None:
        url = base_url.rstrip("/") + CONTEXTUAL_PATH
        super().__init__(session, url, metrics, http, {"k": api_key})

    async def segment(self, request: ContextualRequest) -> Answer:
        payload = await self._send(json_encoder.encode(request))
        r = self._decoded(payload, ctx_response_decoder.decode)
        return Answer.from_wire(r.cohorts, r.activations)
