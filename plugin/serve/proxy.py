"""The enriching proxy: `GET|POST /proxy/{upstream}/{path}?{query}` → the configured ad server.

Only configured upstreams are reachable, by name: the target is always `base + path + query`
built from the raw request target, never a host or an absolute URL from the request, and paths
with dot segments (raw or percent-encoded) are refused. Redirects are passed back, not followed.
Other methods answer 405 with `Allow: GET, POST`.

Each upstream has a platform (`[serve.upstreams.NAME] platform`): its adapter reads and writes
the requests. A request the platform does not recognise goes out unchanged, counted in
`cohortkv_not_recognised_total` and logged (rate-limited) with the upstream and the reason.

The path and query go out byte for byte as the adapter returned them (`//` and a bare `?`
included; through `plugin.httpclient`, the proxy's own lean HTTP/1.1 client), minus the reserved
`cohortkv_*` parameters (however spelled). A POST body (read by
`plugin.serve.intake`: bounded by `serve.max_body_bytes` as sent and as decoded, within
`serve.body_timeout_s`) is decoded for the adapter when it is compressed; what goes out matches
its Content-Encoding: the bytes as sent when the adapter wrote nothing, else the adapter's body
encoded again with the same codings, Content-Length recomputed. A body whose coding cannot be
undone goes out as sent, labelled as sent, unenriched. Identity, consent and
content come from the ad request itself, with `X-Cohortkv-*` headers (or the reserved
parameters) on top; consent from either can deny, and grant only where the ad request carries
no signal of its own. When too many enrichments are in flight the request is forwarded
unenriched at once (counted), never queued. The ad server's status, headers (hop-by-hop
removed) and body come back unchanged: the body is not decompressed, the client's
Accept-Encoding goes through. A small body (a Content-Length up to 64 KiB: a VAST document) is
read whole and written back with the headers in one write; any other body is streamed. W3C
trace context (`traceparent`, `tracestate`, `baggage`) is passed on to the ad server.
"""

from __future__ import annotations

import logging
import re
import ssl
import time
from collections.abc import Iterable, Mapping
from urllib.parse import unquote, urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler
from multidict import CIMultiDict

from plugin import reserved as rp
from plugin.config import ConfigError, ServeConfig
from plugin.enricher import Enricher
from plugin.httpclient import Answer, HttpClient, HttpError, Origin
from plugin.observe.metrics import RateLimitedLog
from plugin.overrides import Mistake, from_reserved
from plugin.request import AdRequest
from plugin.serve import outgoing
from plugin.serve.errors import json_error
from plugin.serve.health import ErrorWindow
from plugin.serve.intake import BodyReader
from plugin.serve.limits import ExpectHandler, Gate
from plugin.serve.metrics import ServeMetrics

log = logging.getLogger("cohortkv.serve.proxy")

CHUNK = 64 * 1024
UPSTREAM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")

METHODS = ("GET", "POST")
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)


def _unsafe(target: str) -> bool:
    """True when `target` has anything outside visible ASCII (`!` to `~`), or a `#`: neither has
    a place in a raw request target. (The regex `[^!-~]|#`, as string scans: they are faster.)"""
    return not (target.isascii() and target.isprintable() and " " not in target) or "#" in target


