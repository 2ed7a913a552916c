"""Size limits with JSON refusals, the in-flight enrichment gate, and the request id.

aiohttp's HTTP parser refuses oversized request lines and header fields itself, with a plain
400 and before any handler runs. Its limits are set to a multiple of ours so that a request
over OUR limit still reaches this middleware and gets a JSON 414/413 naming the limit; only a
request several times over it meets the parser's bare 400. `Expect: 100-continue` is answered
by the same checks first (`Limits.expect`, on every route), so that a body over the limit is
refused before the client is told to send it; after such a refusal the connection closes.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11
from aiohttp.typedefs import Handler, Middleware

from plugin.config import ServeConfig
from plugin.observe.logs import request_id_var
from plugin.serve.errors import answer_and_close, json_error
from plugin.serve.intake import BodyRefused
from plugin.serve.metrics import ServeMetrics

REQUEST_ID = web.RequestKey("cohortkv_request_id", str)
REQUEST_ID_HEADER = "X-Request-Id"
_GOOD_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
ExpectHandler = Callable[[web.Request], Awaitable[web.StreamResponse | None]]
"""What answers `Expect: 100-continue` on a route (`Limits.expect`)."""
PARSER_SLACK = 4
"""aiohttp's own parser limits are this many times ours."""


class Gate:
    """How many enrichments run at once; beyond `limit` callers skip enrichment, not queue."""

    __slots__ = ("inflight", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.inflight = 0

    def enter(self) -> bool:
        if self.inflight >= self.limit:
            return False
        self.inflight += 1
        return True

    def leave(self) -> None:
        self.inflight -= 1


def handler_args(cfg: ServeConfig) -> dict[str, Any]:
    """Parser limits, the idle keep-alive timeout and body handling for aiohttp's request
    handler (given to `web.Application(handler_args=)`). Request bodies reach the handlers as
    sent (`plugin.serve.intake` decodes them, bounded); a body a route does not read is
    discarded for at most `body_timeout_s`, then the connection is closed."""
    return {
        "max_line_size": max(8190, cfg.max_url_length * PARSER_SLACK),
        "max_field_size": max(8190, cfg.max_header_bytes * PARSER_SLACK),
        "keepalive_timeout": cfg.keepalive_timeout_s,
        "lingering_time": cfg.body_timeout_s,
        "auto_decompress": False,
    }


def request_ids() -> Callable[[], str]:
    """Unique ids without a syscall per request: a random per-process prefix and a counter."""
    prefix = os.urandom(6).hex()
    counter = itertools.count(1)
    return lambda: f"{prefix}-{next(counter):x}"


class Limits:
    """URL, header and body sizes checked before a handler runs, answered in JSON: by the
    middleware, and by the `Expect: 100-continue` handler, so that a body over the limit is
    refused before the client is told to send it."""

    def __init__(self, cfg: ServeConfig, metrics: ServeMetrics) -> None:
        self.max_url = cfg.max_url_length
        self.max_headers = cfg.max_header_bytes
        self.max_body = cfg.max_body_bytes
        self._too_long = metrics.rejected.labels("url")
        self._too_many_headers = metrics.rejected.labels("headers")
        self._too_big = metrics.rejected.labels("body")
        self._new_id = request_ids()

    def identify(self, request: web.Request) -> None:
        """The request's id: the caller's when it is a sane one, else a new one."""
        if REQUEST_ID in request:
            return
        rid = request.headers.get(REQUEST_ID_HEADER)
        if rid is None or _GOOD_ID.fullmatch(rid) is None:
            rid = self._new_id()
        request[REQUEST_ID] = rid
        request_id_var.set(rid)  # every log line of this request (and its tasks) carries it

    def refusal(self, request: web.Request) -> web.Response | None:
        if len(request.raw_path) > self.max_url:
            self._too_long.inc()
            return json_error(414, "URL too long", limit_bytes=self.max_url, field="url")
        size = 0
        for name, value in request.raw_headers:
            size += len(name) + len(value) + 4
        if size > self.max_headers:
            self._too_many_headers.inc()
            return json_error(413, "request headers too large", limit_bytes=self.max_headers)
        length = request.content_length
        if length is not None and length > self.max_body:
            return self.body_too_large()
        return None

    def body_too_large(self) -> web.Response:
        self._too_big.inc()
        return json_error(413, "request body too large", limit_bytes=self.max_body)

    async def expect(self, request: web.Request) -> web.StreamResponse | None:
        """`Expect: 100-continue`: the limits' refusal instead of `100 Continue` when there is
        one (and the connection closes, the body unsent); 417 for any other expectation."""
        self.identify(request)
        if request.headers.get(hdrs.EXPECT, "").lower() != "100-continue":
            refused: web.Response | None = json_error(
                417, "expectation failed", field="Expect", expected="100-continue"
            )
        else:
            refused = self.refusal(request)
        if refused is not None:
            return await answer_and_close(request, refused)
        if request.version == HttpVersion11:
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return None


def guard(limits: Limits) -> Middleware:
    """The one middleware: request id, then URL, header and body sizes, then JSON errors."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        limits.identify(request)
        refused = limits.refusal(request)
        if refused is not None:  # the rest of the request is not read: the connection closes
            return await answer_and_close(request, refused)
        try:
            return await handler(request)
        except BodyRefused as e:
            if e.response.keep_alive is False:
                return await answer_and_close(request, e.response)
            return e.response
        except web.HTTPRequestEntityTooLarge:
            return await answer_and_close(request, limits.body_too_large())
        except web.HTTPException as e:
            if e.status < 400:
                raise
            return json_error(e.status, e.reason.lower(), headers=_allow(e))

    return middleware


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: every response carries the request's id."""
    rid = request.get(REQUEST_ID)
    if rid is not None:
        response.headers[REQUEST_ID_HEADER] = rid


def _allow(e: web.HTTPException) -> dict[str, str] | None:
    allow = e.headers.get("Allow")
    return {"Allow": allow} if allow else None
