"""Size limits with JSON refusals, the in-flight enrichment gate, and the request id.

aiohttp's HTTP parser refuses oversized request lines and header fields itself, with a plain
400 and before any handler runs. Its limits are set to a multiple of ours so that a request
over OUR limit still reaches this middleware and gets a JSON 414/413 naming the limit; only a
request several times over it meets the parser's bare 400.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from plugin.config import ServeConfig
from plugin.observe.logs import request_id_var
from plugin.serve.errors import json_error
from plugin.serve.metrics import ServeMetrics

REQUEST_ID = web.RequestKey("cohortkv_request_id", str)
REQUEST_ID_HEADER = "X-Request-Id"
_GOOD_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
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
    """Parser limits and the idle keep-alive timeout for aiohttp's request handler (given to
    `web.Application(handler_args=)`)."""
    return {
        "max_line_size": max(8190, cfg.max_url_length * PARSER_SLACK),
        "max_field_size": max(8190, cfg.max_header_bytes * PARSER_SLACK),
        "keepalive_timeout": cfg.keepalive_timeout_s,
    }


def request_ids() -> Callable[[], str]:
    """Unique ids without a syscall per request: a random per-process prefix and a counter."""
    prefix = os.urandom(6).hex()
    counter = itertools.count(1)
    return lambda: f"{prefix}-{next(counter):x}"


def guard(cfg: ServeConfig, metrics: ServeMetrics) -> Any:
    """The one middleware: request id, then URL, header and body sizes, then JSON errors."""
    max_url = cfg.max_url_length
    max_headers = cfg.max_header_bytes
    max_body = cfg.max_body_bytes
    too_long = metrics.rejected.labels("url")
    too_many_headers = metrics.rejected.labels("headers")
    too_big = metrics.rejected.labels("body")
    new_id = request_ids()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        rid = request.headers.get(REQUEST_ID_HEADER)
        if rid is None or _GOOD_ID.fullmatch(rid) is None:
            rid = new_id()
        request[REQUEST_ID] = rid
        request_id_var.set(rid)  # every log line of this request (and its tasks) carries it
        if len(request.raw_path) > max_url:
            too_long.inc()
            return json_error(414, "URL too long", limit_bytes=max_url, field="url")
        size = 0
        for name, value in request.raw_headers:
            size += len(name) + len(value) + 4
        if size > max_headers:
            too_many_headers.inc()
            return json_error(413, "request headers too large", limit_bytes=max_headers)
        length = request.content_length
        if length is not None and length > max_body:
            too_big.inc()
            return json_error(413, "request body too large", limit_bytes=max_body)
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            too_big.inc()
            return json_error(413, "request body too large", limit_bytes=max_body)
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