class Upstream:
    """One configured ad server: where it is, which adapter reads its URLs, how it is doing."""

    __slots__ = (
        "base",
        "name",
        "origin",
        "outcomes",
        "platform",
        "prefix",
        "seconds",
        "window",
    )

    def __init__(
        self,
        name: str,
        base: str,
        platform: str | None,
        metrics: ServeMetrics,
        window_s: float,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.name = name
        self.base = base
        self.origin = Origin(base, tls)
        self.prefix = f"/proxy/{name}/"
        self.platform = platform
        self.window = ErrorWindow(window_s)
        c = metrics.proxy_requests
        self.outcomes = {
            o: c.tally(name, o) for o in ("1xx", "2xx", "3xx", "4xx", "5xx", "timeout", "error")
        }
        self.seconds = metrics.proxy_seconds.tally(name)
        """Observes the ad server's time to its answer's head."""

    def record(self, outcome: str, failed: bool) -> None:
        self.outcomes[outcome]()
        self.window.record(failed)


def parse_upstreams(
    cfg: ServeConfig, adapter_names: Iterable[str], metrics: ServeMetrics
) -> dict[str, Upstream]:
    """`serve.upstreams` checked: a person's mistake there is a ConfigError naming the entry."""
    names = tuple(adapter_names)
    tls = client_tls(cfg)
    out: dict[str, Upstream] = {}
    for name, entry in cfg.upstreams.items():
        where = f"serve.upstreams.{name}"
        if UPSTREAM_NAME.fullmatch(name) is None:
            raise ConfigError(f"{where}: expected a name of letters, digits, '_' or '-'")
        if isinstance(entry, str):
            url, platform = entry, (name if name in names else None)
        else:
            url, platform = entry.url, entry.platform
            where += ".url"
            if platform is not None and platform not in names:
                raise ConfigError(
                    f"serve.upstreams.{name}.platform: expected one of {', '.join(names)}, "
                    f"got {platform!r}"
                )
        try:
            parts = urlsplit(url)
            ok = parts.scheme in ("http", "https") and bool(parts.hostname)
            ok = ok and not (parts.query or parts.fragment or parts.username or parts.password)
            _ = parts.port
        except ValueError:
            ok = False
        if not ok or _unsafe(url):
            raise ConfigError(
                f"{where}: expected an http(s) URL with a host and no query, credentials or"
                " fragment (the value is not shown: it may hold a secret)"
            )
        out[name] = Upstream(name, url.rstrip("/"), platform, metrics, cfg.health_window_s, tls)
    return out


def client_tls(cfg: ServeConfig) -> ssl.SSLContext | None:
    """TLS with our client certificate, for ad servers that authenticate their callers."""
    if cfg.ad_tls_cert_file is None:
        if cfg.ad_tls_key_file is not None:
            raise ConfigError("serve.ad_tls_key_file: given without serve.ad_tls_cert_file")
        return None
    context = ssl.create_default_context()
    try:
        context.load_cert_chain(cfg.ad_tls_cert_file, cfg.ad_tls_key_file)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(
            f"serve.ad_tls_cert_file: expected a readable PEM certificate (and key), got "
            f"{cfg.ad_tls_cert_file!r}: {getattr(e, 'strerror', None) or e}"
        ) from None
    return context


def safe_path(path: str) -> bool:
    """False for a path with a `.`/`..` segment, raw or percent-encoded, or a backslash."""
    if "." not in path and "%" not in path and "\\" not in path:
        return True
    decoded = unquote(path, errors="replace")
    if "\\" in decoded:
        return False
    return all(seg not in (".", "..") for seg in decoded.split("/"))


def response_headers(headers: CIMultiDict[str]) -> list[tuple[str, str]]:
    """The ad server's headers minus hop-by-hop ones (and any its `Connection` names), as
    pairs: the response makes its own multidict of them."""
    named = headers.get("Connection")
    drop = HOP_BY_HOP | {t.strip().lower() for t in named.split(",")} if named else HOP_BY_HOP
    return [(k, v) for k, v in headers.items() if k.lower() not in drop]


class Proxy:
    def __init__(
        self,
        enricher: Enricher,
        cfg: ServeConfig,
        upstreams: Mapping[str, Upstream],
        gate: Gate,
        metrics: ServeMetrics,
        bodies: BodyReader,
    ) -> None:
        self._enricher = enricher
        self._bodies = bodies
        self._upstreams = upstreams
        self._gate = gate
        self._timeout_s = cfg.ad_timeout_ms / 1000
        self._timeout_ms = cfg.ad_timeout_ms
        self._shed = metrics.shed.labels("inflight")
        self._errors = metrics.internal_errors.labels("proxy")
        self._bad = enricher.metrics.bad_input
        self._warn = RateLimitedLog(log)
        self._out = outgoing.Outgoing(self._bad_input, self._warn)
        self.client = HttpClient(cfg.ad_pool_limit)

    async def start(self) -> None:
        """Nothing to open: connections are made on the first requests."""

    async def close(self) -> None:
        await self.client.close()

    def routes(self, app: web.Application, expect: ExpectHandler) -> None:
        add = app.router.add_route
        for up in self._upstreams.values():
            add("*", f"/proxy/{up.name}/{{tail:.*}}", self._handler(up), expect_handler=expect)
        add("*", "/proxy/{upstream}/{tail:.*}", self.unknown, expect_handler=expect)
        add("*", "/proxy/{upstream}", self.unknown, expect_handler=expect)

    def _handler(self, up: Upstream) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            if request.method not in METHODS:
                return json_error(
                    405,
                    "method not allowed",
                    method=request.method,
                    allowed=list(METHODS),
                    headers={"Allow": ", ".join(METHODS)},
                )
            return await self.forward(request, up)

        return handle

    async def unknown(self, request: web.Request) -> web.Response:
        return json_error(
            404,
            "unknown upstream",
            upstream=request.match_info.get("upstream", ""),
            expected=sorted(self._upstreams),
        )

    async def forward(self, request: web.Request, up: Upstream) -> web.StreamResponse:
        raw = request.raw_path
        if not raw.startswith(up.prefix) or _unsafe(raw):
            return self._refuse_target(up)
        tail = raw[len(up.prefix) - 1 :]
        path, sep, query = tail.partition("?")
        if not safe_path(path):
            return self._refuse_target(up)
        found: dict[str, str] = {}
        if query:  # a bare `?` (empty query) goes on as it came
            query, found = rp.split_reserved(query)
            if not query:
                sep = ""
        url = up.base + path + sep + query
        body = await self._bodies.read(request) if request.method == "POST" else None
        ad = outgoing.ad_request(request, url, body)
        if self._gate.enter():
            try:
                out = await self._enrich(request, up, ad, found)
            finally:
                self._gate.leave()
        else:
            self._shed.inc()
            out = ad
        return await self._relay(request, up, out, self._out.body(request, ad, out, body))

    async def _enrich(
        self, request: web.Request, up: Upstream, ad: AdRequest, found: dict[str, str]
    ) -> AdRequest:
        try:
            # The caller's identity was checked where its Context was built (`from_reserved`).
            context = from_reserved(request.headers, found, self.mistake)
            reading = self._enricher.read(ad, context, up.platform)
            result = await self._enricher.enrich_reading(reading, origin=up.name)
        except Exception as e:
            self._errors.inc()
            self._warn.warning(
                "proxy:enrich", "enrichment failed (%s): forwarded as is", type(e).__name__
            )
            log.debug("enrichment failed", exc_info=True)
            return ad
        out = result.request
        if out is None or out is ad:
            return ad
        if out.url is ad.url or out.url.startswith(up.base + "/"):
            return out
        self._errors.inc()
        self._warn.warning("proxy:host", "adapter changed the ad server; forwarding as is")
        return ad

    def mistake(self, m: Mistake) -> None:
        """A caller override that cannot be used: counted, and left out."""
        self._bad_input(m.kind)

    def _refuse_target(self, up: Upstream) -> web.Response:
        """A 400 for a target the proxy will not forward, counted and logged without it."""
        self._bad_input("target")
        self._warn.warning(f"proxy:{up.name}:target", "refused a request target for %s", up.name)
        return _bad_target(up)

    def _bad_input(self, kind: str) -> None:
        self._bad.labels("proxy", kind).inc()

    async def _relay(
        self,
        request: web.Request,
        up: Upstream,
        ad: AdRequest,
        body: outgoing.OutBody | None,
    ) -> web.StreamResponse:
        started = time.perf_counter()
        target = ad.url[up.origin.target_at :]
        if not target.startswith("/") or _unsafe(target):
            self._errors.inc()  # the adapters write only encoded values: a bug of ours
            self._warn.warning(f"proxy:{up.name}:written", "an adapter wrote an unsafe target")
            return json_error(502, "ad request could not be written", upstream=up.name)
        headers = self._out.headers(request)
        if body is not None:
            headers.extend(body[1])  # Content-Type and -Encoding; the client sets the length
        try:
            answer = await self.client.request(
                up.origin, ad.method, target, headers, body[0] if body else None, self._timeout_s
            )
        except TimeoutError:
            up.record("timeout", True)
            return json_error(
                504, "ad server timed out", upstream=up.name, timeout_ms=self._timeout_ms
            )
        except HttpError as e:
            up.record("error", True)
            self._warn.warning(f"proxy:{up.name}", "ad server %s failed: %s", up.name, e.kind)
            return json_error(502, "ad server unreachable", upstream=up.name)
        up.seconds(time.perf_counter() - started)
        try:
            return await self._answer(request, up, answer)
        finally:
            answer.close()

    async def _answer(
        self, request: web.Request, up: Upstream, answer: Answer
    ) -> web.StreamResponse:
        """The ad server's answer, passed back: a small body (a VAST document) read whole and
        sent with its headers in one write, instead of headers, body and end apart; any other
        body streamed."""
        status = answer.status
        headers_out = response_headers(answer.headers)
        length = answer.content_length
        got: list[bytes] = []
        resp: web.StreamResponse | None = None
        try:
            if length is not None and length <= CHUNK and status not in _NO_BODY:
                body = answer.whole()
                if body is None:
                    async for chunk in answer.chunks():
                        got.append(chunk)
                    body = b"".join(got)
                up.record(_STATUS_CLASS[min(status // 100, 5)], status >= 500)
                return web.Response(
                    body=body,
                    status=status,
                    reason=answer.reason,
                    headers=headers_out,
                )
            resp = web.StreamResponse(status=status, reason=answer.reason, headers=headers_out)
            await resp.prepare(request)
            async for chunk in answer.chunks():
                await resp.write(chunk)
            await resp.write_eof()
        except (HttpError, TimeoutError, ConnectionError) as e:
            if resp is None:  # a small body broke off: what came goes back, then close
                resp = web.StreamResponse(status=status, reason=answer.reason, headers=headers_out)
            return await self._broken(request, up, resp, got, e)
        up.record(_STATUS_CLASS[min(status // 100, 5)], status >= 500)
        return resp

    async def _broken(
        self,
        request: web.Request,
        up: Upstream,
        resp: web.StreamResponse,
        got: list[bytes],
        e: BaseException,
    ) -> web.StreamResponse:
        """The body broke off: the status goes out (with what came of a small body, if it had
        not gone out yet), then the connection closes, so that the client cannot take the
        truncated body for a whole one."""
        transport = request.transport
        if transport is None or transport.is_closing():
            return resp  # the client went away
        if not resp.prepared:
            try:
                await resp.prepare(request)
                for chunk in got:
                    await resp.write(chunk)
            except ConnectionError:
                return resp
        up.record("timeout" if isinstance(e, TimeoutError) else "error", True)
        self._warn.warning(f"proxy:{up.name}:body", "ad server %s broke off its body", up.name)
        transport.close()
        return resp


_STATUS_CLASS = ("1xx", "1xx", "2xx", "3xx", "4xx", "5xx")
_NO_BODY = frozenset({204, 304})


def _bad_target(up: Upstream) -> web.Response:
    return json_error(
        400,
        "invalid request target",
        field="path",
        expected=f"/proxy/{up.name}/<path>?<query>: origin form, visible ASCII, no dot segments",
    )
